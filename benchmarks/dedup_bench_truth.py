"""Dedup benchmark: the exact ground truth (prefix-filter Jaccard join) and its checks.

No MinHash here: the shingle-hash sets of the normalised texts are joined at
Jaccard >= threshold by prefix filtering, checked against brute force on a
random sample, and the 32-bit hashes against the shingle strings.
"""

from __future__ import annotations

import fractions
import time
from typing import Any

import numba
import numpy as np

from dedup_bench_params import EXAMPLES, JACCARD_BANDS, NGRAM, NUM_PERM, RENSA_BANDS, THRESHOLD


@numba.njit(cache=True)
def _intersection_size(values, a_lo, a_hi, b_lo, b_hi):
    i, j, common = a_lo, b_lo, 0
    while i < a_hi and j < b_hi:
        if values[i] == values[j]:
            common += 1
            i += 1
            j += 1
        elif values[i] < values[j]:
            i += 1
        else:
            j += 1
    return common


@numba.njit(cache=True)
def _prefix_candidates(group_bounds, entry_docs, sizes, num, den, out_left, out_right, fill):
    """Pairs of documents sharing a prefix token and passing the length filter (count, then fill)."""
    count = 0
    for g in range(group_bounds.shape[0] - 1):
        for x in range(group_bounds[g], group_bounds[g + 1]):
            a = entry_docs[x]
            for y in range(x + 1, group_bounds[g + 1]):
                b = entry_docs[y]
                small, large = min(sizes[a], sizes[b]), max(sizes[a], sizes[b])
                if small * den >= num * large:
                    if fill:
                        out_left[count] = a
                        out_right[count] = b
                    count += 1
    return count


@numba.njit(cache=True, parallel=True)
def _verify_pairs(values, offsets, left, right, num, den, out):
    for e in numba.prange(left.shape[0]):
        a, b = left[e], right[e]
        common = _intersection_size(values, offsets[a], offsets[a + 1], offsets[b], offsets[b + 1])
        union = (offsets[a + 1] - offsets[a]) + (offsets[b + 1] - offsets[b]) - common
        out[e] = common * den >= num * union


def exact_join(values: np.ndarray, offsets: np.ndarray, threshold: fractions.Fraction) -> np.ndarray:
    """All document pairs whose sets have Jaccard >= threshold, by prefix filtering (exact).

    Args:
        values: Per-document sorted unique set elements, CSR layout.
        offsets: CSR offsets, length n + 1.
        threshold: The Jaccard threshold as an exact fraction.

    Returns:
        ``(m, 2)`` int64 array of pairs ``(a, b)``, ``a < b``, sorted.
    """
    num, den = threshold.numerator, threshold.denominator
    n = offsets.size - 1
    sizes = np.diff(offsets)
    uniq, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    rank_of = np.empty(uniq.size, dtype=np.int64)
    rank_of[np.lexsort((uniq, counts))] = np.arange(uniq.size)  # rarest first
    doc_of = np.repeat(np.arange(n, dtype=np.int64), sizes)
    ranks = rank_of[inverse.ravel()]
    ranks = ranks[np.lexsort((ranks, doc_of))]  # each document's tokens, rarest first
    # J >= t implies |x & y| >= ceil(t |x|), so the first |x| - ceil(t |x|) + 1 tokens
    # (in any fixed global order) of both sets must meet.
    prefix = np.where(sizes > 0, sizes - (-(-num * sizes // den)) + 1, 0)
    position = np.arange(ranks.size) - np.repeat(offsets[:-1], sizes)
    in_prefix = position < np.repeat(prefix, sizes)
    entry_tokens, entry_docs = ranks[in_prefix], doc_of[in_prefix]
    order = np.lexsort((entry_docs, entry_tokens))
    entry_tokens, entry_docs = entry_tokens[order], entry_docs[order]
    group_bounds = np.concatenate([[0], np.flatnonzero(np.diff(entry_tokens)) + 1, [entry_tokens.size]])
    group_bounds = group_bounds.astype(np.int64)
    empty = np.empty(0, dtype=np.int64)
    count = _prefix_candidates(group_bounds, entry_docs, sizes, num, den, empty, empty, False)
    left, right = np.empty(count, dtype=np.int64), np.empty(count, dtype=np.int64)
    _prefix_candidates(group_bounds, entry_docs, sizes, num, den, left, right, True)
    pairs = np.unique(np.stack([left, right], axis=1), axis=0) if count else np.empty((0, 2), np.int64)
    passed = np.empty(pairs.shape[0], dtype=np.bool_)
    _verify_pairs(values, offsets, pairs[:, 0].copy(), pairs[:, 1].copy(), num, den, passed)
    return pairs[passed]


@numba.njit(cache=True, parallel=True)
def _pair_jaccard(values, offsets, left, right, out):
    for e in numba.prange(left.shape[0]):
        a, b = left[e], right[e]
        common = _intersection_size(values, offsets[a], offsets[a + 1], offsets[b], offsets[b + 1])
        union = (offsets[a + 1] - offsets[a]) + (offsets[b + 1] - offsets[b]) - common
        out[e] = common / union if union > 0 else 1.0


def pair_jaccard(shingle_sets: tuple[np.ndarray, np.ndarray], pairs: np.ndarray) -> np.ndarray:
    """Exact Jaccard of each pair's shingle-hash sets (two empty sets: 1.0)."""
    values, offsets = shingle_sets
    out = np.empty(pairs.shape[0], dtype=np.float64)
    if pairs.shape[0]:
        _pair_jaccard(values, offsets, pairs[:, 0].copy(), pairs[:, 1].copy(), out)
    return out


def in_band(similarity: np.ndarray, low: float, high: float) -> np.ndarray:
    """Mask of similarities in [low, high), or equal to 1.0 for the band (1.0, 1.0)."""
    return similarity == 1.0 if low == high == 1.0 else (similarity >= low) & (similarity < high)


def band_label(low: float, high: float) -> str:
    return "1.0" if low == high == 1.0 else f"[{low:.2f},{high:.2f})"


@numba.njit(cache=True, parallel=True)
def _brute_force_jaccard(values, offsets, sample, out):
    """Exact Jaccard of every sampled document against every document (no filtering)."""
    n = offsets.shape[0] - 1
    for s in numba.prange(sample.shape[0]):
        a = sample[s]
        for b in range(n):
            common = _intersection_size(values, offsets[a], offsets[a + 1], offsets[b], offsets[b + 1])
            union = (offsets[a + 1] - offsets[a]) + (offsets[b + 1] - offsets[b]) - common
            out[s, b] = common / union if union > 0 else 0.0


def ground_truth(normalized: list[str], sample_size: int, rng_seed: int = 0) -> dict[str, Any]:
    """Exact near-duplicate pairs of a corpus, with the brute-force and string-level checks."""
    from corpusmill.transforms.dedup import minhash
    threshold = fractions.Fraction(str(THRESHOLD))
    started = time.perf_counter()
    values, offsets = minhash.shingle_sets(normalized, NGRAM)
    pairs = exact_join(values, offsets, threshold)
    # Texts without words have no shingles (Jaccard undefined); identical ones are
    # still exact duplicates of each other.
    by_text: dict[str, list[int]] = {}
    for i in np.flatnonzero(np.diff(offsets) == 0).tolist():
        by_text.setdefault(normalized[i], []).append(i)
    same = [(a, b) for group in by_text.values() for k, a in enumerate(group) for b in group[k + 1 :]]
    if same:
        pairs = np.unique(np.concatenate([pairs, np.array(same, dtype=np.int64)]), axis=0)
    join_seconds = time.perf_counter() - started

    rng = np.random.default_rng(rng_seed)
    sample = np.sort(rng.choice(len(normalized), size=min(sample_size, len(normalized)), replace=False))
    started = time.perf_counter()
    similarity = np.empty((sample.size, len(normalized)), dtype=np.float64)
    _brute_force_jaccard(values, offsets, sample.astype(np.int64), similarity)
    similarity[np.arange(sample.size), sample] = 0.0  # a document is not its own duplicate
    brute = set()
    for s, b in zip(*np.nonzero(similarity >= THRESHOLD - 1e-9)):
        # Float screen, then the exact rational test.
        key = (min(int(sample[s]), int(b)), max(int(sample[s]), int(b)))
        if _exact_pass(values, offsets, *key, threshold):
            brute.add(key)
    sampled = set(sample.tolist())
    joined = {(int(a), int(b)) for a, b in pairs if a in sampled or b in sampled}
    brute_seconds = time.perf_counter() - started

    # 32-bit shingle hashes vs the shingle strings, on the sample's pairs near the threshold.
    near = [(int(sample[s]), int(b)) for s, b in zip(*np.nonzero((similarity >= THRESHOLD - 0.1)
                                                                   & (similarity <= THRESHOLD + 0.1)))]
    disagreements = []
    for a, b in near:
        sa, sb = set(minhash.shingles(normalized[a], NGRAM)), set(minhash.shingles(normalized[b], NGRAM))
        string_j = len(sa & sb) / len(sa | sb)
        hash_pass = _exact_pass(values, offsets, min(a, b), max(a, b), threshold)
        if (string_j >= THRESHOLD) != hash_pass:
            disagreements.append({"pair": [a, b], "string_jaccard": string_j})
    return {
        "pairs": pairs,
        "similarity": pair_jaccard((values, offsets), pairs),
        "shingle_sets": (values, offsets),
        "join_seconds": round(join_seconds, 2),
        "check": {
            "sample_size": int(sample.size),
            "brute_force_pairs": len(brute),
            "join_pairs_touching_sample": len(joined),
            "identical": brute == joined,
            "only_brute_force": sorted(brute - joined)[:EXAMPLES],
            "only_join": sorted(joined - brute)[:EXAMPLES],
            "seconds": round(brute_seconds, 2),
            "near_threshold_pairs_string_checked": len(near),
            "hash_vs_string_disagreements": len(disagreements),
            "disagreement_examples": disagreements[:EXAMPLES],
        },
    }


def _exact_pass(values, offsets, a, b, threshold) -> bool:
    set_a, set_b = values[offsets[a] : offsets[a + 1]], values[offsets[b] : offsets[b + 1]]
    common = np.intersect1d(set_a, set_b, assume_unique=True).size
    union = set_a.size + set_b.size - common
    return union > 0 and common * threshold.denominator >= threshold.numerator * union


def jaccard(truth: dict[str, Any], a: int, b: int) -> float:
    """Exact Jaccard of two documents' shingle-hash sets."""
    values, offsets = truth["shingle_sets"]
    set_a, set_b = values[offsets[a] : offsets[a + 1]], values[offsets[b] : offsets[b + 1]]
    common = np.intersect1d(set_a, set_b, assume_unique=True).size
    union = set_a.size + set_b.size - common
    return common / union if union else 1.0


def minhash_bands() -> tuple[int, int]:
    """datasketch's optimal (bands, rows) for the threshold, as MinHashLSH uses."""
    from corpusmill.transforms.dedup import minhash

    return minhash.lsh_params(THRESHOLD, NUM_PERM)


def recall_bands() -> tuple[int, int]:
    """The job's default (bands, rows) with exact verification: the recall rule."""
    from corpusmill.schemas.config import DedupConfig
    from corpusmill.transforms.dedup import banding

    return banding.recall_bands(THRESHOLD, NUM_PERM, DedupConfig().max_miss_rate)


def truth_components(num_docs: int, pairs: np.ndarray) -> np.ndarray:
    """Connected-component labels of the ground-truth pair graph."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(pairs.shape[0]), (pairs[:, 0], pairs[:, 1])), shape=(num_docs, num_docs))
    return connected_components(graph, directed=False)[1].astype(np.int64)



def truth_summary(truth: dict[str, Any]) -> dict[str, Any]:
    """The report's ground-truth facts: pair counts, components, expected LSH recall, the checks.

    ``truth`` is a ``ground_truth`` result with its component ``labels`` added.
    """
    _, component_sizes = np.unique(truth["labels"], return_counts=True)
    similarity = truth["similarity"]
    near = in_band(similarity, *JACCARD_BANDS[0])

    def expected(b, r, mask=None):
        chosen = similarity if mask is None else similarity[mask]
        return round(float(np.mean(1 - (1 - chosen**r) ** b)), 4) if chosen.size else None

    bandings = (recall_bands(), minhash_bands(), (RENSA_BANDS, NUM_PERM // RENSA_BANDS))
    return {
        "expected_lsh_pair_recall": {f"{b}x{r}": expected(b, r) for b, r in bandings},
        f"expected_lsh_pair_recall_{band_label(*JACCARD_BANDS[0])}": {f"{b}x{r}": expected(b, r, near)
                                                                     for b, r in bandings},
        "pairs_by_jaccard": {band_label(lo, hi): int(np.sum(in_band(similarity, lo, hi)))
                             for lo, hi in JACCARD_BANDS},
        "pairs": int(truth["pairs"].shape[0]), "documents": int(np.unique(truth["pairs"]).size),
        "components": int(np.sum(component_sizes >= 2)), "largest_component": int(component_sizes.max()),
        "minimal_removal": int(np.sum(component_sizes - 1)), "join_seconds": truth["join_seconds"],
        "check": truth["check"],
    }
