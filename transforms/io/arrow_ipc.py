"""Arrow IPC bytes for values that cross a shuffle (Beam-free).

The Arrow IPC stream format is cheaper to write than a pickle and its reader
wraps the received bytes without copying them. Large tables cross in pieces
of about ``PIECE_BYTES``: the FnApiRunner's data plane copies an element
several times on its way through a GroupByKey, and a 60 MB table moved as one
element cost about twice as much as the same table in ~1 MB pieces.
"""

from __future__ import annotations

import itertools
from typing import Iterable, Iterator

import pyarrow as pa

PIECE_BYTES = 1 << 20


def encode_ipc(value: pa.RecordBatch | pa.Table) -> bytes:
    """One Arrow IPC stream holding the batch or table (a table keeps its chunks)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, value.schema) as writer:
        writer.write(value)
    return sink.getvalue().to_pybytes()


def decode_table(encoded: bytes) -> pa.Table:
    """The table of one IPC stream, with the chunks it was written with."""
    return pa.ipc.open_stream(pa.py_buffer(encoded)).read_all()


def decode_batch(encoded: bytes) -> pa.RecordBatch:
    """The record batch of one IPC stream (several batches are combined into one)."""
    reader = pa.ipc.open_stream(pa.py_buffer(encoded))
    batches = list(reader)
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches, schema=reader.schema).combine_chunks().to_batches()[0]


def table_pieces(table: pa.Table) -> Iterator[tuple[int, int, bytes]]:
    """``(chunk, part, IPC bytes)`` pieces of about ``PIECE_BYTES`` of a table.

    Pieces are slices of the table's chunks, numbered so that
    ``table_from_pieces`` rebuilds exactly the chunks it was given, in their
    order: the Parquet writer's output depends on chunk boundaries, and the
    rows must not change bytes with the piece size or the order pieces arrive in.
    """
    batches = table.to_batches()
    if not batches:
        yield 0, 0, encode_ipc(table)
        return
    for chunk, batch in enumerate(batches):
        rows = max(1, -(-batch.num_rows * PIECE_BYTES // max(1, batch.nbytes)))
        for part, start in enumerate(range(0, max(1, batch.num_rows), rows)):
            yield chunk, part, encode_ipc(pa.Table.from_batches([batch.slice(start, rows)], schema=table.schema))


def table_from_pieces(pieces: Iterable[tuple[int, int, bytes]]) -> pa.Table:
    """Inverse of ``table_pieces``: the table with its original chunks."""
    chunks = []
    for _, parts in itertools.groupby(sorted(pieces, key=lambda p: p[:2]), key=lambda p: p[0]):
        tables = [decode_table(encoded) for _, _, encoded in parts]
        chunks.append(tables[0] if len(tables) == 1 else pa.concat_tables(tables).combine_chunks())
    return chunks[0] if len(chunks) == 1 else pa.concat_tables(chunks)
