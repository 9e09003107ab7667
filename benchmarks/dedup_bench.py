"""Dedup benchmark: the MinHash kernel, the Beam job, datasketch and rensa, scored against an exact join.

One command, one run, several corpora (``dedup_bench_corpora``): linux-doc 6.1 +
6.12 (``linux-doc-x1``, and ``linux-doc-x4``, the same repeated under fresh ids),
and ``html-docs-near``, documentation pages plus near copies whose exact Jaccard
to their original lies in [0.75, 0.90], most of the true pairs in [0.80, 0.85)
(issue 12.1). One set of parameters (word 5-gram shingles, 128 permutations,
seed 1, Jaccard threshold 0.8). Every contender sees the same texts after the
job's default ``NormalizeConfig`` (NFKC, lowercase, whitespace collapse), so they
all shingle the same words.

Contenders (each run is a fresh subprocess, runs interleaved per repeat):

* ``kernel``: ``corpusmill.transforms.dedup.minhash.signatures`` on the whole corpus,
  text in, signatures out, shingling included; all threads and one thread;
* ``beam-exact`` / ``beam-none`` (/ ``beam-signature``): ``corpusmill run`` on
  the Parquet corpus with dedup on and ``dedup.verify`` set, read to manifest;
  ``dedup.banding: auto`` gives beam-exact the recall banding (16 x 6) and the
  others datasketch's (9 x 13); ``beam-exact-datasketch-bands`` is beam-exact
  with datasketch's banding;
* ``datasketch``: Python shingling, ``MinHash.update_batch`` per document
  (scheme "legacy", permutations drawn once and reused), ``MinHashLSH`` insert
  + query, union-find over the candidates; ``datasketch-exact`` checks each
  candidate pair by exact Jaccard of the two shingle-string sets first;
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
sample's near-threshold pairs. On ``html-docs-near`` the edit process names its
pairs too: every (original, copy) whose builder-measured Jaccard is >= 0.8 must be
a pair of the join, and no other.

Usage:
    python benchmarks/dedup_bench.py [--repeats 3] [--corpora linux-doc-x1 linux-doc-x4 html-docs-near]
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
from dedup_bench_corpora import copy_facts, ensure_corpus
from dedup_bench_params import (DATA_DIR, DEFAULT_CORPORA, DEFAULT_OUT, NGRAM, NUM_PERM, RENSA_BANDS, REPO_ROOT,
                                SCHEME, SEED, THRESHOLD, WORKER_COMMAND)
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
    parser.add_argument("--corpora", nargs="+", default=list(DEFAULT_CORPORA),
                        help=f"corpora (default {' '.join(DEFAULT_CORPORA)}; linux-doc-x<copies> for any copies)")
    parser.add_argument("--copies", help="linux-doc sizes, comma separated, instead of --corpora (e.g. 1,4)")
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
    names = [f"linux-doc-x{int(c)}" for c in args.copies.split(",")] if args.copies else args.corpora
    bench_started = time.perf_counter()

    machine = machine_info()
    contenders = [c for c in CONTENDERS if c.name in args.contenders]
    corpora, facts, sidecars = {}, {}, {}
    for name in names:
        path, sidecars[name] = ensure_corpus(name, DATA_DIR)
        corpora[name] = path.resolve()
        facts[name] = corpus_facts(corpora[name])
        print(f"corpus {name}: {facts[name][2]}", file=sys.stderr)

    runs, labels, failures = run_all(contenders, names, corpora, facts, args.repeats)
    by_corpus = {name: corpus_section(name, runs[name], labels[name], facts[name], args.sample, sidecars[name])
                 for name in names}
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
        "by_corpus": by_corpus,
        "raw": runs,
        "notes": NOTES,
        "failures": failures,
        "code_version_at_end": code_state(),
        "total_seconds": round(time.perf_counter() - bench_started, 1),
    }
    report["targets"] = evaluate_targets(report)
    write_reports(report, args.out)
    return 0


def run_all(contenders: list[Contender], names: list[str], corpora: dict[str, Path],
            facts: dict[str, tuple[np.ndarray, list[str], dict[str, Any]]], repeats: int,
            ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, np.ndarray]], list[dict[str, Any]]]:
    """Every run, interleaved per repeat: the runs per corpus, the first labels per contender, failures."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    labels: dict[str, dict[str, np.ndarray]] = {name: {} for name in names}
    failures: list[dict[str, Any]] = []
    for repeat in range(repeats):
        for name in names:
            ids = facts[name][0]
            for contender in contenders:
                done = sum(r["contender"] == contender.name for r in runs[name])
                if name not in contender.corpora or (contender.max_runs and done >= contender.max_runs):
                    continue
                try:
                    result = run_contender(contender, corpora[name], ids)
                except RuntimeError as error:
                    # Recorded, not fatal: one failing contender must not lose the others' numbers.
                    failures.append({"contender": contender.name, "corpus": name, "repeat": repeat,
                                     "error": str(error)[-1500:]})
                    print(f"[{repeat + 1}/{repeats}] {name} {contender.name} FAILED", file=sys.stderr)
                    continue
                run_labels = result.pop("labels")
                if run_labels is not None and contender.name not in labels[name]:
                    labels[name][contender.name] = run_labels
                runs[name].append({"contender": contender.name, "repeat": repeat, **result})
                print(f"[{repeat + 1}/{repeats}] {name} {contender.name:<27} wall "
                      f"{result['wall_seconds']:7.2f} s  peak RSS {result['peak_rss_mb']:7.0f} MB  "
                      f"{json.dumps(result.get('phases', {}))}", file=sys.stderr)
    return runs, labels, failures


def corpus_section(name: str, runs: list[dict[str, Any]], labels: dict[str, np.ndarray],
                   facts: tuple[np.ndarray, list[str], dict[str, Any]], sample: int,
                   sidecar: Path | None) -> dict[str, Any]:
    """The report section of one corpus: medians, and the ground truth and quality if any labels."""
    ids, normalized, corpus = facts
    section = {"corpus": corpus, **summarise(runs, corpus)}
    if labels:
        print(f"ground truth {name} ...", file=sys.stderr)
        truth = ground_truth(normalized, sample)
        truth["labels"] = truth_components(len(normalized), truth["pairs"])
        section["ground_truth"] = truth_summary(truth)
        if sidecar is not None:
            section["ground_truth"]["edit_pairs"] = edit_pair_check(copy_facts(sidecar), ids, truth)
        section["quality"] = {contender: score(lab, truth, ids) for contender, lab in labels.items()}
    return section


def edit_pair_check(facts: list[dict[str, Any]], ids: np.ndarray, truth: dict[str, Any]) -> dict[str, Any]:
    """The near copies' (original, copy) pairs against the join: those at J >= threshold in it, the others not."""
    index = {doc_id: i for i, doc_id in enumerate(ids.tolist())}
    joined = {(int(a), int(b)) for a, b in truth["pairs"]}
    similarity = np.array([f["jaccard"] for f in facts])
    pairs = [tuple(sorted((index[f["original"]], index[f["id"]]))) for f in facts]
    above = similarity >= THRESHOLD
    in_join = np.array([pair in joined for pair in pairs])
    edit_set = set(pairs)
    return {
        "copies": len(facts),
        "by_jaccard": {label: int(np.sum((similarity >= lo) & (similarity < hi)))
                       for label, lo, hi in (("[0.70,0.75)", 0.70, 0.75), ("[0.75,0.80)", 0.75, 0.80),
                                             ("[0.80,0.85)", 0.80, 0.85), ("[0.85,0.90)", 0.85, 0.90),
                                             ("[0.90,1.00]", 0.90, 1.01))},
        "above_threshold": int(above.sum()),
        "above_threshold_in_join": int(np.sum(above & in_join)),
        "below_threshold_in_join": int(np.sum(~above & in_join)),
        "join_pairs_not_edit_pairs": len(joined - edit_set),
        "identical": bool(np.array_equal(above, in_join)),
    }


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
