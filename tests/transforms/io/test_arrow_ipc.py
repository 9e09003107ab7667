"""Arrow IPC pieces: large tables cross a shuffle in pieces and come back with their chunks."""

from __future__ import annotations

import pyarrow as pa

from corpusmill.transforms.io import arrow_ipc


def test_docs_cross_the_shuffle_in_pieces_and_come_back_with_their_chunks(real_texts, monkeypatch):
    monkeypatch.setattr(arrow_ipc, "PIECE_BYTES", 50_000)
    chunks = [pa.table({"id": [f"d{i}" for i in range(n)], "text": real_texts[:n]}) for n in (40, 1, 120)]
    table = pa.concat_tables(chunks)
    pieces = list(arrow_ipc.table_pieces(table))
    assert len(pieces) > 3
    assert max(len(encoded) for _, _, encoded in pieces) < 4 * 50_000 + max(map(len, real_texts[:120])) * 4
    # Pieces arrive in any order; the table comes back with the same chunk boundaries.
    rebuilt = arrow_ipc.table_from_pieces(reversed(pieces))
    assert rebuilt.equals(table)
    assert [len(c) for c in rebuilt.column("text").chunks] == [len(c) for c in table.column("text").chunks]
    empty = table.schema.empty_table()
    (only,) = arrow_ipc.table_pieces(empty)
    assert arrow_ipc.table_from_pieces([only]).num_rows == 0
