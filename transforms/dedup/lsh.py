"""LSH candidate pairs and their verification, on numpy arrays (Beam-free kernel).

Documents are named by 64-bit integer uids. A bucket is a set of documents
that share one key: the key of one LSH band (``band_hashes``) or the 128-bit
exact hash of the normalised text. Buckets are found by sorting, never with a
Python object per document.

Stars instead of cliques
    A bucket of ``m`` documents means all ``m (m - 1) / 2`` pairs are
    candidates, but connected components only need the bucket to be connected:
    a star from the bucket's smallest uid (its *centre*) to each other member
    joins the same documents with ``m - 1`` edges. So candidate generation is
    linear in the bucket size, and a bucket of thousands of boilerplate pages
    costs thousands of edges, not millions.

Verification of star edges
    An edge is verified between its two endpoints, i.e. each member against its
    bucket's centre. Without verification (``none``) this loses nothing. With
    verification it is a (small) recall loss compared with checking all pairs:
    when the centre is similar to neither ``a`` nor ``b`` but ``a`` and ``b``
    are similar to each other, the pair ``(a, b)`` is never checked in this
    bucket. They are still joined when any other band puts them into a bucket
    whose centre is similar to both (likely: similar pairs share many bands),
    or through other members of their cluster. Precision is unaffected: every
    kept edge joins two documents that passed the check.
"""

from __future__ import annotations

from typing import Literal

import numba
import numpy as np

__all__ = [
    "VERIFY_METHODS",
    "bucket_stars",
    "collapse_copies",
    "csr_concat",
    "csr_take",
    "estimated_jaccard",
    "jaccard_pairs",
    "key_ranges",
    "unique_edges",
    "verify_edges",
]

VERIFY_METHODS = ("none", "signature", "exact")
Verify = Literal["none", "signature", "exact"]


def key_ranges(keys: np.ndarray, num_ranges: int) -> np.ndarray:
    """The range (0 .. num_ranges - 1) a bucket key belongs to, from its top bits.

    Ranges of the uint64 key space are the shuffle keys of candidate
    generation: every document with the same bucket key lands in the same
    range, and one range carries the keys of many documents as one array.

    Args:
        keys: uint64 bucket keys (first column, if 2-D).
        num_ranges: Number of ranges; a power of two.

    Returns:
        int64 range numbers, one per row.
    """
    if num_ranges < 1 or num_ranges & (num_ranges - 1):
        raise ValueError(f"num_ranges must be a power of two, got {num_ranges}")
    keys = np.asarray(keys, dtype=np.uint64)
    first = keys[:, 0] if keys.ndim == 2 else keys
    if num_ranges == 1:
        return np.zeros(first.shape[0], dtype=np.int64)
    shift = np.uint64(64 - (num_ranges.bit_length() - 1))
    return (first >> shift).astype(np.int64)


def _sort_by_key_then_uid(keys: np.ndarray, uids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row order by key (all columns), then uid, and where each run of equal keys starts.

    Args:
        keys: ``(m,)`` or ``(m, k)`` uint64 keys, ``m >= 1``.
        uids: ``(m,)`` int64 uids.

    Returns:
        ``(order, new_key)``: the sorting permutation, and a bool mask over the
        sorted rows that is True on the first row of each distinct key.
    """
    if keys.ndim == 1:
        keys = keys[:, np.newaxis]
    # lexsort's last key is the primary one: keys column 0 first, uid last, so
    # each run of equal keys is contiguous with its smallest uid first.
    order = np.lexsort([uids] + [keys[:, c] for c in range(keys.shape[1] - 1, -1, -1)])
    sorted_keys = keys[order]
    new_key = np.empty(order.shape[0], dtype=bool)
    new_key[0] = True
    new_key[1:] = np.any(sorted_keys[1:] != sorted_keys[:-1], axis=1)
    return order, new_key


def bucket_stars(keys: np.ndarray, uids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Star edges of the buckets of equal keys.

    Args:
        keys: ``(m,)`` or ``(m, k)`` uint64 keys; rows with all columns equal
            form a bucket.
        uids: ``(m,)`` int64 document uids.

    Returns:
        ``(centre, member)`` int64 arrays: for each bucket of two or more
        distinct uids, one edge from its smallest uid to every other uid.
        Repeated (key, uid) rows count once.
    """
    keys = np.asarray(keys, dtype=np.uint64)
    uids = np.asarray(uids, dtype=np.int64)
    if uids.shape[0] < 2:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    order, new_bucket = _sort_by_key_then_uid(keys, uids)
    sorted_uids = uids[order]
    bucket_start = np.maximum.accumulate(np.where(new_bucket, np.arange(order.shape[0]), 0))
    centre = sorted_uids[bucket_start]
    # A repeated (key, uid) row sits right after its first copy.
    repeat = np.empty(order.shape[0], dtype=bool)
    repeat[0] = False
    repeat[1:] = ~new_bucket[1:] & (sorted_uids[1:] == sorted_uids[:-1])
    keep = (centre != sorted_uids) & ~repeat
    return centre[keep], sorted_uids[keep]


def collapse_copies(keys: np.ndarray, uids: np.ndarray, copy_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keeps one row of each set of copies inside each bucket: the smallest uid.

    Exact duplicates (equal normalised text) have equal signatures, so they
    share every LSH bucket, and the exact stage already joins them. A band
    bucket holding ``c`` copies of each of two near-duplicate texts then needs
    one candidate edge between the two texts, not ``2c - 1``: the smallest uid
    of a set of copies stands for all of them, in every bucket alike (all the
    copies are in every bucket one of them is in). So a corpus that repeats
    its documents costs near-duplicate candidate generation and verification
    what its distinct texts cost.

    Args:
        keys: ``(m,)`` uint64 bucket keys.
        uids: ``(m,)`` int64 document uids.
        copy_keys: ``(m, k)`` uint64 exact-text hashes; rows with equal key
            and equal hash are copies.

    Returns:
        ``(keys, uids)`` without the rows that are copies of a smaller uid in
        the same bucket, in no particular order.
    """
    keys = np.asarray(keys, dtype=np.uint64)
    uids = np.asarray(uids, dtype=np.int64)
    if uids.shape[0] < 2:
        return keys, uids
    copy_keys = np.asarray(copy_keys, dtype=np.uint64).reshape(uids.shape[0], -1)
    order, first = _sort_by_key_then_uid(np.column_stack([keys, copy_keys]), uids)
    keep = order[first]
    return keys[keep], uids[keep]


def unique_edges(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drops repeated edges and self loops, orienting each edge (smaller, larger).

    Args:
        left: int64 endpoints.
        right: int64 endpoints.

    Returns:
        ``(small, large)`` int64 arrays sorted by (small, large), no repeats.
    """
    left = np.asarray(left, dtype=np.int64)
    right = np.asarray(right, dtype=np.int64)
    small = np.minimum(left, right)
    large = np.maximum(left, right)
    pairs = np.unique(np.stack([small, large], axis=1), axis=0) if small.size else np.empty((0, 2), np.int64)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return pairs[:, 0].copy(), pairs[:, 1].copy()


def estimated_jaccard(signatures_left: np.ndarray, signatures_right: np.ndarray) -> np.ndarray:
    """MinHash estimate of Jaccard similarity: the share of equal signature slots.

    Args:
        signatures_left: ``(n, num_perm)`` signatures.
        signatures_right: ``(n, num_perm)`` signatures, row-aligned with the left.

    Returns:
        float64 estimates in [0, 1], one per row.
    """
    if signatures_left.shape[0] == 0:
        return np.empty(0, dtype=np.float64)
    return np.mean(signatures_left == signatures_right, axis=1)


@numba.njit(cache=True, nogil=True)
def _nb_jaccard_pairs(values, offsets, left, right, out):
    for e in range(left.shape[0]):
        a_lo, a_hi = offsets[left[e]], offsets[left[e] + 1]
        b_lo, b_hi = offsets[right[e]], offsets[right[e] + 1]
        size_a = a_hi - a_lo
        size_b = b_hi - b_lo
        if size_a == 0 and size_b == 0:
            out[e] = 1.0
            continue
        # Merge of two sorted unique runs counts the intersection.
        common = 0
        i, j = a_lo, b_lo
        while i < a_hi and j < b_hi:
            x, y = values[i], values[j]
            if x == y:
                common += 1
                i += 1
                j += 1
            elif x < y:
                i += 1
            else:
                j += 1
        out[e] = common / (size_a + size_b - common)


def jaccard_pairs(values: np.ndarray, offsets: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Exact Jaccard similarity of pairs of sets stored in CSR layout.

    Args:
        values: Sorted unique values of each set, concatenated (e.g. uint32
            shingle hashes from ``minhash.shingle_sets``).
        offsets: int64, set ``i`` is ``values[offsets[i]:offsets[i + 1]]``.
        left: int64 set indices.
        right: int64 set indices, aligned with ``left``.

    Returns:
        float64 Jaccard similarities; two empty sets count as identical (1.0).
    """
    left = np.ascontiguousarray(left, dtype=np.int64)
    right = np.ascontiguousarray(right, dtype=np.int64)
    out = np.empty(left.shape[0], dtype=np.float64)
    if left.shape[0]:
        _nb_jaccard_pairs(np.ascontiguousarray(values), np.ascontiguousarray(offsets, dtype=np.int64),
                          left, right, out)
    return out


def verify_edges(method: Verify, threshold: float, left: np.ndarray, right: np.ndarray,
                 payload_uids: np.ndarray, payload: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Similarity of candidate edges and whether each passes the threshold.

    Args:
        method: ``none`` (every edge passes, similarity NaN), ``signature``
            (estimated Jaccard of the MinHash signatures) or ``exact`` (Jaccard
            of the shingle-hash sets).
        threshold: Minimum similarity of a kept edge.
        left: int64 uids of one endpoint.
        right: int64 uids of the other endpoint.
        payload_uids: Sorted unique int64 uids that ``payload`` describes; every
            endpoint must be among them (unless ``method`` is ``none``).
        payload: ``(signatures,)`` with one row per payload uid for
            ``signature``; ``(values, offsets)`` CSR shingle sets for ``exact``.

    Returns:
        ``(similarity, passed)``: float64 similarities and a bool mask.
    """
    if method == "none":
        return np.full(left.shape[0], np.nan), np.ones(left.shape[0], dtype=bool)
    li = np.searchsorted(payload_uids, left)
    ri = np.searchsorted(payload_uids, right)
    if left.shape[0] and (
        li.max(initial=0) >= payload_uids.shape[0] or ri.max(initial=0) >= payload_uids.shape[0]
        or np.any(payload_uids[li] != left) or np.any(payload_uids[ri] != right)
    ):
        ends = np.unique(np.concatenate([left, right]))
        missing = ends.size - int(np.isin(ends, payload_uids).sum())
        raise ValueError(
            f"{missing} of {ends.size} candidate endpoints arrived without their payload, so elements were "
            "lost between the payload and verification steps. Beam's local FnApiRunner with "
            "--direct_num_workers > 1 has dropped elements on large runs here (Beam 2.77); run with one "
            "local worker or on a distributed runner")
    if method == "signature":
        (sigs,) = payload
        similarity = estimated_jaccard(sigs[li], sigs[ri])
    elif method == "exact":
        values, offsets = payload
        similarity = jaccard_pairs(values, offsets, li, ri)
    else:
        raise ValueError(f"unknown verification method {method!r}; allowed: {', '.join(VERIFY_METHODS)}")
    return similarity, similarity >= threshold


def csr_take(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sets ``rows`` of a CSR layout, as a new CSR layout in that order.

    Args:
        values: Concatenated set values.
        offsets: int64 set boundaries (length = sets + 1).
        rows: int64 indices of the sets to take.

    Returns:
        ``(values, offsets)`` of the selected sets.
    """
    rows = np.asarray(rows, dtype=np.int64)
    starts = offsets[:-1][rows]
    counts = offsets[1:][rows] - starts
    new_offsets = np.zeros(rows.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=new_offsets[1:])
    positions = np.repeat(starts - new_offsets[:-1], counts) + np.arange(new_offsets[-1], dtype=np.int64)
    return values[positions], new_offsets


def csr_concat(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenates CSR layouts: the sets of the first part, then the second's, ...

    Args:
        parts: ``(values, offsets)`` pairs with values of one dtype.

    Returns:
        ``(values, offsets)`` holding all sets.
    """
    if not parts:
        return np.empty(0, dtype=np.uint32), np.zeros(1, dtype=np.int64)
    values = np.concatenate([v for v, _ in parts])
    shifted = [np.zeros(1, dtype=np.int64)]
    base = 0
    for _, offsets in parts:
        shifted.append(offsets[1:] - offsets[0] + base)
        base += int(offsets[-1] - offsets[0])
    return values, np.concatenate(shifted)


def csr_pieces(values: np.ndarray, offsets: np.ndarray, piece_bytes: int = 1 << 20):
    """Yields ``(first_set, values, offsets)`` runs of whole sets of about ``piece_bytes`` each.

    Large values cross a shuffle cheaper in pieces of about a megabyte (see
    ``corpusmill.transforms.io.arrow_ipc``).
    """
    sets = offsets.shape[0] - 1
    count = max(1, min(sets, -(-values.nbytes // piece_bytes)))
    targets = np.linspace(0, offsets[-1], count + 1)
    bounds = np.unique(np.concatenate([[0], np.searchsorted(offsets, targets[1:-1]), [sets]]))
    for first, last in zip(bounds[:-1], bounds[1:]):
        yield int(first), values[offsets[first] : offsets[last]], offsets[first : last + 1] - offsets[first]
