"""Tokenize + decompose: the Beam stage end to end against the raw tokenizer.

On the linux-doc 6.1 + 6.12 corpus (10,040 documents, about 60 MB of text;
``--copies 4`` repeats it under fresh ids) stored as Parquet, this measures

* ``stage``: a Beam pipeline on the FnApiRunner (in-process) that reads the
  Parquet corpus into ``(shard, pyarrow.Table)`` elements (about
  ``--row-groups-per-shard`` row groups of 1,000 documents each) and runs
  :class:`corpusmill.transforms.decompose.beam.DecomposeDocuments` to written bucket
  files: tokenizer load in ``setup()``, batched multi-threaded encoding,
  decomposition, sorting, zstd Parquet encoding, SHA-256 and the write. Its
  time runs from pipeline construction to ``wait_until_finish()``;
* ``raw``: the same tokenizer's ``encode_batch`` over the same texts in
  batches of the same size on the same threads, texts already in memory and
  the tokenizer already loaded: the ceiling the stage is held against.

Both report tokens/s over the same count (the texts' tokens, end-of-text ids
not included). Every run is a fresh subprocess, and the two contenders are
interleaved per repeat so that noise from other work on the (shared, 2-core)
machine hits both alike; reported numbers are medians over ``--repeats``.
Peak RSS is the run's ``getrusage(RUSAGE_SELF).ru_maxrss``, read by the
subprocess itself at exit (the FnApiRunner runs in-process, so this is the
whole stage), and is compared across corpus sizes at a constant shard size.

Target (issue 4): stage >= 60% of raw tokenizer throughput; peak RSS set by
batch and shard size, not corpus size.

Usage:
    python benchmarks/decompose_bench.py [--repeats 3] [--copies 1 4]
        [--out benchmarks/results/decompose_bench.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "benchmarks" / ".data"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "decompose_bench.json"
TARGET_RATIO = 0.60
TOKENIZER = "tiktoken:cl100k_base"
BATCH_DOCS = 256


# ---------------------------------------------------------------------------
# Child runs (one per subprocess).


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _read_shard(element: tuple[int, str, int, int]):
    """(shard, path, first row group, end row group) -> (shard, documents)."""
    import pyarrow.parquet as pq

    shard, path, first, end = element
    table = pq.ParquetFile(path).read_row_groups(list(range(first, end)), columns=["id", "text"])
    return shard, table


def shard_plan(path: Path, row_groups_per_shard: int) -> list[tuple[int, str, int, int]]:
    """Contiguous row-group ranges, one per shard."""
    import pyarrow.parquet as pq

    groups = pq.ParquetFile(path).metadata.num_row_groups
    shards = max(1, round(groups / row_groups_per_shard))
    return [(s, str(path), s * groups // shards, (s + 1) * groups // shards) for s in range(shards)]


def child_stage(corpus: Path, row_groups_per_shard: int, threads: int) -> dict[str, Any]:
    """Runs the stage pipeline once; returns its timings and totals."""
    imported = time.perf_counter()
    import apache_beam as beam

    from apache_beam.metrics.metric import MetricsFilter

    from corpusmill.schemas.config import DecomposeConfig
    from corpusmill.transforms.common import METRICS_NAMESPACE
    from corpusmill.transforms.decompose.beam import DecomposeDocuments
    from corpusmill.transforms.io.shard_files import ParquetOptions
    from corpusmill.transforms.stage import StageContext

    config = DecomposeConfig(tokenizer=TOKENIZER, num_threads=threads, tokenize_batch_docs=BATCH_DOCS)
    plan = shard_plan(corpus, row_groups_per_shard)
    with tempfile.TemporaryDirectory(prefix="decompose-bench-") as staging:
        results = Path(staging) / "results.json"
        started = time.perf_counter()
        pipeline = beam.Pipeline(runner="FnApiRunner")
        decomposed = (
            pipeline
            | "CreateShards" >> beam.Create(plan)
            | "ReadShards" >> beam.Map(_read_shard)
            | "Decompose" >> DecomposeDocuments(config, StageContext(len(plan), len(plan) == 1, staging,
                                                                    ParquetOptions()))
        )
        _ = (
            (decomposed.shards, decomposed.stats)
            | "AllResults" >> beam.Flatten()
            | "CollectResults" >> beam.combiners.ToList()
            | "WriteResults" >> beam.Map(lambda rows, path=results: path.write_text(json.dumps(rows)))
        )
        result = pipeline.run()
        result.wait_until_finish()
        seconds = time.perf_counter() - started
        rows = json.loads(results.read_text())
        files = [r for r in rows if r.get("kind") == "shard"]
        (merged,) = [r for r in rows if r.get("kind") != "shard"]
        on_disk = sum(1 for _ in Path(staging).rglob("*.parquet"))
    query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]
    step_ms = {}
    for counter in query:
        name = counter.key.metric.name
        if name.startswith("time_decompose_"):
            step = name[len("time_decompose_"):-len("_ms")]
            step_ms[step] = step_ms.get(step, 0) + int(counter.committed or counter.attempted or 0)
    return {
        "seconds": seconds,
        "startup_seconds": started - imported,
        "documents": merged["documents"],
        # The texts' own tokens: the count the raw tokenizer produces.
        "tokens": merged["input_tokens"] - merged["documents"],
        "input_tokens": merged["input_tokens"],
        "kept_tokens": merged["kept_tokens"],
        "token_retention": merged["token_retention"],
        "shards": len(plan),
        "files": len(files),
        "files_on_disk": on_disk,
        "bucket_bytes": sum(r["bytes"] for r in files),
        "step_ms": dict(sorted(step_ms.items())),
        "peak_rss_mb": _peak_rss_mb(),
    }


def child_raw(corpus: Path, threads: int) -> dict[str, Any]:
    """Encodes the corpus texts with the bare tokenizer; returns its timing."""
    import pyarrow.parquet as pq

    from corpusmill.transforms.decompose.tokenizer import load_tokenizer

    texts = pq.read_table(corpus, columns=["text"]).column("text").to_pylist()
    tokenizer = load_tokenizer(TOKENIZER, num_threads=threads)
    tokenizer.encode_batch(texts[:8])  # first-call costs out of the timing
    started = time.perf_counter()
    tokens = 0
    for start in range(0, len(texts), BATCH_DOCS):
        tokens += sum(len(ids) for ids in tokenizer.encode_batch(texts[start : start + BATCH_DOCS]))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "documents": len(texts), "tokens": tokens, "peak_rss_mb": _peak_rss_mb()}


# ---------------------------------------------------------------------------
# Orchestration.


def run_child(args: list[str]) -> dict[str, Any]:
    """Runs this script as a child with ``args``; returns its JSON report plus wall time."""
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, __file__, "--child-report", report.name, *args],
            check=True,
            cwd=REPO_ROOT,
        )
        wall = time.perf_counter() - started
        result = json.loads(Path(report.name).read_text())
    result["process_wall_seconds"] = wall
    return result


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def summarise(copies: int, stage: list[dict], raw: list[dict]) -> dict[str, Any]:
    tokens = stage[0]["tokens"]
    if any(r["tokens"] != tokens for r in stage + raw):
        raise RuntimeError(f"token counts differ between runs: {[r['tokens'] for r in stage + raw]}")
    stage_seconds = median([r["seconds"] for r in stage])
    raw_seconds = median([r["seconds"] for r in raw])
    steps = {step: median([r["step_ms"].get(step, 0.0) for r in stage]) / 1000 for step in stage[0]["step_ms"]}
    return {
        "copies": copies,
        "documents": stage[0]["documents"],
        "tokens": tokens,
        "shards": stage[0]["shards"],
        "bucket_files": stage[0]["files"],
        "bucket_mb": stage[0]["bucket_bytes"] / 1e6,
        "token_retention": stage[0]["token_retention"],
        "stage_seconds": stage_seconds,
        "stage_seconds_runs": [r["seconds"] for r in stage],
        "stage_process_wall_seconds": median([r["process_wall_seconds"] for r in stage]),
        "stage_step_seconds": steps,
        "stage_tokens_per_second": tokens / stage_seconds,
        "raw_seconds": raw_seconds,
        "raw_seconds_runs": [r["seconds"] for r in raw],
        "raw_tokens_per_second": tokens / raw_seconds,
        "ratio": raw_seconds / stage_seconds,
        # Each repeat's stage and raw runs were back to back; their ratio cancels
        # slow phases of the shared machine better than a ratio of medians.
        "paired_ratio": median([r["seconds"] / s["seconds"] for s, r in zip(stage, raw)]),
        "stage_peak_rss_mb": median([r["peak_rss_mb"] for r in stage]),
        "stage_peak_rss_mb_runs": [r["peak_rss_mb"] for r in stage],
        "raw_peak_rss_mb": median([r["peak_rss_mb"] for r in raw]),
    }


def machine_info() -> dict[str, Any]:
    import apache_beam
    import pyarrow
    import tiktoken

    return {
        "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "apache_beam": apache_beam.__version__,
        "pyarrow": pyarrow.__version__,
        "tiktoken": tiktoken.__version__,
    }


def markdown_report(report: dict[str, Any]) -> str:
    lines = [
        "# Decompose stage benchmark",
        "",
        f"`python benchmarks/decompose_bench.py --repeats {report['repeats']}` on {report['machine']['date']} "
        f"({report['machine']['cpus']} CPUs, shared with other work; Python {report['machine']['python']}, "
        f"Beam {report['machine']['apache_beam']}, pyarrow {report['machine']['pyarrow']}, "
        f"tiktoken {report['machine']['tiktoken']}). Tokenizer {TOKENIZER}, {report['threads']} threads, "
        f"{BATCH_DOCS} documents per encode call; defaults 2^8..2^13, mode random, plus_one.",
        "",
        "| corpus | docs | tokens | shards | stage s | stage Mtok/s | raw s | raw Mtok/s | stage / raw "
        "| paired stage / raw | stage peak RSS MB | raw peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["results"]:
        lines.append(
            f"| linux-doc x{row['copies']} | {row['documents']:,} | {row['tokens']:,} | {row['shards']} "
            f"| {row['stage_seconds']:.2f} | {row['stage_tokens_per_second'] / 1e6:.2f} "
            f"| {row['raw_seconds']:.2f} | {row['raw_tokens_per_second'] / 1e6:.2f} "
            f"| {row['ratio']:.0%} | {row['paired_ratio']:.0%} | {row['stage_peak_rss_mb']:.0f} | {row['raw_peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        "Medians of the runs; every run a fresh process, stage and raw interleaved. *stage s* runs from "
        "pipeline construction to `wait_until_finish()` (runner start, Parquet read, tokenizer load in "
        "`setup()`, encode, decompose, sort, zstd Parquet, SHA-256, write); *raw s* is `encode_batch` alone "
        "over texts already in memory. Both count the texts' tokens (no end-of-text ids). Peak RSS is each "
        "process's `ru_maxrss`. *stage / raw* divides the median times; *paired* is the median over repeats "
        "of raw ÷ stage for the two back-to-back runs of one repeat. Target: stage / raw >= "
        f"{TARGET_RATIO:.0%}.",
        "",
        "Time inside the stage's DoFn (medians, seconds, summed over shards):",
        "",
        "| corpus | tokenize | split | write | process wall (incl. interpreter start) | runs stage s | runs raw s |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for row in report["results"]:
        steps = row["stage_step_seconds"]
        lines.append(
            f"| linux-doc x{row['copies']} | {steps.get('tokenize', 0):.2f} | {steps.get('split', 0):.2f} "
            f"| {steps.get('write', 0):.2f} | {row['stage_process_wall_seconds']:.2f} "
            f"| {', '.join(f'{s:.2f}' for s in row['stage_seconds_runs'])} "
            f"| {', '.join(f'{s:.2f}' for s in row['raw_seconds_runs'])} |"
        )
    if report.get("rss_sweep"):
        lines += [
            "",
            "Peak RSS against shard size (stage only, one run each): documents per shard, not corpus size, "
            "set the memory.",
            "",
            "| corpus | row groups (1,000 docs) per shard | shards | stage s | peak RSS MB |",
            "|---|---:|---:|---:|---:|",
        ]
        for row in report["rss_sweep"]:
            lines.append(
                f"| linux-doc x{row['copies']} | {row['row_groups_per_shard']} | {row['shards']} "
                f"| {row['seconds']:.2f} | {row['peak_rss_mb']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--row-groups-per-shard", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--rss-sweep", type=int, nargs="*", default=[1, 12],
        help="extra stage runs on the largest corpus at these row groups per shard (none to skip)",
    )
    # Internal: run one measurement in this process.
    parser.add_argument("--child-report", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=("stage", "raw"), help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        if args.child == "stage":
            result = child_stage(args.corpus, args.row_groups_per_shard, args.threads)
        else:
            result = child_raw(args.corpus, args.threads)
        args.child_report.write_text(json.dumps(result))
        return 0

    from corpusmill.jobs.linux_doc import ensure_corpus

    corpora = {c: ensure_corpus(DATA_DIR, copies=c, formats=("parquet",))["parquet"] for c in args.copies}
    common = ["--threads", str(args.threads), "--row-groups-per-shard", str(args.row_groups_per_shard)]
    runs: dict[int, dict[str, list[dict]]] = {c: {"stage": [], "raw": []} for c in args.copies}
    for repeat in range(args.repeats):
        for copies, corpus in corpora.items():
            # Alternate which contender goes first, so neither always gets the warmer page cache.
            order = ("stage", "raw") if repeat % 2 == 0 else ("raw", "stage")
            for kind in order:
                result = run_child(["--child", kind, "--corpus", str(corpus), *common])
                runs[copies][kind].append(result)
                print(
                    f"repeat {repeat + 1} x{copies} {kind}: {result['seconds']:.2f} s, "
                    f"{result['tokens'] / result['seconds'] / 1e6:.2f} Mtok/s, "
                    f"peak RSS {result['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
    sweep = []
    largest = max(corpora)
    for groups in args.rss_sweep:
        result = run_child(
            ["--child", "stage", "--corpus", str(corpora[largest]), "--threads", str(args.threads),
             "--row-groups-per-shard", str(groups)]
        )
        sweep.append({"copies": largest, "row_groups_per_shard": groups, **result})
        print(f"sweep x{largest} {groups} row groups/shard: {result['seconds']:.2f} s, "
              f"peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)
    sweep.append({"copies": largest, "row_groups_per_shard": args.row_groups_per_shard,
                  **runs[largest]["stage"][0]})
    sweep.sort(key=lambda row: row["row_groups_per_shard"])
    report = {
        "machine": machine_info(),
        "repeats": args.repeats,
        "threads": args.threads,
        "tokenizer": TOKENIZER,
        "batch_docs": BATCH_DOCS,
        "target_ratio": TARGET_RATIO,
        "results": [summarise(c, runs[c]["stage"], runs[c]["raw"]) for c in args.copies],
        "runs": {str(c): runs[c] for c in args.copies},
        "rss_sweep": sweep if args.rss_sweep else [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    markdown = markdown_report(report)
    args.out.with_suffix(".md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
