"""Read + validate + write: the corpusmill job against plain pyarrow, one process each.

On the linux-doc 6.1 + 6.12 corpus (every .rst/.txt of both packages, 10,040
documents, about 60 MB of text) stored as JSONL.gz and as Parquet, this measures

* ``beam``: ``corpusmill run --input FILE --output TMP --overwrite`` with the
  dedup and decompose stages switched off (FnApiRunner, in-process): read in
  Arrow batches, validate, shard by id hash, write zstd Parquet shards, manifest
  and ``_SUCCESS``;
* ``beam-2proc``: the same job with
  ``-- --direct_num_workers=2 --direct_running_mode=multi_processing``;
* ``pyarrow``: plain pyarrow in one process: ``pyarrow.json.read_json`` on the
  gzip stream (or ``pq.read_table``), then one ``pq.write_table`` (zstd).

Every run is a fresh subprocess, so wall time includes interpreter start and
imports on both sides, and peak RSS is that run's alone. Runs are interleaved per
repeat (beam, beam-2proc, pyarrow, then the next format, then the next repeat), so
noise from other jobs on the machine hits every contender alike. Reported numbers
are medians over ``--repeats``.

Peak RSS comes from ``/usr/bin/time -v`` (the largest single process; when it is
missing, ``getrusage(RUSAGE_CHILDREN)`` in a fresh wrapper process). Because the
2-process variant spreads its memory over worker processes, the summed RSS of the
whole process tree is also sampled from /proc (every 50 ms, so short peaks can be
missed).

``--copies N`` runs on the corpus repeated N times (linux-doc-x{N}.*), which
shows how the job's fixed cost (interpreter, importing apache_beam, building and
starting the pipeline: about 2-3 s) is amortised as the data grows.

Usage:
    python benchmarks/read_bench.py [--repeats 3] [--copies 1] [--out benchmarks/results/read_bench.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from measure import GNU_TIME, RSS_SAMPLE_SECONDS, measured_run

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "benchmarks" / ".data"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "read_bench.json"
FORMATS: tuple[str, ...] = ("jsonl.gz", "parquet")
TARGET_RATIO = 3.0
# Matches the job's default output settings (jobs/default.yaml), so both sides
# write the same codec and row-group size.
PARQUET_COMPRESSION = "zstd"
PARQUET_ROW_GROUP_ROWS = 8192
# pyarrow's JSON reader needs every document inside one block; the largest
# linux-doc file is about 0.3 MB, so 4 MiB leaves ample room.
JSON_BLOCK_BYTES = 4 << 20
PYARROW_WORKER_COMMAND = "_pyarrow-worker"
# The benchmark compares read + validate + write with pyarrow reading and
# writing the same data; the job's later stages have no pyarrow counterpart.
JOB_OVERRIDES: tuple[str, ...] = ("dedup.enabled=false", "decompose.enabled=false")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One contender: how to build its command line for an input file.

    Attributes:
        name: Label in the report ("beam", "beam-2proc", "pyarrow").
        kind: "beam" for the corpusmill job, "pyarrow" for the baseline.
        beam_args: Arguments passed after ``--`` to Beam's PipelineOptions.
    """

    name: str
    kind: str
    beam_args: tuple[str, ...] = ()

    def command(self, input_path: Path, output_dir: Path) -> list[str]:
        """The argv that runs this contender once."""
        if self.kind == "pyarrow":
            return [sys.executable, str(Path(__file__).resolve()), PYARROW_WORKER_COMMAND,
                    str(input_path), str(output_dir / "out.parquet")]
        argv = [sys.executable, "-m", "corpusmill.jobs.cli", "run", "--input", str(input_path),
                "--output", str(output_dir / "snapshot"), "--overwrite"]
        for override in JOB_OVERRIDES:
            argv += ["--set", override]
        if self.beam_args:
            argv += ["--", *self.beam_args]
        return argv


VARIANTS: tuple[Variant, ...] = (
    Variant("beam", "beam"),
    Variant("beam-2proc", "beam", ("--direct_num_workers=2", "--direct_running_mode=multi_processing")),
    Variant("pyarrow", "pyarrow"),
)


@dataclasses.dataclass
class RunResult:
    """Measurements of one subprocess run.

    Attributes:
        wall_seconds: Parent-side wall time of the subprocess, start to exit.
        peak_rss_mb: Peak RSS of the largest single process (MiB).
        tree_rss_mb: Sampled peak of the summed RSS of the process tree (MiB), or None.
        inner_seconds: Time the work took inside the process (the manifest's
            wall_seconds for Beam; read + write for pyarrow).
        pipeline_seconds: The manifest's timings.pipeline_seconds (Beam only).
        rows: Rows written, checked against the corpus size.
    """

    wall_seconds: float
    peak_rss_mb: float | None
    tree_rss_mb: float | None
    inner_seconds: float | None
    pipeline_seconds: float | None
    rows: int


# --------------------------------------------------------------------------- pyarrow baseline


def pyarrow_read_write(input_path: Path, output_path: Path) -> dict[str, Any]:
    """Reads a JSONL.gz or Parquet file whole with pyarrow and writes one zstd Parquet file.

    Args:
        input_path: A ``.jsonl.gz`` or ``.parquet`` file.
        output_path: The Parquet file to write.

    Returns:
        rows, read_seconds and write_seconds.
    """
    import pyarrow as pa
    import pyarrow.json as pa_json
    import pyarrow.parquet as pq

    started = time.perf_counter()
    if input_path.name.endswith(".jsonl.gz"):
        with pa.OSFile(str(input_path)) as raw, pa.CompressedInputStream(raw, "gzip") as stream:
            table = pa_json.read_json(stream, read_options=pa_json.ReadOptions(block_size=JSON_BLOCK_BYTES))
    else:
        table = pq.read_table(input_path)
    read = time.perf_counter()
    pq.write_table(table, output_path, compression=PARQUET_COMPRESSION, row_group_size=PARQUET_ROW_GROUP_ROWS)
    written = time.perf_counter()
    return {"rows": table.num_rows, "read_seconds": read - started, "write_seconds": written - read}


# --------------------------------------------------------------------------- measurement


def run_once(variant: Variant, input_path: Path, expected_rows: int) -> RunResult:
    """Runs one contender once on a fresh output folder and checks its row count."""
    with tempfile.TemporaryDirectory(prefix="read_bench_") as tmp:
        scratch = Path(tmp)
        wall, peak, tree, stdout = measured_run(variant.command(input_path, scratch), scratch)
        if variant.kind == "pyarrow":
            stats = json.loads(stdout.strip().splitlines()[-1])
            rows, inner, pipeline = stats["rows"], stats["read_seconds"] + stats["write_seconds"], None
        else:
            manifest = json.loads((scratch / "snapshot" / "manifest.json").read_text())
            rows = manifest["outputs"]["docs"]["rows"]
            inner = manifest["timings"]["wall_seconds"]
            pipeline = manifest["timings"]["pipeline_seconds"]
    if rows != expected_rows:
        raise RuntimeError(f"{variant.name} on {input_path.name} wrote {rows} rows, expected {expected_rows}")
    return RunResult(wall, peak, tree, inner, pipeline, rows)


# --------------------------------------------------------------------------- report


def corpus_stats(parquet_path: Path) -> dict[str, int]:
    """Document count and UTF-8 text bytes of the corpus (computed once, from Parquet)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    texts = pq.read_table(parquet_path, columns=["text"])["text"]
    return {"documents": len(texts), "text_bytes": int(pc.sum(pc.binary_length(texts)).as_py())}


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(runs: dict[tuple[str, str], list[RunResult]], stats: dict[str, int],
              input_bytes: dict[str, int]) -> list[dict[str, Any]]:
    """Per (format, variant): medians, throughputs and the ratio to pyarrow on the same format."""
    rows = []
    for (fmt, name), results in runs.items():
        wall = statistics.median(r.wall_seconds for r in results)
        rows.append({
            "format": fmt,
            "variant": name,
            "runs": len(results),
            "wall_seconds": round(wall, 3),
            "wall_seconds_all": [round(r.wall_seconds, 3) for r in results],
            "inner_seconds": _round(_median([r.inner_seconds for r in results])),
            "pipeline_seconds": _round(_median([r.pipeline_seconds for r in results])),
            "docs_per_second": round(stats["documents"] / wall, 1),
            "text_mb_per_second": round(stats["text_bytes"] / 1e6 / wall, 2),
            "input_file_mb_per_second": round(input_bytes[fmt] / 1e6 / wall, 2),
            "peak_rss_mb": _round(_median([r.peak_rss_mb for r in results]), 1),
            "tree_rss_mb": _round(_median([r.tree_rss_mb for r in results]), 1),
        })
    baseline = {row["format"]: row for row in rows if row["variant"] == "pyarrow"}
    for row in rows:
        reference = baseline[row["format"]]
        row["ratio_to_pyarrow"] = round(row["wall_seconds"] / reference["wall_seconds"], 2)
        row["in_process_ratio_to_pyarrow"] = round(row["inner_seconds"] / reference["inner_seconds"], 2)
        row["within_target"] = row["ratio_to_pyarrow"] <= TARGET_RATIO
    return rows


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The summary rows as a markdown table."""
    def cell(value: Any, spec: str = "") -> str:
        return "-" if value is None else format(value, spec)

    lines = [
        "| format | variant | wall s (median) | in-process s | pipeline s | docs/s | text MB/s "
        "| peak RSS MB (largest proc) | peak RSS MB (tree, sampled) | x pyarrow (wall) | x pyarrow (in-process) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['format']} | {row['variant']} | {row['wall_seconds']:.2f} | {cell(row['inner_seconds'], '.2f')} "
            f"| {cell(row['pipeline_seconds'], '.2f')} | {row['docs_per_second']:,.0f} "
            f"| {row['text_mb_per_second']:.1f} | {cell(row['peak_rss_mb'], ',.0f')} "
            f"| {cell(row['tree_rss_mb'], ',.0f')} | {row['ratio_to_pyarrow']:.2f} "
            f"| {row['in_process_ratio_to_pyarrow']:.2f} |")
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    """CPU count and model, Python, Beam and pyarrow versions."""
    import apache_beam
    import pyarrow

    cpu = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), None)
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "apache_beam": apache_beam.__version__,
        "pyarrow": pyarrow.__version__,
        "peak_rss_source": "/usr/bin/time -v" if os.access(GNU_TIME, os.X_OK) else "getrusage(RUSAGE_CHILDREN)",
    }


def markdown_report(report: dict[str, Any]) -> str:
    """The whole report as a markdown document."""
    machine, corpus = report["machine"], report["corpus"]
    return "\n".join([
        "# read_bench: corpusmill job vs plain pyarrow",
        "",
        f"- Command: `{report['command']}`",
        f"- Date: {report['date']}",
        f"- Machine: {machine['nproc']} cores ({machine['cpu']}), {machine['platform']}; "
        f"Python {machine['python']}, apache-beam {machine['apache_beam']}, pyarrow {machine['pyarrow']}",
        f"- Corpus: linux-doc 6.1 + 6.12 x{corpus.get('copies', 1)}, {corpus['documents']:,} documents, "
        f"{corpus['text_bytes'] / 1e6:.1f} MB UTF-8 text; files: "
        + ", ".join(f"{fmt} {size / 1e6:.1f} MB" for fmt, size in corpus["file_bytes"].items()),
        f"- Medians of {report['repeats']} runs, interleaved per repeat; every run is a fresh process, "
        "so wall time includes interpreter start and imports.",
        "- Job: read + validate + shard + write (" + ", ".join(f"`--set {o}`" for o in JOB_OVERRIDES) + ").",
        "",
        markdown_table(report["results"]),
        "",
        "Columns: *wall s* is the subprocess's wall time seen by the parent, the basis of docs/s, MB/s "
        "and the first ratio; *in-process s* is the manifest's wall_seconds (Beam) or read + write time "
        "(pyarrow), the basis of the second ratio, which leaves out interpreter start and imports; "
        "*pipeline s* is the manifest's timings.pipeline_seconds (Beam construction, "
        "runner start-up and execution); *text MB/s* counts UTF-8 text bytes. "
        f"Target: the Beam job within {TARGET_RATIO:g}x of pyarrow.",
        "",
        f"Peak RSS (largest proc) is from {machine['peak_rss_source']}: the largest single process, "
        "which under-counts beam-2proc, whose work runs in worker processes; the tree column sums "
        f"the RSS of the whole process tree sampled every {RSS_SAMPLE_SECONDS * 1000:.0f} ms.",
        "",
        "Note: the machine is shared and noisy (other jobs may run at the same time); "
        "treat differences under ~15% as noise.",
        "",
    ])


# --------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per contender and format (default 3)")
    parser.add_argument("--copies", type=int, default=1,
                        help="run on the corpus repeated this many times (default 1)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON report; a .md file with the table is written beside it "
                             "(default benchmarks/results/read_bench.json, read_bench_x{N}.json for --copies N)")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--variants", nargs="+", choices=[v.name for v in VARIANTS],
                        default=[v.name for v in VARIANTS])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark and writes the JSON and markdown reports."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [PYARROW_WORKER_COMMAND]:
        print(json.dumps(pyarrow_read_write(Path(argv[1]), Path(argv[2]))))
        return 0
    args = _parser().parse_args(argv)
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    if args.copies < 1:
        raise SystemExit("--copies must be >= 1")
    if args.out is None:
        args.out = DEFAULT_OUT if args.copies == 1 else DEFAULT_OUT.with_name(f"read_bench_x{args.copies}.json")
    from corpusmill.jobs.linux_doc import ensure_corpus

    # Parquet is always built: corpus_stats counts documents and text bytes from it.
    wanted = [fmt for fmt in FORMATS if fmt in args.formats or fmt == "parquet"]
    paths = {fmt: path.resolve() for fmt, path in ensure_corpus(DATA_DIR, copies=args.copies, formats=wanted).items()}
    stats = corpus_stats(paths["parquet"])
    file_bytes = {fmt: paths[fmt].stat().st_size for fmt in args.formats}
    variants = [v for v in VARIANTS if v.name in args.variants]
    print(f"corpus: {stats['documents']:,} docs, {stats['text_bytes'] / 1e6:.1f} MB text", file=sys.stderr)

    runs: dict[tuple[str, str], list[RunResult]] = {(f, v.name): [] for f in args.formats for v in variants}
    for repeat in range(args.repeats):
        for fmt in args.formats:
            for variant in variants:
                result = run_once(variant, paths[fmt], stats["documents"])
                runs[(fmt, variant.name)].append(result)
                print(f"[{repeat + 1}/{args.repeats}] {fmt:<8} {variant.name:<10} wall {result.wall_seconds:6.2f} s"
                      f"  peak RSS {result.peak_rss_mb or 0:6.0f} MB", file=sys.stderr)

    report = {
        "benchmark": "read_bench",
        "command": "python benchmarks/read_bench.py " + " ".join(argv) if argv else "python benchmarks/read_bench.py",
        "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "repeats": args.repeats,
        "machine": machine_info(),
        "corpus": {**stats, "copies": args.copies, "file_bytes": file_bytes},
        "job_overrides": list(JOB_OVERRIDES),
        "target_ratio": TARGET_RATIO,
        "results": summarise(runs, stats, file_bytes),
        "raw": {f"{fmt}/{name}": [dataclasses.asdict(r) for r in results] for (fmt, name), results in runs.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(markdown_report(report), encoding="utf-8")
    print(markdown_table(report["results"]))
    print(f"\nwrote {args.out} and {args.out.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
