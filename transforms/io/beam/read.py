"""ReadDocuments and ResolveDuplicateIds: input files in, validated documents with unique ids out."""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict
from typing import Iterator

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from corpusmill.schemas.config import InputConfig
from corpusmill.transforms.common import METRICS_NAMESPACE
from corpusmill.transforms.io.beam.files import open_raw
from corpusmill.transforms.io.beam.snapshot import checkpoint
from corpusmill.transforms.io.formats import read_file
from corpusmill.transforms.io.inputs import InputFile
from corpusmill.transforms.io.unique_ids import resolve_duplicate_ids
from corpusmill.transforms.io.validate import BatchBuilder, FieldMap

REJECTED_TAG = "rejected"
STATS_TAG = "stats"


class _ReadTaskDoFn(beam.DoFn):
    """Reads one task (a tuple of files) into document and rejected batches."""

    def __init__(self, config: InputConfig, collect_shard: bool = False):
        self._config = config
        self._collect_shard = collect_shard
        self._counters: dict[str, beam.metrics.metricbase.Counter] = {}

    def _count(self, name: str, n: int) -> None:
        counter = self._counters.get(name)
        if counter is None:
            counter = self._counters[name] = Metrics.counter(METRICS_NAMESPACE, name)
        counter.inc(n)

    def process(self, task: tuple[InputFile, ...]) -> Iterator:
        config = self._config
        started = time.perf_counter()
        checkpoint("reading")
        builder = BatchBuilder(
            FieldMap(config.text_field, config.id_field, config.url_field,
                     config.timestamp_field, config.source_field),
            config.max_text_bytes, config.batch_rows, self._count)
        file_stats = []
        docs: list[pa.RecordBatch] = []
        outputs = itertools.chain.from_iterable(
            [*(read_file(file, open_raw, builder) for file in task), builder.take(final=True)])
        for tag, value in outputs:
            if tag == "stats":
                file_stats.append(asdict(value))
            elif tag == "docs" and self._collect_shard:
                docs.append(value)
            else:
                yield _tagged(tag, value)
        if docs:
            yield 0, pa.Table.from_batches(docs)
        self._count("input_records", sum(s["records"] for s in file_stats))
        self._count("time_read_ms", int((time.perf_counter() - started) * 1000))
        yield beam.pvalue.TaggedOutput(STATS_TAG, {"kind": "read", "files": file_stats})


def _tagged(tag: str, batch):
    return batch if tag == "docs" else beam.pvalue.TaggedOutput(REJECTED_TAG, batch)


class ReadDocuments(beam.PTransform):
    """Reads and validates planned input files.

    Input: PBegin. Output: a DoOutputsTuple with
      - main: ``pyarrow.RecordBatch`` of ``DOCUMENT_BATCH_SCHEMA``, or with
        ``collect_shard``, one ``(0, pyarrow.Table)`` holding every document
        (no element when there are none), as ``ShardBatches`` with one shard
        would give;
      - ``rejected``: ``pyarrow.RecordBatch`` of ``REJECTED_SCHEMA``;
      - ``stats``: one dict per read task (files, their digests and record counts).

    Args:
        tasks: Read tasks from ``plan_read_tasks``.
        config: The input section of the job.
        collect_shard: The job writes one shard and reads one task: the task's
            documents then already are the whole shard, and handing them on as
            one table saves a shuffle of every document. Refused for more than
            one task, whose documents only a shuffle can bring together.
    """

    def __init__(self, tasks: list[tuple[InputFile, ...]], config: InputConfig, collect_shard: bool = False):
        super().__init__()
        if collect_shard and len(tasks) != 1:
            raise ValueError(f"collect_shard needs exactly one read task, not {len(tasks)}")
        self._tasks = tasks
        self._config = config
        self._collect_shard = collect_shard

    def expand(self, pbegin):
        tasks = pbegin | "CreateReadTasks" >> beam.Create(self._tasks, reshuffle=False)
        if len(self._tasks) > 1:
            # Spread tasks over workers: Create emits them all in one bundle.
            tasks = tasks | "SpreadReadTasks" >> beam.Reshuffle()
        return tasks | "ReadAndValidate" >> beam.ParDo(
            _ReadTaskDoFn(self._config, self._collect_shard)).with_outputs(REJECTED_TAG, STATS_TAG, main="docs")


class _ResolveIdsDoFn(beam.DoFn):
    """Per shard: keeps the first record of each id, rejects later repeats."""

    def process(self, element):
        shard, table = element
        unique, rejected = resolve_duplicate_ids(table)
        if rejected.num_rows:
            Metrics.counter(METRICS_NAMESPACE, "rejected_duplicate_id").inc(rejected.num_rows)
            for batch in rejected.to_batches():
                yield beam.pvalue.TaggedOutput(REJECTED_TAG, batch)
        yield shard, unique


class ResolveDuplicateIds(beam.PTransform):
    """Keeps one record per id in every shard.

    Input: ``(shard, pyarrow.Table)`` holding every record whose id hashes to
    the shard. Output: a DoOutputsTuple with main ``(shard, pyarrow.Table)``,
    the unique documents sorted by id, and ``rejected``: ``pyarrow.RecordBatch``
    of ``REJECTED_SCHEMA``, one row per later repeat of an id.
    """

    def expand(self, shards):
        return shards | "KeepFirstOfEachId" >> beam.ParDo(_ResolveIdsDoFn()).with_outputs(
            REJECTED_TAG, main="docs")
