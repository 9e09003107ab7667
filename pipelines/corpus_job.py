"""The corpusmill job: plan, build the Beam pipeline, run it, publish the snapshot.

``build_pipeline`` only wires transforms. ``run_job`` does what must happen
outside the pipeline: expanding inputs before any worker starts, choosing the
shard count, and publishing the snapshot only after the pipeline succeeded.
"""

from __future__ import annotations

import _thread
import contextlib
import datetime as dt
import importlib.metadata
import importlib.resources
import logging
import math
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, TestOptions

from corpusmill.pipelines import progress
from corpusmill.pipelines.local_runner import check_local_options, is_local_runner, run_safely
from corpusmill.pipelines.stages import StageEntry, enabled_stages, stage_folders
from corpusmill.schemas import manifest as manifest_lib
from corpusmill.schemas.config import ConfigError, JobConfig, to_dict
from corpusmill.transforms import warmup
from corpusmill.transforms.common import METRICS_NAMESPACE
from corpusmill.transforms.io.beam import snapshot
from corpusmill.transforms.io.beam.files import list_inputs
from corpusmill.transforms.io.beam.lock import OutputLock, describe_holder
from corpusmill.transforms.io.beam.read import ReadDocuments, ResolveDuplicateIds
from corpusmill.transforms.io.beam.shards import ShardBatches, WriteShards
from corpusmill.transforms.io.inputs import InputFile, SkippedFile, plan_read_tasks
from corpusmill.transforms.io.output_paths import check_output_path
from corpusmill.transforms.io.shard_files import DOCS, DUPLICATES, REJECTED, OutputSpec, ParquetOptions
from corpusmill.transforms.stage import StageContext

DEFAULT_RUNNER = "FnApiRunner"
log = logging.getLogger("corpusmill")
# A set shard count may not exceed one shard per 64 KiB of estimated text (or 64 in all):
# 100,000 shards of 8 records would write 900,000 files and a 200 MB manifest.
MIN_USEFUL_SHARD_BYTES = 64 * 1024
MIN_SHARD_CAP = 64
# Every snapshot's own outputs: together they account for every input record.
CORE_OUTPUTS = (DOCS, DUPLICATES, REJECTED)


def bundled_sample() -> str:
    """Path of the bundled sample corpus (real Linux kernel documentation)."""
    return str(importlib.resources.files("corpusmill.jobs") / "sample" / "linux-doc-sample.jsonl.zst")


@dataclass(frozen=True)
class JobPlan:
    """Everything decided before the pipeline is built."""

    config: JobConfig
    files: list[InputFile]
    tasks: list[tuple[InputFile, ...]]
    num_shards: int
    partitioning: dict[str, Any]
    parquet: ParquetOptions
    stages: tuple[tuple[StageEntry, Any], ...]
    skipped: tuple[SkippedFile, ...] = ()
    previous_index: tuple[str, ...] = ()

    def context(self, staging: str) -> StageContext:
        """What every stage is told about this run."""
        return StageContext(self.num_shards, self.partitioning["mode"] == "single", staging, self.parquet,
                            self.previous_index)

    @property
    def docs_spec(self) -> OutputSpec:
        """The documents' output: the last stage that declares a ``docs_spec`` (the order stage) decides it."""
        specs = [entry.load().docs_spec for entry, _ in self.stages if getattr(entry.load(), "docs_spec", None)]
        return specs[-1] if specs else DOCS

    def output_specs(self, staging: str) -> list[OutputSpec]:
        """Every output this run writes: the core ones, then each stage's."""
        context = self.context(staging)
        return [self.docs_spec, DUPLICATES, REJECTED, *(spec for entry, section in self.stages
                                                         for spec in entry.load().output_specs(section, context))]


def published_names() -> tuple[str, ...]:
    """Everything a snapshot may publish at its top level (a replaced snapshot loses all of them)."""
    return (*(spec.name for spec in CORE_OUTPUTS), *stage_folders(), manifest_lib.REPORT_NAME)


def plan_job(config: JobConfig, previous_index: tuple[str, ...] = ()) -> JobPlan:
    """Expands inputs and chooses the shard count.

    ``previous_index``: a refresh's previous snapshot's index files
    (``corpusmill.pipelines.refresh_job``).

    A shard is sorted in one worker's memory, so its size is bounded by
    ``output.target_shard_bytes``; an input below that becomes one shard, a
    single-partition shortcut the manifest records.
    """
    if not config.input.paths:
        config = replace(config, input=replace(config.input, paths=(bundled_sample(),)))
    stages = tuple(enabled_stages(config))
    for entry, section in stages:
        entry.load().check(section)
    listing = list_inputs(config.input.paths, config.input.format)
    files = listing.files
    tasks = plan_read_tasks(files, config.input.task_bytes)
    estimated = sum(f.estimated_text_bytes for f in files)
    if config.output.num_shards:
        num_shards = config.output.num_shards
        most = max(MIN_SHARD_CAP, math.ceil(estimated / MIN_USEFUL_SHARD_BYTES))
        if num_shards > most:
            raise ConfigError("output.num_shards", (
                f"{num_shards} shards for about {estimated:,} bytes of text would write mostly empty files; "
                f"at most {most} here (one per {MIN_USEFUL_SHARD_BYTES // 1024} KiB, at least {MIN_SHARD_CAP}), "
                f"or 0 to choose by output.target_shard_bytes"))
        reason = "output.num_shards set"
    else:
        num_shards = max(1, math.ceil(estimated / config.output.target_shard_bytes))
        reason = f"ceil(estimated {estimated} text bytes / target_shard_bytes {config.output.target_shard_bytes})"
    partitioning = {
        "mode": "single" if num_shards == 1 else "sharded",
        "num_shards": num_shards,
        "estimated_text_bytes": estimated,
        "reason": reason,
    }
    parquet = ParquetOptions(config.output.compression if config.output.compression != "none" else "none",
                             config.output.compression_level, config.output.row_group_rows)
    return JobPlan(config, files, tasks, num_shards, partitioning, parquet, stages, tuple(listing.skipped),
                   tuple(previous_index))


def _tag_stage_stats(stats: dict, name: str) -> dict:
    return {"kind": "stage", "stage": name, "stats": stats}


def build_pipeline(pipeline: beam.Pipeline, plan: JobPlan, staging: str) -> None:
    """Wires read -> validate -> unique ids -> each enabled stage -> sharded Parquet onto ``pipeline``.

    Every stage takes the kept documents and hands on its own (see
    ``corpusmill.transforms.stage``); the documents, every stage's duplicates
    and the dead letters are written last. Shard records and stats reach the
    driver through one results file in the staging directory.
    """
    n, context = plan.num_shards, plan.context(staging)
    # One shard read by one task: the task's documents are the shard, no shuffle needed.
    collect = n == 1 and len(plan.tasks) == 1
    read = pipeline | "ReadDocuments" >> ReadDocuments(plan.tasks, plan.config.input, collect_shard=collect)
    # Pass-through counting steps feed the progress log and the summary table (pipelines/progress.py).
    read_docs = read.docs | progress.Count(progress.READ, progress.DOCUMENTS)
    shards = read_docs if collect else read_docs | "ShardDocuments" >> ShardBatches("id", n)
    unique = shards | "ResolveDuplicateIds" >> ResolveDuplicateIds()
    docs, duplicates, results = unique.docs | progress.Count(progress.READ, progress.OUT), [], [read.stats]
    for entry, section in plan.stages:
        stage = entry.load()
        result = progress.counted(entry.name, docs, docs | stage.__name__ >> stage(section, context))
        docs = result.docs
        duplicates += [result.duplicates] if result.duplicates is not None else []
        results += [result.shards] if result.shards is not None else []
        results.append(result.stats | f"Tag{stage.__name__}Stats" >> beam.Map(_tag_stage_stats, entry.name))
    results.append(docs | "WriteDocuments" >> WriteShards(plan.docs_spec, staging, n, plan.parquet))
    if duplicates:
        results.append(
            tuple(duplicates)
            | "AllDuplicates" >> beam.Flatten()
            | "ShardDuplicates" >> ShardBatches("id", n)
            | "WriteDuplicates" >> WriteShards(DUPLICATES, staging, n, plan.parquet))
    results.append(
        (read.rejected | progress.Count(progress.READ, progress.REJECTED), unique.rejected)
        | "AllRejected" >> beam.Flatten()
        | "ShardRejected" >> ShardBatches("source", n)
        | "WriteRejected" >> WriteShards(REJECTED, staging, n, plan.parquet))
    _ = (
        tuple(results)
        | "AllResults" >> beam.Flatten()
        | "CollectResults" >> beam.CombineGlobally(beam.combiners.ToListCombineFn())
        | "WriteResults" >> beam.Map(snapshot.write_results, staging)
    )


def code_version() -> dict[str, Any]:
    """Versions of corpusmill and the libraries that shape its output bytes."""
    import pyarrow

    version = {
        "corpusmill": importlib.metadata.version("corpusmill"),
        "apache_beam": beam.__version__,
        "pyarrow": pyarrow.__version__,
        "git": None,
    }
    try:
        here = Path(__file__).resolve().parent
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        if sha.returncode == 0:
            version["git"] = sha.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return version


def _counters(result) -> tuple[dict[str, int], dict[str, int]]:
    counters, timings = {}, {}
    query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        name = counter.key.metric.name
        target = timings if name.startswith("time_") else counters
        target[name] = target.get(name, 0) + int(value or 0)
    return counters, timings


def pipeline_options(beam_args: list[str]) -> PipelineOptions:
    """PipelineOptions from the arguments after ``--``; the local default is FnApiRunner.

    Beam's DirectRunner would first try to download the Prism runner binary,
    which fails on machines without network access.

    Raises:
        BeamOptionError: A local run asks for Beam's time-based data-plane
            flush (``--experiments=data_buffer_time_limit_ms=N``), which loses
            elements there (``corpusmill.pipelines.local_runner``).
    """
    options = PipelineOptions(list(beam_args))
    if not options.view_as(StandardOptions).runner:
        options.view_as(StandardOptions).runner = DEFAULT_RUNNER
    check_local_options(options)
    return options


class WorkerDiedError(RuntimeError):
    """A local SDK worker process exited with an error; the runner would wait for it forever."""


@contextlib.contextmanager
def _fail_on_dead_workers():
    """Turns a local SDK worker's death into an error of the run.

    With ``--direct_running_mode=multi_processing`` the FnApiRunner starts each
    SDK worker from a thread named ``run_worker`` that raises when its process
    exits with an error (say, an import failure at start-up), and nothing
    waits for that thread: the runner keeps waiting for the worker to connect.
    The worker's own error is already on stderr; this stops the wait.
    """
    died: list[BaseException] = []
    previous = threading.excepthook
    # A signal of our own, handled here: it wakes a main thread blocked in a lock or a
    # gRPC wait at once, and works where SIGINT is ignored (a job started in the
    # background inherits SIG_IGN for SIGINT, and Python then never raises
    # KeyboardInterrupt). Off the main thread no handler can be set: interrupt_main.
    in_main = threading.current_thread() is threading.main_thread()

    def wake(signum, frame):
        raise _WorkerDied()

    previous_handler = signal.signal(signal.SIGUSR1, wake) if in_main else None

    def hook(args):
        if args.thread is not None and args.thread.name == "run_worker":
            died.append(args.exc_value)
            if in_main:
                os.kill(os.getpid(), signal.SIGUSR1)
            else:
                _thread.interrupt_main()
        previous(args)

    threading.excepthook = hook
    try:
        yield
    except (_WorkerDied, KeyboardInterrupt):
        if died:
            raise WorkerDiedError(f"an SDK worker process died ({died[0]}); its own error is printed above") from None
        raise
    finally:
        threading.excepthook = previous
        if in_main:
            signal.signal(signal.SIGUSR1, previous_handler)


class _WorkerDied(Exception):
    """Raised in the main thread by the signal a dying SDK worker's thread sends."""


def _run_pipeline(plan: JobPlan, options: PipelineOptions, staging: str):
    """Builds and runs the pipeline; its result (None for a dry run: translation only)."""
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, plan, staging)
    with _fail_on_dead_workers():
        # Locally without Beam's time-based data-plane flush, which silently drops elements in
        # multi_threading / multi_processing runs (the race: corpusmill.pipelines.local_runner).
        result = run_safely(pipeline, options)
    if options.view_as(TestOptions).dry_run:
        return None
    if result.state != beam.runners.runner.PipelineState.DONE:
        raise RuntimeError(f"pipeline ended in state {result.state}")
    return result


def _outputs(plan: JobPlan, staging: str, records: list[dict]) -> dict[str, list[dict]]:
    """Shard records per output, with empty shards written for the shard numbers no row went to."""
    shards = [r for r in records if r.get("kind") == "shard"]
    return {spec.name: snapshot.fill_missing_shards(spec, staging, plan.num_shards,
                                                    [s for s in shards if s["output"] == spec.name], plan.parquet)
            for spec in plan.output_specs(staging)}


def _manifest(plan: JobPlan, records: list[dict], outputs: dict[str, list[dict]], result,
              options: PipelineOptions, timings: dict[str, Any], created_at: str) -> dict[str, Any]:
    stage_stats = {r["stage"]: r["stats"] for r in records if r.get("kind") == "stage"}
    counters, stage_ms = _counters(result)
    return manifest_lib.build_manifest(
        job_name=plan.config.name,
        config=to_dict(plan.config),
        code_version=code_version(),
        read_stats=[r for r in records if r.get("kind") == "read"],
        input_files=[{"path": f.relpath, "format": f.format, "compression": f.compression} for f in plan.files],
        skipped=[{"path": f.path, "reason": f.reason} for f in plan.skipped],
        outputs=outputs,
        rejected_by_reason=manifest_lib.sum_value_counts([s.get("count_by", {}) for s in outputs["rejected"]]),
        duplicates_by_kind=manifest_lib.sum_value_counts([s.get("count_by", {}) for s in outputs["duplicates"]]),
        stages={entry.name: stage_stats[entry.name] for entry, _ in plan.stages},
        execution={
            "runner": str(options.view_as(StandardOptions).runner),
            "read_tasks": len(plan.tasks),
            "partitioning": plan.partitioning,
        },
        counters=counters,
        timings={**timings, "stage_ms": stage_ms},
        created_at=created_at,
    )


def run_job(config: JobConfig, beam_args: list[str] = (),
            render_report: Callable[[dict[str, Any]], str] | None = None, previous=None) -> dict[str, Any] | None:
    """Runs a whole job and publishes its snapshot.

    Args:
        config: The validated job configuration.
        beam_args: Beam PipelineOptions flags (``--runner``, ``--project``, ...).
        render_report: Renders report.html from the manifest (the CLI passes
            ``corpusmill.jobs.report.render_report``); it is published with the
            snapshot, before ``_SUCCESS``. None publishes no report.
        previous: A refresh's checked previous snapshot
            (``corpusmill.pipelines.refresh_job.Previous``): the dedup stage
            joins against its index, the manifest names it and the lineage.

    Returns:
        The manifest, or None for a ``--dry_run`` (translation only, nothing written).
    """
    started = time.perf_counter()
    created_at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    options = pipeline_options(beam_args)  # a Beam option the run cannot honour stops it before anything is read
    plan = plan_job(config, previous.index_files if previous is not None else ())
    # The later stages' numba kernels compile in a child process while this one reads and dedups.
    warmup.start([(entry.name, section) for entry, section in plan.stages],
                 local=is_local_runner(options) and not options.view_as(TestOptions).dry_run)
    out = plan.config.output.path.rstrip("/") or plan.config.output.path
    check_output_path(plan.config.output.path, plan.config.input.paths)
    if options.view_as(TestOptions).dry_run:
        # Translation only: nothing is written, so nothing is locked or staged.
        _run_pipeline(plan, options, f"{out}/{snapshot.STAGING_PREFIX}dry-run")
        return None
    with OutputLock(out) as lock:
        if lock.taken_over:
            log.warning("took over the lock of %s, which is no longer running", describe_holder(lock.taken_over))
        snapshot.checkpoint("locked")
        staging = snapshot.prepare_output(out, plan.config.output.overwrite, published_names())
        planned = time.perf_counter()
        try:
            with progress.ProgressReporter([entry.name for entry, _ in plan.stages]) as watch:
                result = _run_pipeline(plan, options, staging)
            snapshot.checkpoint("staged")
            ran = time.perf_counter()
            records = snapshot.read_results(staging)
            manifest = _manifest(plan, records, _outputs(plan, staging, records), result, options, {
                "plan_seconds": round(planned - started, 3),
                "pipeline_seconds": round(ran - planned, 3),
                "stages": watch.stage_table(result),
            }, created_at)
            if previous is not None:
                manifest["previous"], manifest["lineage"] = previous.section(), previous.lineage()
            manifest["timings"]["wall_seconds"] = round(time.perf_counter() - started, 3)
            report = render_report(manifest) if render_report is not None else None
            snapshot.publish(out, staging, manifest, published_names(), report)
            return manifest
        finally:
            snapshot.discard(staging)
