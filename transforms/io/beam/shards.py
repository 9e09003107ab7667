"""ShardBatches and WriteShards: the one way rows are grouped into shards and written.

A row's shard is a pure function of its key (``common.shard_of``); every
output, whichever stage makes it, is written by ``WriteShards`` from its
``OutputSpec`` (columns, row order, encoding), so the same rows give the same
bytes (see ``corpusmill.transforms.io.shard_files``).
"""

from __future__ import annotations

import time
import typing
from typing import Iterable, Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics

from corpusmill.transforms.common import METRICS_NAMESPACE, shard_of, split_by
from corpusmill.transforms.io.beam import coders  # noqa: F401  (registers the Arrow coders)
from corpusmill.transforms.io.beam.files import write_bytes
from corpusmill.transforms.io.shard_files import OutputSpec, ParquetOptions, encode_shard


def split_by_shard(batch: pa.RecordBatch, key_column: str, num_shards: int
                   ) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Splits a batch into (shard, sub-batch) pairs, one per shard that has rows."""
    if num_shards == 1 or batch.num_rows == 0:
        if batch.num_rows:
            yield 0, batch
        return
    shards = shard_of(batch.column(key_column), num_shards)
    for shard, (rows,) in split_by(shards, np.arange(batch.num_rows)):
        yield shard, batch.take(pa.array(rows))


class _KeyByShardDoFn(beam.DoFn):
    def __init__(self, key_column: str, num_shards: int):
        self._key_column = key_column
        self._num_shards = num_shards

    def process(self, batch: pa.RecordBatch):
        yield from split_by_shard(batch, self._key_column, self._num_shards)


def _concat(element: tuple[int, Iterable[pa.RecordBatch]]) -> tuple[int, pa.Table]:
    shard, batches = element
    # Chunks stay as they arrived: every consumer sorts or filters, which copies once anyway.
    return shard, pa.Table.from_batches(list(batches))


class ShardBatches(beam.PTransform):
    """Groups record batches into shards by a stable hash of a key column.

    Input: ``pyarrow.RecordBatch``. Output: ``(shard: int, pyarrow.Table)``, one
    element per non-empty shard, holding every row whose key hashes to it.
    The shuffle moves sub-batches, never single rows.
    """

    def __init__(self, key_column: str, num_shards: int):
        super().__init__()
        self._key_column = key_column
        self._num_shards = num_shards

    def expand(self, batches):
        return (
            batches
            | "KeyByShard" >> beam.ParDo(_KeyByShardDoFn(self._key_column, self._num_shards)
                                         ).with_output_types(typing.Tuple[int, pa.RecordBatch])
            | "GroupByShard" >> beam.GroupByKey()
            | "ConcatShard" >> beam.Map(_concat)
        )


class _WriteShardDoFn(beam.DoFn):
    def __init__(self, spec: OutputSpec, staging_dir: str, num_shards: int, options: ParquetOptions):
        self._spec = spec
        self._staging_dir = staging_dir
        self._num_shards = num_shards
        self._options = options
        self._rows = Metrics.counter(METRICS_NAMESPACE, f"{spec.name}_rows_written")
        self._time = Metrics.counter(METRICS_NAMESPACE, f"time_write_{spec.name}_ms")

    def process(self, element: tuple[int, pa.Table | pa.RecordBatch]):
        started = time.perf_counter()
        shard, table = element
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        record, data = encode_shard(self._spec, shard, self._num_shards, table, self._options)
        write_bytes(f"{self._staging_dir}/{record['path']}", data)
        self._rows.inc(record["rows"])
        self._time.inc(int((time.perf_counter() - started) * 1000))
        yield record


class WriteShards(beam.PTransform):
    """Writes one output's shards under a staging directory.

    Input: ``(shard: int, pyarrow.Table | pyarrow.RecordBatch)``, at most one
    element per shard. Output: one dict per written shard (kind, output,
    shard, path, rows, bytes, sha256, and ``count_by`` when the spec asks);
    the job renames the staged files into place once the whole pipeline has
    succeeded, and writes empty files for the shards no row went to.

    Args:
        spec: The output: folder, columns, row order, row group size.
        staging_dir: Where shards are written under their final relative names.
        num_shards: Shards of the output.
        options: The job's Parquet encoding.
    """

    def __init__(self, spec: OutputSpec, staging_dir: str, num_shards: int, options: ParquetOptions):
        super().__init__()
        self._args = (spec, staging_dir, num_shards, options)

    def expand(self, shards):
        return shards | "WriteParquetShard" >> beam.ParDo(_WriteShardDoFn(*self._args))
