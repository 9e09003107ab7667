"""The corpusmill job: plan, build the Beam pipeline, run it, publish the snapshot.

``build_pipeline`` only wires transforms. ``run_job`` does what must happen
outside the pipeline: expanding inputs before any worker starts, choosing the
shard count, and publishing the snapshot only after the pipeline succeeded.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import importlib.resources
import json
import math
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, TestOptions

from corpusmill.jobs.report import render_report
from corpusmill.schemas import manifest as manifest_lib
from corpusmill.schemas.config import JobConfig, to_dict
from corpusmill.schemas.documents import DOCUMENT_SCHEMA, DUPLICATE_SCHEMA, REJECTED_SCHEMA
from corpusmill.transforms import snapshot
from corpusmill.transforms.inputs import InputFile, expand_inputs, plan_read_tasks
from corpusmill.transforms.read import METRICS_NAMESPACE, ReadDocuments
from corpusmill.transforms.shards import (
    DOCUMENT_SORT_KEYS,
    REJECTED_SORT_KEYS,
    ParquetOptions,
    ShardBatches,
    WriteShards,
    resolve_duplicate_ids,
    write_bytes,
)

PUBLISHED = ("docs", "duplicates", "rejected", "buckets", "report.html")
DEFAULT_RUNNER = "FnApiRunner"


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
    return JobPlan(config, files, tasks, num_shards, partitioning, parquet)


class _ResolveIdsDoFn(beam.DoFn):
    """Per shard: keeps the first record of each id, rejects later repeats."""

    def process(self, element):
        shard, table = element
        unique, rejected = resolve_duplicate_ids(table)
        if rejected.num_rows:
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, "rejected_duplicate_id").inc(rejected.num_rows)
            for batch in rejected.to_batches():
                yield beam.pvalue.TaggedOutput("rejected", batch)
        yield shard, unique


def _write_results(records: list[dict], staging: str) -> None:
    write_bytes(f"{staging}/{snapshot.RESULTS_NAME}",
                json.dumps(records, sort_keys=True).encode("utf-8"))


def _tag(kind: str):
    return lambda stats: {"kind": kind, "stats": stats}


def build_pipeline(pipeline: beam.Pipeline, plan: JobPlan, staging: str) -> None:
    """Wires read -> validate -> unique ids -> dedup -> sharded Parquet onto ``pipeline``."""
    n = plan.num_shards
    # One shard read by one task: the task's documents are the shard, no shuffle needed.
    collect = n == 1 and len(plan.tasks) == 1
    read = pipeline | "ReadDocuments" >> ReadDocuments(plan.tasks, plan.config.input, collect_shard=collect)
    shards = read.docs if collect else read.docs | "ShardDocuments" >> ShardBatches("id", n)
    unique = shards | "ResolveDuplicateIds" >> beam.ParDo(_ResolveIdsDoFn()).with_outputs(
        "rejected", main="docs")
    results = []
    kept = unique.docs
    # Stage modules are imported only when the stage runs: they pull in numba,
    # datasketch and tokenizers, which a read-only job should not pay for.
    if plan.config.dedup.enabled:
        from corpusmill.transforms.dedup import Deduplicate

        deduped = unique.docs | "Deduplicate" >> Deduplicate(
            plan.config.dedup, n, single_partition=plan.partitioning["mode"] == "single")
        kept = deduped["docs"]
        results.append(
            deduped["duplicates"]
            | "ShardDuplicates" >> ShardBatches("id", n)
            | "WriteDuplicates" >> WriteShards(
                "duplicates", staging, n, DUPLICATE_SCHEMA, ["id"], plan.parquet, count_by="kind"))
        results.append(deduped["stats"] | "TagDedupStats" >> beam.Map(_tag("dedup")))
    results.append(kept | "WriteDocuments" >> WriteShards(
        "docs", staging, n, DOCUMENT_SCHEMA, DOCUMENT_SORT_KEYS, plan.parquet))
    if plan.config.decompose.enabled:
        from corpusmill.transforms.buckets import DecomposeDocuments

        decomposed = kept | "DecomposeDocuments" >> DecomposeDocuments(
            plan.config.decompose, staging, plan.parquet, n)
        results += [decomposed.shards, decomposed.stats]
    rejected_shards = (
        (read.rejected, unique.rejected)
        | "AllRejected" >> beam.Flatten()
        | "ShardRejected" >> ShardBatches("source", n)
        | "WriteRejected" >> WriteShards(
            "rejected", staging, n, REJECTED_SCHEMA, REJECTED_SORT_KEYS, plan.parquet, count_by="reason")
    )
    _ = (
        (read.stats, rejected_shards, *results)
        | "AllResults" >> beam.Flatten()
        | "CollectResults" >> beam.CombineGlobally(beam.combiners.ToListCombineFn())
        | "WriteResults" >> beam.Map(_write_results, staging)
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


def run_job(config: JobConfig, beam_args: list[str] = ()) -> dict[str, Any] | None:
    """Runs a whole job and publishes its snapshot.

    Args:
        config: The validated job configuration.
        beam_args: Beam PipelineOptions flags (``--runner``, ``--project``, ...).

    Returns:
        The manifest, or None for a ``--dry_run`` (translation only, nothing written).
    """
    started = time.perf_counter()
    created_at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    plan = plan_job(config)
    out = plan.config.output.path.rstrip("/")
    options = pipeline_options(beam_args)
    dry_run = options.view_as(TestOptions).dry_run
    staging = snapshot.prepare_output(out, plan.config.output.overwrite or dry_run, PUBLISHED)
    planned = time.perf_counter()
    try:
        pipeline = beam.Pipeline(options=options)
        build_pipeline(pipeline, plan, staging)
        result = pipeline.run()
        result.wait_until_finish()
        if dry_run:
            return None
        state = result.state
        if state != beam.runners.runner.PipelineState.DONE:
            raise RuntimeError(f"pipeline ended in state {state}")
        ran = time.perf_counter()
        records = snapshot.read_results(staging)
        read_stats = [r for r in records if r.get("kind") == "read"]
        shards = [r for r in records if r.get("kind") == "shard"]
        stage_stats = {r["kind"]: r["stats"] for r in records if "stats" in r}
        outputs = {}
        decompose = plan.config.decompose
        buckets = []
        if decompose.enabled:
            from corpusmill.transforms.buckets import BUCKET_SCHEMA, bucket_outputs

            buckets = [(name, BUCKET_SCHEMA) for name in bucket_outputs(decompose)]
        for name, schema in (("docs", DOCUMENT_SCHEMA), ("duplicates", DUPLICATE_SCHEMA),
                             ("rejected", REJECTED_SCHEMA), *buckets):
            written = [s for s in shards if s["output"] == name]
            outputs[name] = snapshot.fill_missing_shards(name, staging, plan.num_shards, written, schema,
                                                         plan.parquet)
        counters, stage_ms = _counters(result)
        decompose_stats = None
        if decompose.enabled:
            from corpusmill.transforms.bucket_stats import merge_decompose_stats

            decompose_stats = merge_decompose_stats(records)
            # Times vary between identical runs; the time_decompose_* counters already carry them.
            decompose_stats.pop("timings_ms", None)
        manifest = manifest_lib.build_manifest(
            job_name=plan.config.name,
            config=to_dict(plan.config),
            code_version=code_version(),
            read_stats=read_stats,
            outputs=outputs,
            rejected_by_reason=manifest_lib.sum_value_counts([s.get("count_by", {}) for s in outputs["rejected"]]),
            duplicates_by_kind=manifest_lib.sum_value_counts(
                [s.get("count_by", {}) for s in outputs["duplicates"]]),
            stages={
                **{name: stage_stats[name] for name in ("dedup",) if name in stage_stats},
                **({"decompose": decompose_stats} if decompose_stats else {}),
            },
            execution={
                "runner": str(options.view_as(StandardOptions).runner),
                "read_tasks": len(plan.tasks),
                "partitioning": plan.partitioning,
            },
            counters=counters,
            timings={
                "plan_seconds": round(planned - started, 3),
                "pipeline_seconds": round(ran - planned, 3),
                "stage_ms": stage_ms,
            },
            created_at=created_at,
        )
        published_at = time.perf_counter()
        manifest["timings"]["wall_seconds"] = round(published_at - started, 3)
        snapshot.publish(out, staging, outputs, manifest, PUBLISHED, render_report(manifest))
        return manifest
    finally:
        snapshot.discard(staging)
