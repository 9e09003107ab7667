"""An independent check of a dedup result: the pairs of documents at or above a Jaccard threshold (Beam-free).

The dedup stage finds candidates with the bands x rows of its config; a check
of its output should not share that choice. ``near_pairs`` finds every pair
with exact shingle Jaccard >= ``threshold`` by brute force in all but name:
candidates come from MinHash signatures of another seed cut into many short
bands (64 bands of 2 rows: a pair at J = 0.8 escapes with probability
(1 - 0.8^2)^64, about 4e-29; at J = 0.5, 1e-8), and every candidate's Jaccard is
computed exactly from the shingle sets. Tests and benchmarks use it to check
that no kept document duplicates another and that every removed one has a
duplicate somewhere (``benchmarks/refresh_bench.py``, ``tests/pipelines/test_refresh.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from corpusmill.schemas.config import DedupConfig
from corpusmill.transforms.dedup import lsh, minhash
from corpusmill.transforms.dedup.normalize import normalize_array

AUDIT_SEED = 0x5EED_A0D1
AUDIT_BANDS = 64
AUDIT_ROWS = 2


def _bucket_pairs(keys: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of documents that share a key (one band)."""
    order = np.argsort(keys, kind="stable")
    keys, docs = keys[order], docs[order]
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    sizes = np.diff(np.concatenate([starts, [keys.size]]))
    left, right = [], []
    for start, size in zip(starts[sizes > 1], sizes[sizes > 1]):
        members = docs[start : start + size]
        i, j = np.triu_indices(size, k=1)
        left.append(members[i])
        right.append(members[j])
    if not left:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(left), np.concatenate(right)


def near_pairs(texts: Sequence[str], config: DedupConfig, threshold: float | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``(i, j)``, ``i < j``, of texts whose exact shingle Jaccard is at least ``threshold``.

    Texts are normalised and shingled as the dedup stage does with ``config``
    (its ``normalize`` and ``ngram``); texts without a shingle pair with
    nothing (exact copies of them are the exact dedup's business).

    Returns:
        ``(left, right, jaccard)``, sorted by ``(left, right)``.
    """
    normalized = normalize_array(pa.array(list(texts), pa.large_string()), config.normalize)
    return _near_pairs(normalized, config, config.threshold if threshold is None else threshold)


def _near_pairs(normalized: pa.LargeStringArray, config: DedupConfig, threshold: float):
    params = minhash.MinHashParams(AUDIT_BANDS * AUDIT_ROWS, config.ngram, AUDIT_SEED, config.scheme)
    signatures, (values, offsets) = minhash.signatures_and_shingle_sets(normalized, params)
    usable = np.flatnonzero(np.diff(offsets) > 0)
    keys = minhash.band_hashes(signatures[usable], AUDIT_BANDS, AUDIT_ROWS)
    left, right = [], []
    for band in range(AUDIT_BANDS):
        a, b = _bucket_pairs(keys[:, band], usable)
        left.append(np.minimum(a, b))
        right.append(np.maximum(a, b))
    pairs = np.unique(np.stack([np.concatenate(left), np.concatenate(right)], axis=1), axis=0)
    if pairs.size == 0:
        empty = np.empty(0, np.int64)
        return empty, empty, np.empty(0, np.float64)
    jaccard = lsh.jaccard_pairs(values, offsets, pairs[:, 0], pairs[:, 1])
    hit = jaccard >= threshold
    return pairs[hit, 0], pairs[hit, 1], jaccard[hit]


def check_snapshot_chain(kept: Sequence[tuple[str, str]], removed: Sequence[tuple[str, str]],
                         config: DedupConfig) -> dict:
    """Checks a dedup result against ``near_pairs`` over every document involved.

    Args:
        kept: ``(id, text)`` of every document the chain publishes.
        removed: ``(id, text)`` of every document it removed as a duplicate.
        config: The dedup settings (threshold, normalisation, shingles).

    Returns:
        ``kept_pairs``: pairs of kept documents at or above the threshold
        (should be none); ``removed_without_duplicate``: removed documents with
        no document of either list at or above it (should be none); and the
        counts checked.
    """
    ids = [doc_id for doc_id, _ in kept] + [doc_id for doc_id, _ in removed]
    texts = [text for _, text in kept] + [text for _, text in removed]
    normalized = normalize_array(pa.array(texts, pa.large_string()), config.normalize)
    left, right, jaccard = _near_pairs(normalized, config, config.threshold)
    normalized = normalized.to_pylist()
    n_kept = len(kept)
    kept_pairs = [(ids[i], ids[j], round(float(s), 4)) for i, j, s in zip(left, right, jaccard)
                  if i < n_kept and j < n_kept]
    # Exact copies (same normalised text) are duplicates whatever their shingles.
    by_text: dict[str, list[int]] = {}
    for row, text in enumerate(normalized):
        by_text.setdefault(text, []).append(row)
    found = set(zip(left.tolist(), right.tolist()))
    kept_pairs += [(ids[rows[0]], ids[row], 1.0) for rows in by_text.values() for row in rows[1:]
                   if rows[0] < n_kept and row < n_kept and (rows[0], row) not in found]
    has_duplicate = np.zeros(len(ids), dtype=bool)
    has_duplicate[left] = True
    has_duplicate[right] = True
    for rows in by_text.values():
        if len(rows) > 1:
            has_duplicate[rows] = True
    lonely = [ids[row] for row in range(n_kept, len(ids)) if not has_duplicate[row]]
    return {"kept": n_kept, "removed": len(removed), "pairs_at_threshold": int(left.size),
            "kept_pairs": kept_pairs, "removed_without_duplicate": lonely}
