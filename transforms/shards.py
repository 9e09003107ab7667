"""Deterministic sharded Parquet: rows go to shards by a stable hash, sorted within a shard.

Beam's WriteToParquet deals whole tables round-robin from a random offset, so
its shard contents change from run to run. Here a row's shard is a pure
function of its key, every shard is sorted on a total order of its rows, and
the Parquet bytes depend only on the rows and the writer options, so the
same input and config give byte-identical files.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from corpusmill.schemas.documents import (
    ORIGIN_FILE,
    ORIGIN_INDEX,
    REJECTED_SCHEMA,
    RejectReason,
    excerpt,
)
from corpusmill.transforms import coders  # noqa: F401  (registers the Arrow coders)
from corpusmill.transforms.read import METRICS_NAMESPACE


@dataclass(frozen=True)
class ParquetOptions:
    """How shards are encoded."""

    compression: str = "zstd"
    compression_level: int | None = None
    row_group_rows: int = 8192


def shard_name(output: str, shard: int, num_shards: int) -> str:
    """The relative path of one shard, e.g. ``docs/part-00003-of-00016.parquet``."""
    return f"{output}/part-{shard:05d}-of-{num_shards:05d}.parquet"


def shard_of(keys: pa.Array | pa.ChunkedArray | list[str], num_shards: int) -> np.ndarray:
    """Stable shard numbers for string keys: xxh3-64 of the UTF-8 key, modulo num_shards."""
    if num_shards == 1:
        return np.zeros(len(keys), dtype=np.int64)
    values = keys.to_pylist() if hasattr(keys, "to_pylist") else keys
    digest = xxhash.xxh3_64_intdigest
    hashes = np.fromiter((digest(k.encode("utf-8")) for k in values), dtype=np.uint64, count=len(values))
    return (hashes % np.uint64(num_shards)).astype(np.int64)


def split_by_shard(batch: pa.RecordBatch, key_column: str, num_shards: int
                   ) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Splits a batch into (shard, sub-batch) pairs, one per shard that has rows."""
    shards = shard_of(batch.column(key_column), num_shards)
    if num_shards == 1 or batch.num_rows == 0:
        if batch.num_rows:
            yield 0, batch
        return
    order = np.argsort(shards, kind="stable")
    sorted_shards = shards[order]
    bounds = np.flatnonzero(np.diff(sorted_shards)) + 1
    for rows in np.split(order, bounds):
        yield int(shards[rows[0]]), batch.take(pa.array(rows))


def is_sorted(table: pa.Table, keys: list[str]) -> bool:
    """Whether rows already follow ``keys`` ascending, nulls first (ties allowed).

    One vectorised comparison of each row with the next per key, far cheaper
    than a sort: a shard's rows usually arrive ordered, because
    resolve_duplicate_ids sorts by id before the writer sorts again.
    Floating-point keys (NaN placement) and types Arrow cannot compare report
    False, so the caller sorts.
    """
    n = table.num_rows
    if n < 2:
        return True
    # Adjacent pairs whose order the keys seen so far leave open (all equal).
    undecided = np.ones(n - 1, dtype=bool)
    for key in keys:
        column = table.column(key)
        if pa.types.is_floating(column.type):
            return False
        before, after = column.slice(0, n - 1), column.slice(1)
        before_null = before.is_null().to_numpy(zero_copy_only=False)
        after_null = after.is_null().to_numpy(zero_copy_only=False)
        try:
            less = pc.fill_null(pc.less(before, after), False).to_numpy(zero_copy_only=False)
            greater = pc.fill_null(pc.greater(before, after), False).to_numpy(zero_copy_only=False)
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid, TypeError):
            return False
        less |= before_null & ~after_null
        greater |= ~before_null & after_null
        if (undecided & greater).any():
            return False
        undecided &= ~less
        if not undecided.any():
            break
    return True


def sort_table(table: pa.Table, keys: list[str]) -> pa.Table:
    """Sorts on ``keys`` ascending, nulls first, so the order is total and reproducible.

    A table already in that order is returned as it is: the sort is stable, so
    it would return the same rows in the same order.
    """
    if is_sorted(table, keys):
        return table
    try:
        indices = pc.sort_indices(table, sort_keys=[(k, "ascending", "at_start") for k in keys])
    except (TypeError, ValueError):
        # pyarrow < 25 takes one null placement for all keys.
        indices = pc.sort_indices(table, sort_keys=[(k, "ascending") for k in keys], null_placement="at_start")
    return table.take(indices)


def resolve_duplicate_ids(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Keeps the first record of each id in (origin file, origin index) order.

    Args:
        table: Documents with origin columns; all records of an id must be here
            (they are: a shard holds every record whose id hashes to it).

    Returns:
        (unique documents sorted by id, rejected rows for the later repeats).
    """
    table = sort_table(table, ["id", ORIGIN_FILE, ORIGIN_INDEX])
    ids = table.column("id")
    if table.num_rows < 2:
        return table, REJECTED_SCHEMA.empty_table()
    repeat = pc.equal(ids.slice(1), ids.slice(0, table.num_rows - 1)).to_numpy(zero_copy_only=False)
    if not repeat.any():
        return table, REJECTED_SCHEMA.empty_table()
    is_repeat = np.concatenate([[False], repeat])
    dupes = table.filter(pa.array(is_repeat))
    firsts = table.filter(pa.array(~is_repeat))
    first_origin = {}
    for doc_id, file, index in zip(firsts.column("id").to_pylist(), firsts.column(ORIGIN_FILE).to_pylist(),
                                   firsts.column(ORIGIN_INDEX).to_pylist()):
        first_origin[doc_id] = (file, index)
    rows = {name: [] for name in REJECTED_SCHEMA.names}
    for doc_id, file, index, text in zip(dupes.column("id").to_pylist(), dupes.column(ORIGIN_FILE).to_pylist(),
                                         dupes.column(ORIGIN_INDEX).to_pylist(), dupes.column("text").to_pylist()):
        kept_file, kept_index = first_origin[doc_id]
        rows["reason"].append(RejectReason.DUPLICATE_ID)
        rows["source"].append(file)
        rows["locator"].append(f"record {index}")
        rows["record_index"].append(index)
        rows["id"].append(doc_id)
        rows["detail"].append(excerpt(f"id {doc_id!r} first seen in {kept_file} record {kept_index}"))
        rows["excerpt"].append(excerpt(text))
    return firsts, pa.Table.from_pydict(rows, schema=REJECTED_SCHEMA)


def encode_parquet(table: pa.Table, options: ParquetOptions) -> pa.Buffer:
    """Serialises a table to Parquet; same rows and options give the same bytes.

    Arrow's writer cuts pages at the table's chunk boundaries, so the same rows
    in other chunks (other read batches, another read path) would give other
    bytes. Each row group is therefore written from one contiguous chunk,
    combined a row group at a time so the extra memory is one row group.

    Returns:
        The file's bytes as an Arrow buffer, written by Arrow's own in-memory
        stream (no Python file object in the write path) and never copied
        into ``bytes``. It supports the buffer protocol, so ``len``,
        ``hashlib`` and file ``write`` take it as they take ``bytes``;
        ``to_pybytes()`` makes a copy when real ``bytes`` are needed.
    """
    sink = pa.BufferOutputStream()
    rows = options.row_group_rows
    with pq.ParquetWriter(sink, table.schema, compression=options.compression,
                          compression_level=options.compression_level) as writer:
        if table.num_rows == 0:
            writer.write_table(table, row_group_size=rows)
        for start in range(0, table.num_rows, rows):
            writer.write_table(table.slice(start, rows).combine_chunks(), row_group_size=rows)
    return sink.getvalue()


def write_bytes(path: str, data: bytes | pa.Buffer) -> None:
    """Writes bytes (or any buffer, e.g. from encode_parquet) to any Beam filesystem path."""
    with FileSystems.create(path) as handle:
        # A memoryview is the bytes-like object every file handle accepts
        # without a copy; some would not take a pyarrow Buffer itself.
        handle.write(memoryview(data))


def shard_record(output: str, shard: int, num_shards: int, rows: int, data: bytes | pa.Buffer) -> dict:
    """The manifest entry of one written shard."""
    return {
        "output": output,
        "shard": shard,
        "path": shard_name(output, shard, num_shards),
        "rows": rows,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


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
    def __init__(self, output: str, staging_dir: str, num_shards: int, schema: pa.Schema,
                 sort_keys: list[str], options: ParquetOptions, count_by: str | None):
        self._output = output
        self._count_by = count_by
        self._staging_dir = staging_dir
        self._num_shards = num_shards
        self._schema = schema
        self._sort_keys = sort_keys
        self._options = options
        self._rows = Metrics.counter(METRICS_NAMESPACE, f"{output}_rows_written")
        self._time = Metrics.counter(METRICS_NAMESPACE, f"time_write_{output}_ms")

    def process(self, element: tuple[int, pa.Table]):
        started = time.perf_counter()
        shard, table = element
        table = sort_table(table, self._sort_keys).select(self._schema.names).cast(self._schema)
        data = encode_parquet(table, self._options)
        record = shard_record(self._output, shard, self._num_shards, table.num_rows, data)
        if self._count_by:
            counts = pc.value_counts(table.column(self._count_by)).to_pylist()
            record["count_by"] = {c["values"]: c["counts"] for c in counts}
        write_bytes(f"{self._staging_dir}/{record['path']}", data)
        self._rows.inc(table.num_rows)
        self._time.inc(int((time.perf_counter() - started) * 1000))
        yield {"kind": "shard", **record}


class WriteShards(beam.PTransform):
    """Writes sharded Parquet under a staging directory.

    Input: ``(shard: int, pyarrow.Table)``. Output: one dict per written shard
    (output, shard, path, rows, bytes, sha256); the caller renames the staged
    files into place once the whole pipeline has succeeded.

    Args:
        output: Output folder name, e.g. ``docs``.
        staging_dir: Where shards are written under their final relative names.
        num_shards: Total shards of this output.
        schema: Columns and types written.
        sort_keys: Columns that totally order the rows of a shard.
        options: Parquet encoding.
        count_by: Optional column whose value counts go into each shard's record
            (``count_by``), e.g. rejection reasons for the manifest.
    """

    def __init__(self, output: str, staging_dir: str, num_shards: int, schema: pa.Schema,
                 sort_keys: list[str], options: ParquetOptions, count_by: str | None = None):
        super().__init__()
        self._args = (output, staging_dir, num_shards, schema, sort_keys, options, count_by)

    def expand(self, shards):
        return shards | "WriteParquetShard" >> beam.ParDo(_WriteShardDoFn(*self._args))


DOCUMENT_SORT_KEYS = ["id"]
REJECTED_SORT_KEYS = ["source", "record_index", "locator", "reason", "detail"]
