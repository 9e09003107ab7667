"""PlaceDocuments: the documents with their ``position``, re-sharded into contiguous ranges of the order.

Shard ``s`` of the ordered documents holds positions ``[s*n/N, (s+1)*n/N)``
(integer division), rows by position, so reading shards 0..N-1 in turn reads
the corpus in order, and each later stage sees a stretch of the order. The
text crosses this shuffle as Arrow record batches (``coders``).
"""

from __future__ import annotations

import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa

from corpusmill.schemas.documents import PATH_START
from corpusmill.transforms.common import document_keys, split_by
from corpusmill.transforms.io import arrow_ipc
from corpusmill.transforms.io.beam import coders  # noqa: F401  (registers the Arrow coders)


def position_shard(positions: np.ndarray, documents: int, num_shards: int) -> np.ndarray:
    """The ordered shard of each position: contiguous ranges of about documents / num_shards."""
    if documents <= 0:
        return np.zeros(len(positions), dtype=np.int64)
    return (np.asarray(positions, dtype=np.int64) * num_shards) // documents


def _docs_as_pieces(element):
    shard, table = element
    for piece in arrow_ipc.table_pieces(table):
        yield shard, piece


def _attach(element, placement: dict, num_shards: int):
    shard, grouped = element
    if not grouped["docs"]:
        if grouped["positions"]:
            raise RuntimeError(f"shard {shard}: positions for documents that are not there")
        return
    table = arrow_ipc.table_from_pieces(grouped["docs"])
    keys = document_keys(table.column("id"))
    dropped = np.concatenate(grouped["drops"]) if grouped.get("drops") else np.empty(0, np.int64)
    if dropped.size:
        # Documents a stage step removed (semantic duplicates) have no position.
        gone = np.isin(keys, dropped)
        if int(gone.sum()) != np.unique(dropped).size:
            raise RuntimeError(f"shard {shard}: dropped documents that are not there")
        table, keys = table.filter(pa.array(~gone)), keys[~gone]
    parts = list(grouped["positions"])
    known = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.int64)
    if known.size != table.num_rows:
        raise RuntimeError(f"shard {shard}: {table.num_rows} documents but {known.size} positions")
    if table.num_rows == 0:
        # A shard whose every document an earlier stage removed (a refresh of published input).
        return
    pos = np.concatenate([p[1] for p in parts])
    starts = np.concatenate([p[2] for p in parts])
    sorter = np.argsort(known, kind="stable")
    at = sorter[np.minimum(np.searchsorted(known, keys, sorter=sorter), known.size - 1)]
    if np.any(known[at] != keys):
        raise RuntimeError(f"shard {shard}: a document has no position")
    table = table.append_column("position", pa.array(pos[at], pa.int64()))
    table = table.append_column(PATH_START, pa.array(starts[at], pa.bool_()))
    target = position_shard(pos[at], placement["documents"], num_shards)
    for out, (rows,) in split_by(target, np.arange(table.num_rows)):
        for batch in table.take(pa.array(rows)).to_batches():
            yield out, batch


def _ordered(element):
    shard, batches = element
    table = pa.Table.from_batches(list(batches))
    return shard, table.take(pa.array(np.argsort(table.column("position").to_numpy(), kind="stable")))


class PlaceDocuments(beam.PTransform):
    """``(docs, positions, placement)`` -> ``(ordered shard, table)`` with ``position`` and the path flag.

    Args:
        num_shards: Shards of the documents.
        drops: Optional PCollection of ``(shard, keys)``: documents removed
            before the traversal (semantic duplicates), which get no position.
    """

    def __init__(self, num_shards: int, drops=None):
        super().__init__()
        self._num_shards = num_shards
        self._drops = drops

    def expand(self, pcolls):
        docs, positions, placement = pcolls
        joined = {"docs": docs | "DocsAsPieces" >> beam.FlatMap(_docs_as_pieces), "positions": positions}
        if self._drops is not None:
            joined["drops"] = self._drops
        return (
            joined
            | "JoinPositions" >> beam.CoGroupByKey()
            | "AttachPositions" >> beam.FlatMap(_attach, beam.pvalue.AsSingleton(placement), self._num_shards
                                                ).with_output_types(typing.Tuple[int, pa.RecordBatch])
            | "GroupByRange" >> beam.GroupByKey()
            | "SortByPosition" >> beam.Map(_ordered)
        )
