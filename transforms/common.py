"""What every stage's kernels and Beam modules share (Beam-free).

* ``METRICS_NAMESPACE``: the namespace of every counter the job reads back.
* Document keys: ``document_keys`` names a document by xxh3-64 of its id, the
  same number in every run, every shard count and every snapshot, so that a
  later run (a refresh) can join against it. A row's shard is that key modulo
  the shard count (``shard_of``).
* ``split_by``: rows grouped by an integer key, the one sort-and-split every
  stage uses to route arrays to shuffle keys.
* ``sort_table`` / ``is_sorted``: the total, reproducible row order of a shard.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

METRICS_NAMESPACE = "corpusmill"

Ids = pa.Array | pa.ChunkedArray | Sequence[str]


def document_keys(ids: Ids) -> np.ndarray:
    """Stable 64-bit keys of document ids: xxh3-64 of the UTF-8 id.

    Args:
        ids: Document ids (an Arrow string array or a sequence of str).

    Returns:
        int64 keys (the uint64 digest's bits), one per id. Distinct ids can
        share a key (about ``n² / 2^65`` pairs expected for ``n`` ids); callers
        that name documents by key detect that with ``key_collisions``.
    """
    values = ids.to_pylist() if hasattr(ids, "to_pylist") else ids
    digest = xxhash.xxh3_64_intdigest
    hashes = np.fromiter((digest(v.encode("utf-8")) for v in values), dtype=np.uint64, count=len(values))
    return hashes.view(np.int64)


def shard_of_keys(keys: np.ndarray, num_shards: int) -> np.ndarray:
    """The shard of each document key: the unsigned key modulo ``num_shards``."""
    keys = np.asarray(keys, dtype=np.int64)
    if num_shards == 1:
        return np.zeros(keys.shape[0], dtype=np.int64)
    return (keys.view(np.uint64) % np.uint64(num_shards)).astype(np.int64)


def shard_of(ids: Ids, num_shards: int) -> np.ndarray:
    """Stable shard numbers of string keys: ``document_keys(ids)`` modulo ``num_shards``."""
    if num_shards == 1:
        return np.zeros(len(ids), dtype=np.int64)
    return shard_of_keys(document_keys(ids), num_shards)


def key_collisions(keys: np.ndarray) -> np.ndarray:
    """A mask of the rows whose key an earlier row already has (distinct ids assumed).

    Args:
        keys: int64 document keys of distinct ids.

    Returns:
        True for every row but the first (in the given row order) of each key.
    """
    keys = np.asarray(keys, dtype=np.int64)
    repeat = np.zeros(keys.shape[0], dtype=bool)
    if keys.shape[0] < 2:
        return repeat
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    repeat[order[1:]] = sorted_keys[1:] == sorted_keys[:-1]
    return repeat


def split_by(keys: np.ndarray, *arrays: np.ndarray) -> Iterator[tuple[int, tuple[np.ndarray, ...]]]:
    """Yields ``(key, sub-arrays)`` for each distinct key, ascending, arrays split row-wise.

    Rows keep their relative order within a key (a stable sort).
    """
    keys = np.asarray(keys)
    if keys.size == 0:
        return
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    bounds = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    for rows in np.split(order, bounds):
        yield int(keys[rows[0]]), tuple(a[rows] for a in arrays)


def is_sorted(table: pa.Table, keys: Sequence[str]) -> bool:
    """Whether rows already follow ``keys`` ascending, nulls first (ties allowed).

    One vectorised comparison of each row with the next per key, far cheaper
    than a sort: a shard's rows usually arrive ordered. Floating-point keys
    (NaN placement) and types Arrow cannot compare report False, so the
    caller sorts.
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


def sort_table(table: pa.Table, keys: Sequence[str]) -> pa.Table:
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
