"""How good a document order is, as one JSON-ready dict (Beam-free kernels).

The figures, all over adjacent pairs of the order (n - 1 pairs for n documents):

* mean cosine of adjacent documents, beside the same for a seeded random
  permutation and for the natural order (the input's own order), and beside the
  mean top-1 neighbour similarity, its upper bound: no document can be more
  similar to a neighbour in the order than to its nearest neighbour (the mean
  over pairs can pass it only through near-duplicate chains, rarely by much);
* the share of adjacent pairs that are kNN edges (either direction);
* jumps: the starts of paths after the first (``path_starts`` of a traversal),
  their rate per adjacent pair and the distribution of path lengths;
* coverage: every document exactly once;
* adjacent near-duplicates: pairs with cosine at or above a threshold.

Embeddings may be a dense array or any matrix with ``multiply`` and row
indexing (a scipy sparse TF-IDF matrix), rows L2-normalised.
"""

from __future__ import annotations

import numpy as np

from corpusmill.transforms.order.knn_graph import exact_knn

NEAR_DUPLICATE_THRESHOLD = 0.9
_CHUNK = 65536

__all__ = [
    "NEAR_DUPLICATE_THRESHOLD",
    "adjacent_similarities",
    "coverage",
    "knn_edge_fraction",
    "ordering_quality",
    "path_length_summary",
]


def adjacent_similarities(embeddings, order: np.ndarray) -> np.ndarray:
    """float64 (n - 1,): cosine of each document with the next one in ``order``."""
    order = np.asarray(order, dtype=np.int64)
    out = np.empty(max(order.size - 1, 0), dtype=np.float64)
    for start in range(0, out.size, _CHUNK):  # bounds the gathered rows held at once
        b = order[start + 1:start + _CHUNK + 1]
        a = order[start:start + b.size]
        if hasattr(embeddings, "multiply"):
            pair = np.asarray(embeddings[a].multiply(embeddings[b]).sum(axis=1)).ravel()
        else:
            x = np.asarray(embeddings)
            pair = np.einsum("ij,ij->i", x[a].astype(np.float64), x[b].astype(np.float64))
        out[start:start + pair.size] = pair
    return out


def coverage(order: np.ndarray, n: int) -> dict:
    """Whether ``order`` holds each of rows 0..n-1 exactly once, and what is off."""
    order = np.asarray(order, dtype=np.int64)
    inside = order[(order >= 0) & (order < n)]
    counts = np.bincount(inside, minlength=n) if n else np.zeros(0, np.int64)
    missing, repeated = int((counts == 0).sum()), int((counts > 1).sum())
    outside = int(order.size - inside.size)
    return {"each_exactly_once": missing == 0 and repeated == 0 and outside == 0 and order.size == n,
            "missing": missing, "repeated": repeated, "out_of_range": outside}


def knn_edge_fraction(order: np.ndarray, neighbors: np.ndarray) -> float | None:
    """Share of adjacent pairs joined by a kNN edge in either direction (None for < 2 documents)."""
    order = np.asarray(order, dtype=np.int64)
    if order.size < 2:
        return None
    linked = 0
    for start in range(0, order.size - 1, _CHUNK):
        b = order[start + 1:start + _CHUNK + 1]
        a = order[start:start + b.size]
        forward = (neighbors[a] == b[:, None]).any(axis=1)
        backward = (neighbors[b] == a[:, None]).any(axis=1)
        linked += int((forward | backward).sum())
    return linked / (order.size - 1)


def path_length_summary(path_starts: np.ndarray, n: int) -> dict:
    """Count, mean, median, p90, max and a power-of-two histogram of path lengths.

    Args:
        path_starts: int64 ascending positions where paths begin, first 0.
        n: Documents in the order.
    """
    starts = np.asarray(path_starts, dtype=np.int64)
    if n == 0 or starts.size == 0:
        return {"count": 0, "mean": None, "median": None, "p90": None, "max": None, "histogram": {}}
    lengths = np.diff(np.append(starts, n))
    bucket = np.floor(np.log2(lengths)).astype(np.int64)  # 1, 2-3, 4-7, ...
    histogram = {}
    for b, count in zip(*np.unique(bucket, return_counts=True)):
        low, high = 1 << int(b), (1 << (int(b) + 1)) - 1
        histogram[str(low) if low == high else f"{low}-{high}"] = int(count)
    return {"count": int(lengths.size), "mean": float(lengths.mean()),
            "median": float(np.median(lengths)), "p90": float(np.percentile(lengths, 90)),
            "max": int(lengths.max()), "histogram": histogram}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else float(a / b)


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def _neighbour_bounds(embeddings, scores: np.ndarray | None) -> tuple[float | None, float | None]:
    """Mean top-1 similarity, and the top-2 bound on the mean adjacent similarity."""
    if scores is None:
        if hasattr(embeddings, "multiply"):
            return None, None  # a sparse matrix: the caller passes the bounds
        _, scores = exact_knn(np.asarray(embeddings, dtype=np.float32), 2)
    scores = np.asarray(scores, dtype=np.float64)
    n = scores.shape[0]
    if n == 0:
        return None, None
    best = np.where(np.isfinite(scores[:, :2]), scores[:, :2], 0.0)
    first = scores[:, 0][np.isfinite(scores[:, 0])]
    top2 = float(best.sum() / 2 / (n - 1)) if n > 1 and scores.shape[1] > 1 else None
    return _mean(first), top2


def ordering_quality(embeddings, order: np.ndarray, *, neighbors: np.ndarray | None = None,
                     scores: np.ndarray | None = None, path_starts: np.ndarray | None = None,
                     natural_order: np.ndarray | None = None, top1_similarity: float | None = None,
                     top2_bound: float | None = None, seed: int = 0,
                     near_duplicate_threshold: float = NEAR_DUPLICATE_THRESHOLD) -> dict:
    """The quality figures of an order (module docstring), JSON-ready.

    Args:
        embeddings: (n, d) L2-normalised rows: dense, or sparse with ``multiply``.
        order: int64 (n,) rows in order.
        neighbors: Optional int64 (n, k) kNN rows, for the kNN-edge share.
        scores: Optional (n, k) kNN similarities of the same embeddings, for the
            bounds (otherwise computed exactly from dense embeddings).
        path_starts: Optional path starts of the traversal, for jumps and lengths.
        natural_order: The input's order (default: rows 0..n-1).
        top1_similarity: The mean top-1 similarity, when the caller has it already.
        top2_bound: The top-2 bound, likewise.
        seed: Seeds the random permutation.
        near_duplicate_threshold: Cosine at or above which a pair counts as near-duplicate.

    Returns:
        A dict of plain ints, floats, bools, None and dicts.
    """
    order = np.asarray(order, dtype=np.int64)
    n = embeddings.shape[0]
    adjacent = adjacent_similarities(embeddings, order)
    natural = np.arange(n) if natural_order is None else np.asarray(natural_order, np.int64)
    ordered = _mean(adjacent)
    random = _mean(adjacent_similarities(embeddings, np.random.default_rng(seed).permutation(n)))
    natural_mean = _mean(adjacent_similarities(embeddings, natural))
    if top1_similarity is None or top2_bound is None:
        found_top1, found_top2 = _neighbour_bounds(embeddings, scores)
        top1 = found_top1 if top1_similarity is None else top1_similarity
        top2 = found_top2 if top2_bound is None else top2_bound
    else:
        top1, top2 = top1_similarity, top2_bound
    result = {
        "documents": int(n),
        "coverage": coverage(order, n),
        "adjacent_cosine": {
            "order": ordered, "random": random, "natural": natural_mean, "top1_bound": top1,
            "top2_bound": top2, "of_top1": _ratio(ordered, top1), "of_top2": _ratio(ordered, top2),
            "over_natural": _ratio(ordered, natural_mean),
            "over_random": _ratio(ordered, random),
        },
        "knn_edge_fraction": None if neighbors is None else knn_edge_fraction(order, neighbors),
        "adjacent_near_duplicate": {
            "threshold": float(near_duplicate_threshold),
            "rate": _mean((adjacent >= near_duplicate_threshold).astype(np.float64)),
        },
    }
    if path_starts is not None:
        starts = np.asarray(path_starts, dtype=np.int64)
        jumps = max(int(starts.size) - 1, 0)
        result["jumps"] = {"count": jumps, "rate": jumps / (n - 1) if n > 1 else None,
                           "path_lengths": path_length_summary(starts, n)}
    return result
