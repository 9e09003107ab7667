"""The whole order stage on Beam against the same kernels in one plain Python process.

Issue 11's target: the order stage (embed, kNN graph, traversal, placement,
contexts) within 2x of the same kernels called in one plain Python process on
the 4x corpus. Corpus: linux-doc 6.1 + 6.12 after dedup (``order_bench_corpora``
builds it into ``--data``), repeated ``--copies`` times, each copy but the
first lightly perturbed by word-level edits (so copies are not exact
duplicates), under fresh ids, stored as one Parquet file.

* ``stage``: ``corpusmill order`` as a library call (``run_job`` with only the
  order stage on, ``output.num_shards`` shards, the FnApiRunner in-process):
  reading the Parquet input, every order step, writing docs/, embeddings/,
  neighbors/ and contexts/, the manifest. Timed from the call to its return.
* ``kernels``: the same texts already in memory; document frequencies and IDF,
  the projection fit where the embedder has one, the embedding, the exact kNN
  graph (``knn_graph.exact_knn`` over rows sorted by key, as the stage's exact
  plan), the ``improved`` traversal, tokenization and ``pack_shard`` of the
  ordered stream. Nothing is written.
* ``base``: the same job as ``stage`` with the order stage off (read, validate,
  write docs/, publish): ``stage - base`` is what the order steps cost inside
  the job, reading and writing the documents aside.

Each run is a fresh subprocess (numba caches warm, as on any second run), the
two contenders interleaved per repeat; medians over ``--repeats``.

Usage:
    python benchmarks/order_stage_bench.py [--copies 4] [--repeats 3] [--shards 4]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
EDIT_RATE = 0.03


def perturbed(text: str, rng: np.random.Generator, rate: float = EDIT_RATE) -> str:
    """The text with about ``rate`` of its words replaced by other words of the same text."""
    words = text.split(" ")
    if len(words) < 2:
        return text + " (copy)"
    picks = np.flatnonzero(rng.random(len(words)) < rate)
    for i in picks:
        words[i] = words[rng.integers(len(words))]
    return " ".join(words)


def build_corpus(data: Path, copies: int) -> Path:
    """The ``copies``-fold corpus as Parquet (id, text); built once per copy count."""
    target = data / f"order-stage-x{copies}.parquet"
    if target.exists():
        return target
    sys.path.insert(0, str(HERE))
    from order_bench_corpora import ensure_snapshots, read_kept

    snapshot = ensure_snapshots(data)["linux-doc"]
    ids, texts = read_kept(snapshot)
    rng = np.random.default_rng(11)
    rows_id, rows_text = [], []
    for copy in range(copies):
        for doc_id, text in zip(ids, texts):
            rows_id.append(doc_id if copy == 0 else f"copy{copy}/{doc_id}")
            rows_text.append(text if copy == 0 else perturbed(text, rng))
    pq.write_table(pa.table({"id": rows_id, "text": rows_text}), target, compression="zstd")
    return target


def run_stage(corpus: Path, out: Path, shards: int, order: bool = True) -> dict:
    from corpusmill.pipelines.corpus_job import run_job
    from corpusmill.schemas.config import load_job

    config = load_job({"input": {"paths": [str(corpus)]}, "output": {"path": str(out), "num_shards": shards,
                                                                    "overwrite": True},
                       "dedup": {"enabled": False}, "decompose": {"enabled": False}, "order": {"enabled": order}})
    started = time.perf_counter()
    manifest = run_job(config)
    seconds = time.perf_counter() - started
    if not order:
        return {"seconds": seconds, "documents": manifest["counts"]["kept"]}
    order = manifest["order"]
    return {"seconds": seconds, "documents": order["quality"]["documents"], "knn_mode": order["knn"]["mode"],
            "of_top1": order["quality"]["adjacent_cosine"]["of_top1"]}


def run_kernels(corpus: Path) -> dict:
    from corpusmill.schemas.config import load_job
    from corpusmill.transforms.common import document_keys
    from corpusmill.transforms.decompose.tokenizer import load_tokenizer
    from corpusmill.transforms.order import knn_graph, traversal
    from corpusmill.transforms.order.lexical_fit import fit_lexical_embedder
    from corpusmill.transforms.order.contexts import pack_shard

    table = pq.read_table(corpus)
    config = load_job({"order": {"enabled": True}}).order  # the job's order section: contexts take its tokenizer
    started = time.perf_counter()
    ids, texts = table.column("id").to_pylist(), table.column("text").to_pylist()
    keys = document_keys(ids)
    by_key = np.argsort(keys, kind="stable")
    embedder = fit_lexical_embedder(texts, keys, projection_sample=config.embed.projection_sample)
    vectors = embedder.embed([texts[i] for i in by_key])
    neighbors, scores = knn_graph.exact_knn(vectors, config.knn.k)
    order = traversal.traverse(neighbors, scores, vectors, mode=config.traversal).order
    tokenizer = load_tokenizer(config.contexts.tokenizer, num_threads=os.cpu_count() or 1)
    ordered = [texts[by_key[i]] for i in order]
    tokens = []
    for start in range(0, len(ordered), 256):
        tokens.extend(tokenizer.encode_batch(ordered[start:start + 256]))
    contexts, _ = pack_shard(tokens, [ids[by_key[i]] for i in order], 0, config.contexts.length,
                             tokenizer.eot_id, stream_total=sum(t.size + 1 for t in tokens))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "documents": len(ids), "contexts": contexts.num_rows}


def _cpu_seconds() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _child(args) -> None:
    corpus = Path(args.corpus)
    started = _cpu_seconds()
    if args.contender == "kernels":
        result = run_kernels(corpus)
    else:
        result = run_stage(corpus, Path(args.out), args.shards, order=args.contender == "stage")
    # CPU seconds of the whole child (its worker processes included once they were waited
    # for), from the start of the contender: less sensitive than wall time to other work on
    # a shared machine, though it counts every thread of both.
    result["cpu_seconds"] = _cpu_seconds() - started
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="/work/bench-data", help="folder for corpora and snapshots")
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--out", default=str(RESULTS / "order_stage_bench.json"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    data = Path(args.data)
    corpus = build_corpus(data, args.copies)
    runs: dict[str, list[dict]] = {"stage": [], "kernels": [], "base": []}
    for _ in range(args.repeats):
        for contender in ("kernels", "stage", "base"):
            done = subprocess.run(
                [sys.executable, __file__, "--child", "--contender", contender, "--corpus", str(corpus),
                 "--shards", str(args.shards), "--out", str(data / "order-stage-snapshot")],
                capture_output=True, text=True, check=True)
            runs[contender].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(contender, runs[contender][-1], flush=True)
    medians = {name: statistics.median(r["seconds"] for r in results) for name, results in runs.items()}
    cpu_medians = {name: statistics.median(r["cpu_seconds"] for r in results) for name, results in runs.items()}
    result = {
        "benchmark": "order_stage_bench", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)", "corpus": str(corpus),
        "copies": args.copies, "shards": args.shards, "repeats": args.repeats, "runs": runs,
        "median_seconds": medians, "stage_over_kernels": medians["stage"] / medians["kernels"],
        "median_cpu_seconds": cpu_medians, "stage_over_kernels_cpu": cpu_medians["stage"] / cpu_medians["kernels"],
        "load_average_at_end": list(os.getloadavg()),
        "order_steps_over_kernels": (medians["stage"] - medians["base"]) / medians["kernels"],
        "target": "stage <= 2x kernels",
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("median_seconds", "stage_over_kernels", "order_steps_over_kernels",
                                             "median_cpu_seconds", "stage_over_kernels_cpu")}, indent=2))


if __name__ == "__main__":
    main()
