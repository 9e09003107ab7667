"""Local multi-core runs lose nothing: 2 worker processes against the in-process run, repeated.

Issue 12, part 3. ``corpusmill run`` on linux-doc 6.1 + 6.12 repeated
``--copies`` times (every copy but the first lightly perturbed by word-level
edits under fresh ids, as ``order_stage_bench.perturbed`` does, so the copies
are near, not exact, duplicates), built once into ``--data`` (outside the
repository), as one Parquet file. Contenders, each run a fresh
``python -m corpusmill.jobs.cli run`` process, one at a time:

* ``in-process``: the default local run (FnApiRunner, ``in_memory``);
* ``2 workers``: ``-- --direct_num_workers=2 --direct_running_mode=multi_processing``.

Every run's manifest is compared with the first in-process run's: the
accounting (``counts``), every shard of every output (path, rows, bytes,
sha256) and the whole manifest apart from ``created_at``, ``timings`` and the
output path. The in-process runs are spread evenly among the worker runs, so
noise from other work on the shared machine hits both alike; wall times are
medians. Jobs with different ``--set`` overrides are kept side by side in
``--out``: a run replaces its own job's section.

Usage:
    python benchmarks/local_workers_bench.py [--copies 4] [--worker-runs 10] [--in-process-runs 3]
        [--set KEY=VALUE ...] [--data /work/bench-data] [--out benchmarks/results/local_workers_bench.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from order_stage_bench import perturbed  # noqa: E402

DEFAULT_OUT = HERE / "results" / "local_workers_bench.json"
LINUX_DOC = Path("/work/corpora/linux-doc-x1.parquet")
WORKER_ARGS = ("--direct_num_workers=2", "--direct_running_mode=multi_processing")
RUN_TIMEOUT_S = 3600


def build_corpus(data: Path, copies: int, source: Path = LINUX_DOC) -> Path:
    """linux-doc repeated ``copies`` times, copies after the first perturbed, as Parquet; built once."""
    target = data / f"linux-doc-x{copies}-perturbed.parquet"
    if target.exists():
        return target
    table = pq.read_table(source)
    ids, texts = table["id"].to_pylist(), table["text"].to_pylist()
    rng = np.random.default_rng(12)
    parts = [table]
    for copy in range(1, copies):
        parts.append(table.set_column(table.schema.get_field_index("id"), "id",
                                      pa.array([f"copy{copy}/{i}" for i in ids]))
                     .set_column(table.schema.get_field_index("text"), "text",
                                 pa.array([perturbed(t, rng) for t in texts])))
    data.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    pq.write_table(pa.concat_tables(parts), partial, compression="zstd")
    partial.rename(target)
    return target


def run_cli(corpus: Path, out: Path, sets: list[str], beam_args: tuple[str, ...]) -> dict[str, Any]:
    """One ``corpusmill run`` in a fresh process: exit status, wall seconds and its manifest."""
    command = [sys.executable, "-m", "corpusmill.jobs.cli", "run", "--input", str(corpus), "--output", str(out),
               "--overwrite", *(arg for key_value in sets for arg in ("--set", key_value))]
    if beam_args:
        command += ["--", *beam_args]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    wall = time.perf_counter() - started
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if done.returncode == 0 and manifest_path.exists() else None
    return {"exit_status": done.returncode, "wall_seconds": round(wall, 2), "manifest": manifest,
            "stderr_tail": done.stderr[-3000:] if done.returncode else ""}


def shards(manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Every output's shards: path, rows, bytes, sha256."""
    return {name: summary["shards"] for name, summary in sorted(manifest["outputs"].items())}


def comparable(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest without what differs between identical runs (times, the output path)."""
    view = {k: v for k, v in manifest.items() if k not in ("created_at", "timings")}
    config = json.loads(json.dumps(view["config"]))
    config["output"].pop("path", None)
    return {**view, "config": config}


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def compare(reference: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """What of ``manifest`` equals ``reference``: counts, shards, the whole stable manifest, and differences."""
    ref_shards, run_shards = shards(reference), shards(manifest)
    differing = sorted(f"{name}/{s['path']}" for name in set(ref_shards) | set(run_shards)
                       for s in run_shards.get(name, []) if s not in ref_shards.get(name, []))
    different_keys = sorted(k for k in set(comparable(reference)) | set(comparable(manifest))
                            if comparable(reference).get(k) != comparable(manifest).get(k))
    return {"counts_equal": reference["counts"] == manifest["counts"],
            "shards_equal": ref_shards == run_shards,
            "manifest_equal": comparable(reference) == comparable(manifest),
            "differing_shards": differing[:20], "differing_manifest_keys": different_keys}


def schedule(worker_runs: int, in_process_runs: int) -> list[str]:
    """Run order: an in-process run first (the reference), the others spread evenly among the worker runs."""
    order, spacing = ["in-process"], worker_runs / max(1, in_process_runs - 1)
    placed = 1
    for i in range(worker_runs):
        order.append("2 workers")
        if placed < in_process_runs and (i + 1) >= placed * spacing:
            order.append("in-process")
            placed += 1
    order += ["in-process"] * (in_process_runs - placed)
    return order


def job_section(record: dict[str, Any]) -> list[str]:
    """One job's table and verdict."""
    s = record["summary"]
    lines = [
        f"## {record['job']}",
        "",
        f"- Command: `{record['command']}`",
        f"- Date: {record['date']}; code: {record['code']}",
        "",
        "| contender | runs | exit 0 | counts equal | shards equal | manifest equal | wall s (median) | "
        "wall s (each, in run order) | pipeline s (median) |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for name in ("in-process", "2 workers"):
        row = s[name]
        lines.append(
            f"| {name} | {row['runs']} | {row['exit_0']} | {row['counts_equal']} | {row['shards_equal']} | "
            f"{row['manifest_equal']} | {row['median_wall_seconds']:.1f} | "
            f"{', '.join(f'{w:.0f}' for w in row['wall_seconds'])} | {row['median_pipeline_seconds']:.1f} |")
    counts = record["reference_counts"]
    ratio = s["speedup_wall"]
    lines += [
        "",
        f"Reference accounting: input {counts['input_records']:,} = kept {counts['kept']:,} + duplicates "
        f"{counts['duplicates']:,} ({', '.join(f'{k} {v:,}' for k, v in counts['duplicates_by_kind'].items())}) "
        f"+ rejected {counts['rejected']:,}; {record['reference_shards']} shards in all"
        + (f" (partitioning: {record['partitioning']['mode']}, {record['partitioning']['num_shards']} shard(s) "
           f"per output)." if record.get("partitioning") else "."),
        "",
        f"2 workers against in-process, median wall: **{ratio:.2f}x faster**" if ratio >= 1 else
        f"2 workers against in-process, median wall: **{1 / ratio:.2f}x slower**",
        "",
        f"Lost or different output in any run: **{'none' if s['all_identical'] else 'YES'}**.",
        "",
    ]
    return lines


def write_markdown(path: Path, jobs: dict[str, dict[str, Any]]) -> None:
    """Every job's results."""
    first = next(iter(jobs.values()))
    lines = [
        "# local_workers_bench: 2 local worker processes against the in-process run",
        "",
        f"- Machine: {first['machine']}",
        f"- Corpus: {first['corpus']['description']}: {first['corpus']['documents']:,} documents, "
        f"{first['corpus']['text_mb']:.1f} MB of text (`{first['corpus']['path']}`)",
        "- Every run a fresh `python -m corpusmill.jobs.cli run` process, one at a time, the in-process runs "
        "spread among the worker runs; each compared with the job's first in-process run: `counts` (the "
        "accounting), every shard of every output (path, rows, bytes, sha256), and the whole manifest but "
        "`created_at`, `timings` and the output path. Wall: the process's, seen from outside; pipeline: the "
        "manifest's `timings.pipeline_seconds`.",
        "",
    ]
    for record in jobs.values():
        lines += job_section(record)
    path.with_suffix(".md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--worker-runs", type=int, default=10)
    parser.add_argument("--in-process-runs", type=int, default=3)
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every run (e.g. order.enabled=false); repeatable")
    parser.add_argument("--data", type=Path, default=Path("/work/bench-data"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--report", action="store_true", help="only rewrite the .md from the .json at --out")
    args = parser.parse_args()
    if args.report:
        write_markdown(args.out, json.loads(args.out.read_text())["jobs"])
        return
    label = " ".join(args.sets) or "default"
    corpus = build_corpus(args.data, args.copies)
    outputs = args.data / "local-workers-out"
    runs: list[dict[str, Any]] = []
    reference = None
    for index, contender in enumerate(schedule(args.worker_runs, args.in_process_runs)):
        out = outputs / contender.replace(" ", "-")
        outcome = run_cli(corpus, out, args.sets, WORKER_ARGS if contender == "2 workers" else ())
        manifest = outcome.pop("manifest")
        row = {"index": index, "contender": contender, **outcome}
        if manifest is not None:
            reference = reference or manifest
            row |= {"pipeline_seconds": manifest["timings"]["pipeline_seconds"], **compare(reference, manifest)}
        runs.append(row)
        print(json.dumps(row), flush=True)
    shutil.rmtree(outputs, ignore_errors=True)

    summary: dict[str, Any] = {}
    for name in ("in-process", "2 workers"):
        group = [r for r in runs if r["contender"] == name]
        ok = [r for r in group if r["exit_status"] == 0]
        summary[name] = {
            "runs": len(group), "exit_0": len(ok),
            "counts_equal": sum(r.get("counts_equal", False) for r in group),
            "shards_equal": sum(r.get("shards_equal", False) for r in group),
            "manifest_equal": sum(r.get("manifest_equal", False) for r in group),
            "wall_seconds": [r["wall_seconds"] for r in group],
            "median_wall_seconds": statistics.median(r["wall_seconds"] for r in ok) if ok else float("nan"),
            "median_pipeline_seconds": statistics.median(r["pipeline_seconds"] for r in ok) if ok else float("nan"),
        }
    summary["speedup_wall"] = summary["in-process"]["median_wall_seconds"] / summary["2 workers"]["median_wall_seconds"]
    summary["all_identical"] = all(r.get("manifest_equal") and r.get("shards_equal") and r["exit_status"] == 0
                                   for r in runs)
    table = pq.read_table(corpus, columns=["text"])
    import apache_beam

    git = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    record = {
        "command": "python benchmarks/local_workers_bench.py " + " ".join(sys.argv[1:]),
        "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "code": f"corpusmill {git.stdout.strip() or 'unknown'}, apache-beam {apache_beam.__version__}",
        "machine": f"{os.cpu_count()} cores, {platform.platform()}; Python {platform.python_version()}",
        "corpus": {"path": str(corpus), "documents": table.num_rows,
                   "text_mb": round(sum(len(t.as_py().encode()) for t in table["text"]) / 1e6, 1),
                   "description": f"linux-doc 6.1 + 6.12 x{args.copies}, copies 2..{args.copies} with ~3% of "
                                  f"words replaced, fresh ids"},
        "job": "the default job (dedup, order, decompose)" + "".join(f" `--set {s}`" for s in args.sets),
        "reference_counts": reference["counts"] if reference else None,
        "partitioning": reference["execution"]["partitioning"] if reference else None,
        "reference_shards": sum(len(v) for v in shards(reference).values()) if reference else 0,
        "summary": summary,
        "runs": runs,
    }
    jobs = json.loads(args.out.read_text())["jobs"] if args.out.exists() else {}
    jobs[label] = record
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"jobs": jobs}, indent=2) + "\n")
    write_markdown(args.out, jobs)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
