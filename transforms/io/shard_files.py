"""Deterministic sharded Parquet files: one encoder for every output (Beam-free).

Beam's WriteToParquet deals whole tables round-robin from a random offset, so
its shard contents change from run to run. Here a row's shard is a pure
function of its key (``common.shard_of``), every shard's rows follow the
output's declared order, and the Parquet bytes depend only on the rows and
the writer options, so the same input and config give byte-identical files.

An ``OutputSpec`` declares one output: its folder, columns, row order and
encoding. Every output of a job, whichever stage makes it, is encoded by
``encode_shard`` and written by the one Beam writer
(``corpusmill.transforms.io.beam.shards.WriteShards``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from corpusmill.schemas.documents import DOCUMENT_SCHEMA, DUPLICATE_SCHEMA, REJECTED_SCHEMA
from corpusmill.transforms.common import sort_table


@dataclass(frozen=True)
class ParquetOptions:
    """How shards are encoded."""

    compression: str = "zstd"
    compression_level: int | None = None
    row_group_rows: int = 8192


@dataclass(frozen=True)
class OutputSpec:
    """One sharded output of a snapshot.

    Attributes:
        name: Folder under the snapshot, e.g. ``docs`` or ``buckets/len-00256``.
        schema: Columns and types written.
        sort_keys: Columns that totally order a shard's rows (``("id",)`` for
            documents, ``("position",)`` for an ordered output), or None when
            the order rows arrive in is the order to keep.
        count_by: Optional column whose value counts go into each shard's record
            (``count_by``), e.g. rejection reasons for the manifest.
        row_group_rows: Rows per Parquet row group, when not the job's
            ``output.row_group_rows`` (long token rows want smaller groups).
    """

    name: str
    schema: pa.Schema
    sort_keys: tuple[str, ...] | None = ("id",)
    count_by: str | None = None
    row_group_rows: int | None = None

    def parquet(self, options: ParquetOptions) -> ParquetOptions:
        """The job's Parquet options with this output's row group size."""
        if self.row_group_rows is None:
            return options
        return dataclasses.replace(options, row_group_rows=self.row_group_rows)


def shard_name(output: str, shard: int, num_shards: int) -> str:
    """The relative path of one shard, e.g. ``docs/part-00003-of-00016.parquet``."""
    return f"{output}/part-{shard:05d}-of-{num_shards:05d}.parquet"


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


def shard_record(output: str, shard: int, num_shards: int, rows: int, data: bytes | pa.Buffer) -> dict:
    """The manifest entry of one written shard."""
    return {
        "kind": "shard",
        "output": output,
        "shard": shard,
        "path": shard_name(output, shard, num_shards),
        "rows": rows,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def encode_shard(spec: OutputSpec, shard: int, num_shards: int, table: pa.Table,
                 options: ParquetOptions) -> tuple[dict, pa.Buffer]:
    """Orders, casts and encodes one shard of an output.

    Args:
        spec: The output.
        shard: Shard number.
        num_shards: Shards of the output (the ``of-NNNNN`` in the name).
        table: The shard's rows, with at least the spec's columns.
        options: The job's Parquet options.

    Returns:
        ``(record, data)``: the shard's manifest record (with ``count_by``
        when the spec asks for it) and the file's bytes.
    """
    if spec.sort_keys:
        table = sort_table(table, spec.sort_keys)
    table = table.select(spec.schema.names).cast(spec.schema)
    data = encode_parquet(table, spec.parquet(options))
    record = shard_record(spec.name, shard, num_shards, table.num_rows, data)
    if spec.count_by:
        counts = pc.value_counts(table.column(spec.count_by)).to_pylist()
        record["count_by"] = {c["values"]: c["counts"] for c in counts}
    return record, data


# The outputs every snapshot has: together they account for every input record.
REJECTED_SORT_KEYS = ("source", "record_index", "locator", "reason", "detail")
DOCS = OutputSpec("docs", DOCUMENT_SCHEMA, ("id",))
DUPLICATES = OutputSpec("duplicates", DUPLICATE_SCHEMA, ("id",), count_by="kind")
REJECTED = OutputSpec("rejected", REJECTED_SCHEMA, REJECTED_SORT_KEYS, count_by="reason")
