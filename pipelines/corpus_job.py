"""The corpusmill job: plan, build the Beam pipeline, run it, publish the snapshot.

``build_pipeline`` only wires transforms. ``run_job`` does what must happen
outside the pipeline: expanding inputs before any worker starts, choosing the
shard count, and publishing the snapshot only after the pipeline succeeded.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import importlib.resources
import math
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, TestOptions

from corpusmill.pipelines.stages import StageEntry, enabled_stages, stage_folders
from corpusmill.schemas import manifest as manifest_lib
from corpusmill.schemas.config import JobConfig, to_dict
from corpusmill.transforms.common import METRICS_NAMESPACE
from corpusmill.transforms.io.beam import snapshot
from corpusmill.transforms.io.beam.files import expand_inputs
from corpusmill.transforms.io.beam.read import ReadDocuments, ResolveDuplicateIds
from corpusmill.transforms.io.beam.shards import ShardBatches, WriteShards
from corpusmill.transforms.io.inputs import InputFile, plan_read_tasks
from corpusmill.transforms.io.shard_files import DOCS, DUPLICATES, REJECTED, OutputSpec, ParquetOptions
from corpusmill.transforms.stage import StageContext

DEFAULT_RUNNER = "FnApiRunner"
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

    def context(self, staging: str) -> StageContext:
        """What every stage is told about this run."""
        return StageContext(self.num_shards, self.partitioning["mode"] == "single", staging, self.parquet)

    def output_specs(self, staging: str) -> list[OutputSpec]:
        """Every output this run writes: the core ones, then each stage's."""
        context = self.context(staging)
        return [*CORE_OUTPUTS, *(spec for entry, section in self.stages
                                 for spec in entry.load().output_specs(section, context))]


def published_names() -> tuple[str, ...]:
    """Everything a snapshot may publish at its top level (a replaced snapshot loses all of them)."""
    return (*(spec.name for spec in CORE_OUTPUTS), *stage_folders(), manifest_lib.REPORT_NAME)


def plan_job(config: JobConfig) -> JobPlan:
    """Expands inputs and chooses the shard count.

    A shard is sorted in one worker's memory, so its size is bounded by
    ``output.target_shard_bytes``; an input below that becomes one shard, a
    single-partition shortcut the manifest records.
    """
    if not config.input.paths:
        config = replace(config, input=replace(config.input, paths=(bundled_sample(),)))
    files = expand_inputs(config.input.paths, config.input.format)
    tasks = plan_read_tasks(files, config.input.task_bytes)
    estimated = sum(f.estimated_text_bytes for f in files)
    if config.output.num_shards:
        num_shards = config.output.num_shards
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
    return JobPlan(config, files, tasks, num_shards, partitioning, parquet, tuple(enabled_stages(config)))


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
    shards = read.docs if collect else read.docs | "ShardDocuments" >> ShardBatches("id", n)
    unique = shards | "ResolveDuplicateIds" >> ResolveDuplicateIds()
    docs, duplicates, results = unique.docs, [], [read.stats]
    for entry, section in plan.stages:
        stage = entry.load()
        result = docs | stage.__name__ >> stage(section, context)
        docs = result.docs
        duplicates += [result.duplicates] if result.duplicates is not None else []
        results += [result.shards] if result.shards is not None else []
        results.append(result.stats | f"Tag{stage.__name__}Stats" >> beam.Map(_tag_stage_stats, entry.name))
    results.append(docs | "WriteDocuments" >> WriteShards(DOCS, staging, n, plan.parquet))
    if duplicates:
        results.append(
            tuple(duplicates)
            | "AllDuplicates" >> beam.Flatten()
            | "ShardDuplicates" >> ShardBatches("id", n)
            | "WriteDuplicates" >> WriteShards(DUPLICATES, staging, n, plan.parquet))
    results.append(
        (read.rejected, unique.rejected)
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
    """
    options = PipelineOptions(list(beam_args))
    if not options.view_as(StandardOptions).runner:
        options.view_as(StandardOptions).runner = DEFAULT_RUNNER
    return options


def _run_pipeline(plan: JobPlan, options: PipelineOptions, staging: str):
    """Builds and runs the pipeline; the result, or None for a dry run (translation only)."""
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, plan, staging)
    result = pipeline.run()
    result.wait_until_finish()
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
            render_report: Callable[[dict[str, Any]], str] | None = None) -> dict[str, Any] | None:
    """Runs a whole job and publishes its snapshot.

    Args:
        config: The validated job configuration.
        beam_args: Beam PipelineOptions flags (``--runner``, ``--project``, ...).
        render_report: Renders report.html from the manifest (the CLI passes
            ``corpusmill.jobs.report.render_report``); it is published with the
            snapshot, before ``_SUCCESS``. None publishes no report.

    Returns:
        The manifest, or None for a ``--dry_run`` (translation only, nothing written).
    """
    started = time.perf_counter()
    created_at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    plan = plan_job(config)
    out = plan.config.output.path.rstrip("/")
    options = pipeline_options(beam_args)
    dry_run = options.view_as(TestOptions).dry_run
    staging = snapshot.prepare_output(out, plan.config.output.overwrite or dry_run, published_names())
    planned = time.perf_counter()
    try:
        result = _run_pipeline(plan, options, staging)
        if result is None:
            return None
        ran = time.perf_counter()
        records = snapshot.read_results(staging)
        outputs = _outputs(plan, staging, records)
        manifest = _manifest(plan, records, outputs, result, options, {
            "plan_seconds": round(planned - started, 3),
            "pipeline_seconds": round(ran - planned, 3),
        }, created_at)
        manifest["timings"]["wall_seconds"] = round(time.perf_counter() - started, 3)
        report = render_report(manifest) if render_report is not None else None
        snapshot.publish(out, staging, outputs, manifest, published_names(), report)
        return manifest
    finally:
        snapshot.discard(staging)
