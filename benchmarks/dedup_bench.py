"""Dedup benchmark: the MinHash kernel, the Beam job, datasketch and rensa, scored against an exact join.

One command, one run, one corpus (linux-doc 6.1 + 6.12, and optionally the same
corpus repeated under fresh ids), one set of parameters (word 5-gram shingles,
128 permutations, seed 1, Jaccard threshold 0.8). Every contender sees the same
texts after the job's default ``NormalizeConfig`` (NFKC, lowercase, whitespace
collapse), so they all shingle the same words.

Contenders (each run is a fresh subprocess, runs interleaved per repeat):

* ``kernel``: ``corpusmill.transforms.dedup.minhash.signatures`` on the whole corpus,
  text in, signatures out, shingling included; all threads and one thread;
* ``beam-exact`` / ``beam-none`` (/ ``beam-signature``): ``corpusmill run`` on
  the Parquet corpus with dedup on and ``dedup.verify`` set, read to manifest;
* ``datasketch``: Python shingling, ``MinHash.update_batch`` per document
  (scheme "legacy", permutations drawn once and reused), ``MinHashLSH`` insert
  + query, union-find over the candidates;
* ``rensa``: the same Python shingling into ``RMinHash.update`` per document
  (and, timed separately, rensa's bulk ``digest_matrix_from_token_sets``),
  ``RMinHashLSH`` insert + query, union-find.

The reference contenders read the Parquet file and normalise in-process too, and
time each phase, so their subprocess wall time is a whole single-process path
comparable with the Beam job's, and their signature phase is comparable with the
kernel's.

Ground truth, computed without MinHash: the shingle-hash sets of the normalised
texts (``minhash.shingle_sets``, exactly what the job's exact verification uses)
are joined at Jaccard >= threshold by prefix filtering (tokens ordered rarest
first, prefix length ``|x| - ceil(t|x|) + 1``, length filter, then exact
Jaccard of every candidate), which misses no pair. The join is checked against
brute force (every sampled document against every document, no filter) on a
random sample, and the 32-bit shingle hashes against the shingle strings on the
sample's near-threshold pairs.

Usage:
    python benchmarks/dedup_bench.py [--repeats 3] [--copies 1,4]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# The parts live in sibling modules, imported through this script's directory on sys.path:
# dedup_bench_params (paths, parameters, targets), dedup_bench_contenders (what runs, measured in a
# subprocess), dedup_bench_workers (the worker subprocess bodies), dedup_bench_truth (the exact join),
# dedup_bench_scoring (quality), dedup_bench_summary (medians, machine, targets), dedup_bench_report
# (markdown).
from dedup_bench_contenders import CONTENDERS, Contender, run_contender
from dedup_bench_params import (DATA_DIR, DEFAULT_OUT, NGRAM, NUM_PERM, RENSA_BANDS, REPO_ROOT, SCHEME, SEED,
                                THRESHOLD, WORKER_COMMAND)
from dedup_bench_report import NOTES, markdown_report
from dedup_bench_scoring import score
from dedup_bench_summary import code_state, evaluate_targets, machine_info, summarise
from dedup_bench_truth import ground_truth, truth_components, truth_summary
from dedup_bench_workers import run_worker


def corpus_facts(corpus: Path) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Ids, normalised texts and the size facts of a corpus file."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from corpusmill.schemas.config import NormalizeConfig
    from corpusmill.transforms.dedup.normalize import normalize_texts

    table = pq.read_table(corpus, columns=["id", "text"])
    ids = np.asarray(table.column("id").to_pylist(), dtype=object)
    normalized = normalize_texts(table.column("text").to_pylist(), NormalizeConfig())
    shingles = sum(max(1, len(t.split()) - NGRAM + 1) for t in normalized if t)
    return ids, normalized, {
        "path": str(corpus.relative_to(REPO_ROOT)), "documents": int(ids.size),
        "text_bytes": int(pc.sum(pc.binary_length(table.column("text"))).as_py()),
        "file_bytes": corpus.stat().st_size, "shingles": int(shingles),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per contender (default 3)")
    parser.add_argument("--copies", default="1,4", help="corpus sizes, comma separated (default 1,4)")
    parser.add_argument("--contenders", nargs="+", choices=[c.name for c in CONTENDERS],
                        default=[c.name for c in CONTENDERS])
    parser.add_argument("--sample", type=int, default=300, help="documents in the brute-force check")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report; the .md goes beside it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark and writes the JSON and markdown reports."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [WORKER_COMMAND]:
        print(json.dumps(run_worker(argv[1], Path(argv[2]), Path(argv[3]))))
        return 0
    args = _parser().parse_args(argv)
    copies_list = [int(c) for c in args.copies.split(",")]
    bench_started = time.perf_counter()
    from corpusmill.jobs.linux_doc import ensure_corpus

    machine = machine_info()
    contenders = [c for c in CONTENDERS if c.name in args.contenders]
    corpora, facts = {}, {}
    for copies in copies_list:
        corpora[copies] = ensure_corpus(DATA_DIR, copies=copies, formats=("parquet",))["parquet"].resolve()
        facts[copies] = corpus_facts(corpora[copies])
        print(f"corpus {copies}x: {facts[copies][2]}", file=sys.stderr)

    runs, labels, failures = run_all(contenders, copies_list, corpora, facts, args.repeats)
    by_copies = {str(copies): copies_section(copies, runs[copies], labels[copies], facts[copies], args.sample)
                 for copies in copies_list}
    report = {
        "benchmark": "dedup_bench",
        "command": "python benchmarks/dedup_bench.py" + (" " + " ".join(argv) if argv else ""),
        "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "repeats": args.repeats,
        "machine": machine,
        "parameters": {"ngram": NGRAM, "num_perm": NUM_PERM, "seed": SEED, "scheme": SCHEME,
                       "threshold": THRESHOLD, "rensa_bands": RENSA_BANDS},
        "contenders": [dataclasses.asdict(c) for c in contenders],
        "beam_commands": {c.name: "corpusmill " + " ".join(c.command(Path("CORPUS.parquet"), Path("TMP"))[3:])
                          for c in contenders if c.kind == "beam"},
        "by_copies": by_copies,
        "raw": {str(c): runs[c] for c in copies_list},
        "notes": NOTES,
        "failures": failures,
        "code_version_at_end": code_state(),
        "total_seconds": round(time.perf_counter() - bench_started, 1),
    }
    report["targets"] = evaluate_targets(report)
    write_reports(report, args.out)
    return 0


def run_all(contenders: list[Contender], copies_list: list[int], corpora: dict[int, Path],
            facts: dict[int, tuple[np.ndarray, list[str], dict[str, Any]]], repeats: int,
            ) -> tuple[dict[int, list[dict[str, Any]]], dict[int, dict[str, np.ndarray]], list[dict[str, Any]]]:
    """Every run, interleaved per repeat: the runs per corpus size, the first labels per contender, failures."""
    runs: dict[int, list[dict[str, Any]]] = {c: [] for c in copies_list}
    labels: dict[int, dict[str, np.ndarray]] = {c: {} for c in copies_list}
    failures: list[dict[str, Any]] = []
    for repeat in range(repeats):
        for copies in copies_list:
            ids = facts[copies][0]
            for contender in contenders:
                done = sum(r["contender"] == contender.name for r in runs[copies])
                if copies not in contender.copies or (contender.max_runs and done >= contender.max_runs):
                    continue
                try:
                    result = run_contender(contender, corpora[copies], ids)
                except RuntimeError as error:
                    # Recorded, not fatal: one failing contender must not lose the others' numbers.
                    failures.append({"contender": contender.name, "copies": copies, "repeat": repeat,
                                     "error": str(error)[-1500:]})
                    print(f"[{repeat + 1}/{repeats}] {copies}x {contender.name} FAILED", file=sys.stderr)
                    continue
                run_labels = result.pop("labels")
                if run_labels is not None and contender.name not in labels[copies]:
                    labels[copies][contender.name] = run_labels
                runs[copies].append({"contender": contender.name, "repeat": repeat, **result})
                print(f"[{repeat + 1}/{repeats}] {copies}x {contender.name:<15} wall "
                      f"{result['wall_seconds']:7.2f} s  peak RSS {result['peak_rss_mb']:7.0f} MB  "
                      f"{json.dumps(result.get('phases', {}))}", file=sys.stderr)
    return runs, labels, failures


def copies_section(copies: int, runs: list[dict[str, Any]], labels: dict[str, np.ndarray],
                   facts: tuple[np.ndarray, list[str], dict[str, Any]], sample: int) -> dict[str, Any]:
    """The report section of one corpus size: medians, and the ground truth and quality if any labels."""
    ids, normalized, corpus = facts
    section = {"corpus": corpus, **summarise(runs, corpus)}
    if labels:
        print(f"ground truth {copies}x ...", file=sys.stderr)
        truth = ground_truth(normalized, sample)
        truth["labels"] = truth_components(len(normalized), truth["pairs"])
        section["ground_truth"] = truth_summary(truth)
        section["quality"] = {name: score(lab, truth, ids) for name, lab in labels.items()}
    return section


def write_reports(report: dict[str, Any], out: Path) -> None:
    """Writes the JSON report and the markdown beside it, and prints the markdown."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=_json_default) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown_report(report), encoding="utf-8")
    print(markdown_report(report))
    print(f"wrote {out} and {out.with_suffix('.md')}", file=sys.stderr)

def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, (np.ndarray, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")


if __name__ == "__main__":
    sys.exit(main())
