"""Refresh against a full run (issue 13): linux-doc 6.1 published, then 6.12 arrives.

The first snapshot is ``corpusmill run`` over Linux 6.1's documentation; the refresh
is ``corpusmill refresh --previous FIRST --input 6.12``; the contender is a full
``corpusmill run`` over both versions. Every run is a fresh process of the CLI with
the same job (``--job default``: every stage of the embedded default job, or
``dedup``: the other stages off), refresh and full run interleaved, medians of
wall time. Then the checks of issue 13:

* quality: an independent brute-force Jaccard audit (``transforms/dedup/audit.py``)
  over the chain (first + refresh) and over the full run: kept pairs at or above
  the threshold (should be 0) and removed documents without any duplicate (0);
* the refresh's own figures: kept, duplicates of published documents and of each
  other, index rows;
* a rerun of the refresh gives byte-identical Parquet; a second refresh of the
  same input against the refreshed snapshot keeps 0 documents.

Writes ``results/refresh_bench.{json,md}``.

    python benchmarks/refresh_bench.py [--repeats 3] [--job default] [--work /tmp/refresh-bench]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import zstandard

from corpusmill.jobs.linux_doc_packages import collect_documents
from corpusmill.schemas.config import DedupConfig
from corpusmill.transforms.dedup.audit import check_snapshot_chain
from corpusmill.transforms.io.beam.snapshot import manifest_shards

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "corpusmill.jobs.cli"]
JOBS = {"default": [], "dedup": ["--set", "order.enabled=false", "--set", "decompose.enabled=false"]}


def write_version(series: str, path: Path) -> int:
    """One kernel version's documentation as JSONL.zst; returns the record count."""
    if path.exists():
        return sum(1 for _ in read_jsonl(path))
    records = list(collect_documents(series=(series,)))
    data = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records).encode()
    path.write_bytes(zstandard.ZstdCompressor(level=3).compress(data))
    return len(records)


def read_jsonl(path: Path):
    data = zstandard.ZstdDecompressor().decompress(path.read_bytes(), max_output_size=1 << 31)
    for line in data.decode("utf-8").splitlines():
        if line.strip():
            yield json.loads(line)


def cli(*args: str) -> tuple[float, int, str]:
    started = time.perf_counter()
    process = subprocess.run([*CLI, *args], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if process.returncode not in (0, 3):
        raise RuntimeError(f"corpusmill {' '.join(args)} failed ({process.returncode}):\n{process.stderr[-3000:]}")
    return wall, process.returncode, process.stdout


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def rows(out: Path, output: str, columns: list[str]) -> list[dict]:
    return [row for path in sorted((out / output).glob("part-*.parquet"))
            for row in pq.read_table(path, columns=columns).to_pylist()]


def parquet_digests(out: Path) -> dict[str, str]:
    """Every shard's sha256 as the manifest lists it (publishing verified each against the file)."""
    return {shard["path"]: shard["sha256"] for shard in manifest_shards(manifest(out))}


def audit(kept_dirs: list[Path], removed: list[tuple[str, str]]) -> dict:
    kept = [(r["id"], r["text"]) for out in kept_dirs for r in rows(out, "docs", ["id", "text"])]
    result = check_snapshot_chain(kept, removed, DedupConfig())
    return {"kept": result["kept"], "removed": result["removed"], "pairs_at_threshold": result["pairs_at_threshold"],
            "kept_pairs_at_threshold": len(result["kept_pairs"]), "kept_pairs_examples": result["kept_pairs"][:5],
            "removed_without_duplicate": len(result["removed_without_duplicate"]),
            "removed_without_duplicate_examples": result["removed_without_duplicate"][:5]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--job", choices=sorted(JOBS), default="default")
    parser.add_argument("--work", type=Path, default=Path("/tmp/refresh-bench"))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "refresh_bench.json")
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    job = JOBS[args.job]
    old, new = work / "linux-doc-6.1.jsonl.zst", work / "linux-doc-6.12.jsonl.zst"
    counts = {"6.1": write_version("6.1", old), "6.12": write_version("6.12", new)}
    load_start = os.getloadavg()[0]
    for name in os.listdir(work):
        if not name.endswith(".zst"):
            shutil.rmtree(work / name)

    first = work / "first"
    first_wall, _, _ = cli("run", "--input", str(old), "--output", str(first), *job)
    walls: dict[str, list[float]] = {"refresh": [], "full": []}
    for r in range(args.repeats):
        order = ("refresh", "full") if r % 2 == 0 else ("full", "refresh")
        for kind in order:
            out = work / f"{kind}-{r}"
            if kind == "refresh":
                wall, _, stdout = cli("refresh", "--previous", str(first), "--input", str(new), "--output", str(out), *job)
            else:
                wall, _, stdout = cli("run", "--input", str(old), str(new), "--output", str(out), *job)
            walls[kind].append(round(wall, 2))
            print(f"{kind} {r}: {wall:.1f} s", flush=True)
    refreshed, full = work / "refresh-0", work / "full-0"
    identical = all(parquet_digests(work / f"refresh-{r}") == parquet_digests(refreshed) for r in range(args.repeats))
    again = work / "refresh-again"
    again_wall, again_code, _ = cli("refresh", "--previous", str(refreshed), "--input", str(new), "--output",
                                    str(again), *job)

    texts = {r["id"]: r["text"] for path in (old, new) for r in read_jsonl(path)}
    refresh_removed = [(r["id"], texts[r["id"]]) for out in (first, refreshed) for r in rows(out, "duplicates", ["id"])]
    full_removed = [(r["id"], texts[r["id"]]) for r in rows(full, "duplicates", ["id"])]
    m_first, m_refresh, m_full, m_again = manifest(first), manifest(refreshed), manifest(full), manifest(again)
    result = {
        "command": f"python benchmarks/refresh_bench.py --repeats {args.repeats} --job {args.job}",
        "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "load_average_start": round(load_start, 2), "load_average_end": round(os.getloadavg()[0], 2)},
        "job": args.job,
        "records": counts,
        "first": {"wall_seconds": round(first_wall, 2), "kept": m_first["counts"]["kept"],
                  "duplicates": m_first["counts"]["duplicates"]},
        "refresh": {"wall_seconds": walls["refresh"], "median": statistics.median(walls["refresh"]),
                    "kept": m_refresh["counts"]["kept"], "duplicates": m_refresh["counts"]["duplicates"],
                    "duplicates_by_kind": m_refresh["counts"]["duplicates_by_kind"],
                    "refresh": m_refresh["dedup"]["refresh"], "index_rows": m_refresh["outputs"]["index"]["rows"],
                    "outputs": {name: out["rows"] for name, out in m_refresh["outputs"].items()}},
        "full": {"wall_seconds": walls["full"], "median": statistics.median(walls["full"]),
                 "kept": m_full["counts"]["kept"], "duplicates": m_full["counts"]["duplicates"],
                 "duplicates_by_kind": m_full["counts"]["duplicates_by_kind"]},
        "refresh_over_full": round(statistics.median(walls["refresh"]) / statistics.median(walls["full"]), 3),
        "rerun_byte_identical": identical,
        "second_refresh": {"kept": m_again["counts"]["kept"], "exit_status": again_code,
                           "wall_seconds": round(again_wall, 2)},
        "audit_chain": audit([first, refreshed], refresh_removed),
        "audit_full": audit([full], full_removed),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(render(result))
    print(render(result))


def render(r: dict) -> str:
    chain, full = r["audit_chain"], r["audit_full"]
    rf = r["refresh"]["refresh"]
    lines = [
        "# Refresh against a full run (issue 13)", "",
        f"`{r['command']}` on {r['date']} ({r['machine']['cpus']} CPUs, {r['machine']['processor']}, shared: load "
        f"average {r['machine']['load_average_start']} at start, {r['machine']['load_average_end']} at end). "
        f"Job: `{r['job']}` ({'every stage of the embedded default job' if r['job'] == 'default' else 'dedup only'}). "
        f"Every run a fresh `corpusmill` process; refresh and full run interleaved.", "",
        f"Input: Linux 6.1 documentation ({r['records']['6.1']:,} records) published first "
        f"({r['first']['kept']:,} kept, {r['first']['wall_seconds']} s); then 6.12 ({r['records']['6.12']:,} records).", "",
        "| | runs (s) | median (s) | kept | duplicates |",
        "|---|---|---:|---:|---:|",
        f"| `corpusmill refresh --previous first --input 6.12` | {', '.join(map(str, r['refresh']['wall_seconds']))} | "
        f"{r['refresh']['median']:.1f} | {r['refresh']['kept']:,} (chain {r['first']['kept'] + r['refresh']['kept']:,}) | "
        f"{r['refresh']['duplicates']:,} |",
        f"| `corpusmill run --input 6.1 6.12` | {', '.join(map(str, r['full']['wall_seconds']))} | "
        f"{r['full']['median']:.1f} | {r['full']['kept']:,} | {r['full']['duplicates']:,} |", "",
        f"Refresh / full run: **{r['refresh_over_full']}** of the wall time.", "",
        f"The refresh's duplicates: of published (6.1) documents {sum(rf['against_previous'].values()):,} "
        f"({', '.join(f'{k} {v:,}' for k, v in rf['against_previous'].items())}), of each other "
        f"{sum(rf['against_each_other'].values()):,} ({', '.join(f'{k} {v:,}' for k, v in rf['against_each_other'].items())}); "
        f"its index covers {r['refresh']['index_rows']:,} documents (both snapshots).", "",
        "Independent audit (brute-force exact Jaccard >= 0.8 through 64 x 2 MinHash bands of another seed):", "",
        "| | kept | removed | kept pairs at J >= 0.8 | removed without a duplicate |",
        "|---|---:|---:|---:|---:|",
        f"| chain (first + refresh) | {chain['kept']:,} | {chain['removed']:,} | {chain['kept_pairs_at_threshold']} | "
        f"{chain['removed_without_duplicate']} |",
        f"| full run | {full['kept']:,} | {full['removed']:,} | {full['kept_pairs_at_threshold']} | "
        f"{full['removed_without_duplicate']} |", "",
        f"Reruns of the refresh byte-identical: **{r['rerun_byte_identical']}**. A second refresh of the same 6.12 "
        f"input against the refreshed snapshot kept **{r['second_refresh']['kept']}** documents "
        f"(exit status {r['second_refresh']['exit_status']}: nothing new), in {r['second_refresh']['wall_seconds']} s.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
