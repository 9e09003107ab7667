"""Beam's time-based data-plane flush loses elements on the local runner: a standalone reproduction.

The race (Beam 2.77.0, ``apache_beam/runners/worker/data_plane.py``):
``TimeBasedBufferingClosableOutputStream`` also flushes from a
``PeriodicThread``; ``flush()`` passes a copy of the buffer (``get()``) to the
send callback and clears the buffer afterwards (``_clear()``), and the writers
never take ``_flush_lock``. Bytes a writer appends between the copy and the
clear are cleared unsent: whole elements vanish and the pipeline ends DONE.
The window opens when the flushing thread gives up the GIL inside it (copying
a buffer of megabytes, building the message, waiting on a full send queue)
while a writer is still writing, so the streams at risk are those written to
for longer than one flush period (1 s). ``corpusmill.pipelines.local_runner``
says which side turns the flush on in which mode, and holds the workaround.

The pipeline: 20 tasks emit the elements (``--size`` bytes each, keyed over
1,000 keys); they move through a Reshuffle or a Flatten, then a GroupByKey.
Beam counters count them after emitting, after moving and after grouping;
counters travel on the control plane, not the data plane, so they are exact.
Variants (2 workers each):

* ``threads``: ``--direct_running_mode=multi_threading``. The runner's data
  server and the embedded gRPC workers both flush by time
  (``worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 1000``). 200,000 x 1 KB
  through a Reshuffle: the workers' long output streams lose elements.
* ``processes``: ``--direct_running_mode=multi_processing``. Only the runner
  flushes by time. 1,200,000 x 1 KB through a Flatten, whose output the runner
  holds and writes to the consuming stage: writing about 600 MB per worker
  takes longer than a second, and the runner's stream loses elements.
  Heavy: about 10 GB peak RSS in the runner process, a minute per run.
* ``processes-worker-flush``: multi_processing with the runner side switched
  off by hand and ``--experiments=data_buffer_time_limit_ms=1000`` handed to
  the worker processes (through the provision info, as Beam's DirectRunner
  hands them every option; the FnApiRunner alone hands them none): only the
  workers flush by time. 200,000 x 1 KB through a Reshuffle.

``off`` runs plain Beam; ``on`` runs through
``corpusmill.pipelines.local_runner.run_safely``, the call ``corpusmill run``
makes: the runner-side constant is 0 for the run, and a local run asking for
the experiment is refused before the pipeline starts. Every run is a fresh
process; runs are interleaved (a variant off, then on, then the next variant).
A run of a subset of the variants replaces their rows in ``--out`` and keeps
the others.

Usage:
    python benchmarks/beam_flush_race.py [--runs 5] [--variants threads processes-worker-flush processes]
        [--elements N] [--size 1024] [--out benchmarks/results/beam_flush_race.json]
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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "beam_flush_race.json"
CHILD_TIMEOUT_S = 900
TASKS = 20
KEYS = 1000
WORKAROUNDS = ("off", "on")


@dataclass(frozen=True)
class Variant:
    """How one variant runs: the workers' mode, the pipeline's shape, its default size, who flushes by time."""

    mode: str
    shape: str
    elements: int
    flushing: str
    worker_experiment: bool = False


VARIANTS = {
    "threads": Variant("multi_threading", "reshuffle", 200_000, "runner + workers"),
    "processes-worker-flush": Variant("multi_processing", "reshuffle", 200_000, "workers (experiment)", True),
    "processes": Variant("multi_processing", "flatten", 1_200_000, "runner"),
}


def _build(pipeline, shape: str, per_task: int, size: int) -> None:
    import apache_beam as beam
    from apache_beam.metrics import Metrics

    def counted(name: str):
        counter = Metrics.counter("flush_race", name)

        def count(element):
            counter.inc()
            return element

        return count

    def emit(task: int):
        payload = b"x" * (size - 16)
        for i in range(per_task):
            index = task * per_task + i
            yield index % KEYS, b"%016d" % index + payload

    def count_values(group):
        Metrics.counter("flush_race", "grouped").inc(sum(1 for _ in group[1]))

    emitted = (pipeline
               | "Tasks" >> beam.Create(range(TASKS))
               | "Emit" >> beam.FlatMap(emit)
               | "CountEmitted" >> beam.Map(counted("emitted")))
    if shape == "reshuffle":
        moved = emitted | "Reshuffle" >> beam.Reshuffle()
    else:
        # A Flatten of two stages' outputs is a buffer the runner holds and writes to its consumer.
        nothing = pipeline | "Nothing" >> beam.Create([]).with_output_types(tuple[int, bytes])
        moved = (emitted, nothing) | "Flatten" >> beam.Flatten()
    _ = (moved
         | "CountMoved" >> beam.Map(counted("moved"))
         | "Group" >> beam.GroupByKey()
         | "CountGrouped" >> beam.Map(count_values))


def run_in_this_process(name: str, workaround: bool, elements: int, size: int) -> dict[str, Any]:
    """One run; its counters, what was lost where, seconds and the runner's peak RSS."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import fn_runner, worker_handlers

    from corpusmill.pipelines.local_runner import BeamOptionError, run_safely

    variant = VARIANTS[name]
    args = ["--direct_num_workers=2", f"--direct_running_mode={variant.mode}"]
    runner: Any = "FnApiRunner"
    if variant.worker_experiment:
        from apache_beam.portability.api import beam_provision_api_pb2
        from apache_beam.runners.portability.portable_runner import JobServiceHandle

        args.append("--experiments=data_buffer_time_limit_ms=1000")
        encoded = JobServiceHandle.encode_pipeline_options(PipelineOptions(args).get_all_options())
        runner = fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(
            beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)))
        if not workaround:
            worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0  # the runner side off: only the workers flush by time
    options = PipelineOptions(args)
    pipeline = beam.Pipeline(runner=runner, options=options)
    per_task = elements // TASKS
    _build(pipeline, variant.shape, per_task, size)
    started = time.perf_counter()
    if workaround:
        try:
            result = run_safely(pipeline, options)
        except BeamOptionError as error:
            return {"refused": str(error)}
    else:
        result = pipeline.run()
        result.wait_until_finish()
    seconds = time.perf_counter() - started
    counters = {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]
                if c.key.metric.namespace == "flush_race"}
    emitted, moved, grouped = (counters.get(k, 0) for k in ("emitted", "moved", "grouped"))
    elements = per_task * TASKS
    return {"state": str(result.state), "elements": elements, "emitted": emitted, "moved": moved,
            "grouped": grouped, "lost": elements - grouped, "lost_moving": emitted - moved,
            "lost_grouping": moved - grouped, "seconds": round(seconds, 2),
            "runner_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def run_variant(name: str, workaround: str, elements: int = 0, size: int = 1024) -> dict[str, Any]:
    """One run of a variant in a fresh process (``elements`` 0: the variant's own size)."""
    command = [sys.executable, __file__, "--child", name, "--workaround", workaround,
               "--elements", str(elements or VARIANTS[name].elements), "--size", str(size)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        return {"error": f"exit {done.returncode}: {done.stderr[-2000:]}"}
    return {**json.loads(lines[-1][len("RESULT "):]), "exit_status": done.returncode}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant and workaround: runs, runs with loss, lost in all / per run, refusals, errors, medians."""
    rows = []
    for name in VARIANTS:
        for workaround in WORKAROUNDS:
            group = [r for r in runs if r["variant"] == name and r["workaround"] == workaround]
            if not group:
                continue
            lost = [r["lost"] for r in group if "lost" in r]
            timed = [r["seconds"] for r in group if "seconds" in r]
            rows.append({
                "variant": name, "workaround": workaround, "runs": len(group),
                "elements": max((r["elements"] for r in group if "elements" in r), default=None),
                "runs_with_loss": sum(1 for n in lost if n), "lost_total": sum(lost),
                "lost_per_run": lost, "refused": sum(1 for r in group if "refused" in r),
                "errors": sum(1 for r in group if "error" in r),
                "median_seconds": statistics.median(timed) if timed else None,
                "max_runner_peak_rss_mb": max((r["runner_peak_rss_mb"] for r in group if "runner_peak_rss_mb" in r),
                                              default=None),
            })
    return rows


def write_markdown(path: Path, record: dict[str, Any]) -> None:
    """The results table and how it was made."""
    lines = [
        "# beam_flush_race: Beam's time-based data-plane flush loses elements on the local runner",
        "",
        f"- Commands: {'; '.join(f'`{c}`' for c in record['commands'])}",
        f"- Date: {record['date']}",
        f"- Machine: {record['machine']}",
        f"- Pipeline: {TASKS} tasks emit elements of {record['size']} bytes over {KEYS} keys -> Reshuffle or "
        "Flatten -> GroupByKey; 2 workers; every run a fresh process, off and on interleaved.",
        "- lost = elements - values counted after the GroupByKey (Beam counters, exact). "
        "`on` = through `corpusmill.pipelines.local_runner.run_safely` (what `corpusmill run` does).",
        "",
        "| variant | flushes by time | elements | workaround | runs | runs with loss | lost per run | "
        "refused | errors | median s | runner peak RSS MB |",
        "|---|---|---:|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for row in record["summary"]:
        per_run = ", ".join(f"{n:,}" for n in row["lost_per_run"]) or "-"
        seconds = "-" if row["median_seconds"] is None else f"{row['median_seconds']:.1f}"
        elements = "-" if row["elements"] is None else f"{row['elements']:,}"
        rss = "-" if row["max_runner_peak_rss_mb"] is None else f"{row['max_runner_peak_rss_mb']:,}"
        flushing = VARIANTS[row["variant"]].flushing if row["workaround"] == "off" else "none"
        lines.append(
            f"| {row['variant']} | {flushing} | {elements} | {row['workaround']} | "
            f"{row['runs']} | {row['runs_with_loss']} | {per_run} | {row['refused']} | {row['errors']} | "
            f"{seconds} | {rss} |")
    lines += [
        "",
        "Every run that lost elements ended in state DONE with exit status 0. Where the loss happened "
        "(`lost_moving`: between emitting and the Reshuffle/Flatten's consumer; `lost_grouping`: across the "
        "GroupByKey) is in the JSON beside this file, per run.",
        "",
        "A stream is at risk while it is written for longer than one flush period (1 s): a worker's output "
        "stream during a bundle that emits for seconds (`threads`, `processes-worker-flush`), or the runner's "
        "stream while it writes one stage's input, which takes that long only for large inputs (`processes`: "
        "about 600 MB per worker, so runs there lose less often). `processes-worker-flush` with the "
        "workaround is refused before the pipeline starts (exit status 2 from `corpusmill run`).",
        "",
    ]
    path.with_suffix(".md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5, help="repeats of every variant, off and on")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["threads", "processes-worker-flush"])
    parser.add_argument("--elements", type=int, default=0, help="elements per run (0: each variant's own)")
    parser.add_argument("--size", type=int, default=1024, help="bytes per element (>= 16)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--workaround", choices=WORKAROUNDS, default="off", help=argparse.SUPPRESS)
    parser.add_argument("--report", action="store_true", help="only rewrite the .md from the .json at --out")
    args = parser.parse_args()
    if args.report:
        write_markdown(args.out, json.loads(args.out.read_text()))
        return
    if args.child:
        outcome = run_in_this_process(args.child, args.workaround == "on", args.elements, args.size)
        print("RESULT " + json.dumps(outcome), flush=True)
        return
    runs = []
    for repeat in range(args.runs):
        for name in args.variants:
            for workaround in WORKAROUNDS:
                outcome = {"variant": name, "workaround": workaround, "repeat": repeat,
                           **run_variant(name, workaround, args.elements, args.size)}
                runs.append(outcome)
                print(json.dumps(outcome), flush=True)
    import apache_beam

    previous = json.loads(args.out.read_text()) if args.out.exists() else {"runs": [], "commands": []}
    kept = [r for r in previous["runs"] if r["variant"] not in args.variants]
    command = "python benchmarks/beam_flush_race.py " + " ".join(sys.argv[1:])
    record = {
        "commands": [c for c in previous["commands"] if kept and c != command] + [command],
        "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "machine": f"{os.cpu_count()} cores, {platform.platform()}; Python {platform.python_version()}, "
                   f"apache-beam {apache_beam.__version__}",
        "size": args.size,
        "summary": summarise(kept + runs),
        "runs": kept + runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    write_markdown(args.out, record)
    for row in record["summary"]:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
