"""The order's quality figures, finished from sums each shard and partition contributes.

Every figure is the one ``corpusmill.transforms.order.quality.ordering_quality``
computes in one process, with two differences a pipeline needs:

* the random baseline is the expected adjacent cosine of a uniformly random
  order, ``(|sum x|^2 - sum |x|^2) / (n (n - 1))``, exact from two sums, not
  one sampled permutation;
* the natural baseline (the input's order: ids ascending) is taken within each
  id shard, whose rows are in id order; with one shard it is the whole
  corpus's, and ``natural_scope`` says which.
"""

from __future__ import annotations

import numpy as np

from corpusmill.transforms.order.quality import path_length_summary


def shard_sums(element) -> dict:
    """Sums of one id shard's embeddings: count, vector sum, squared norms, adjacent cosine in id order."""
    _, shard = element
    x = shard.vectors.astype(np.float64)
    adjacent = np.einsum("ij,ij->i", x[:-1], x[1:]) if x.shape[0] > 1 else np.zeros(0)
    return {"documents": int(x.shape[0]), "vector_sum": x.sum(axis=0), "norm_sum": float((x * x).sum()),
            "natural_sum": float(adjacent.sum()), "natural_pairs": int(adjacent.size), "shards": 1}


def graph_sums(element) -> dict:
    """Sums of one shard's kNN lists: top-1 similarity, top-2 pair similarity."""
    _, graph = element
    scores = graph.scores.astype(np.float64)
    first = scores[:, 0][np.isfinite(scores[:, 0])] if scores.shape[1] else np.zeros(0)
    best = np.where(np.isfinite(scores[:, :2]), scores[:, :2], 0.0) if scores.shape[1] > 1 else np.zeros((0, 2))
    return {"top1_sum": float(first.sum()), "top1_count": int(first.size), "top2_sum": float(best.sum())}


def _ratio(a, b):
    return None if a is None or not b else float(a / b)


def _lengths_summary(counts: dict[int, int], n: int) -> dict:
    # path_length_summary wants path starts; rebuild them from the length counts (sizes of n at most).
    lengths = np.repeat(np.array(sorted(counts), dtype=np.int64), [counts[k] for k in sorted(counts)])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if lengths.size else np.zeros(0, np.int64)
    return path_length_summary(starts, n)


def finish_quality(summaries: list[dict], placement: dict, shards: list[dict], graphs: list[dict],
                   near_duplicate: float) -> dict:
    """The quality dict (``ordering_quality``'s keys) of the whole order.

    Args:
        summaries: ``traverse.summary`` of every partition.
        placement: ``traverse.layout``'s result (borders between partitions).
        shards: ``shard_sums`` of every id shard.
        graphs: ``graph_sums`` of every id shard.
        near_duplicate: The adjacent near-duplicate cosine.
    """
    n = sum(s["documents"] for s in shards)
    stats = [s["stats"] for s in summaries]
    borders = placement["borders"]
    pairs = sum(s["pairs"] for s in stats) + len(borders)
    adjacent_sum = sum(s["adjacent_sum"] for s in stats) + sum(b["cosine"] for b in borders)
    order = adjacent_sum / pairs if pairs else None
    vector_sum = sum((s["vector_sum"] for s in shards), np.zeros(1))
    norms = sum(s["norm_sum"] for s in shards)
    random = float((np.dot(vector_sum, vector_sum) - norms) / (n * (n - 1))) if n > 1 else None
    natural_pairs = sum(s["natural_pairs"] for s in shards)
    natural = sum(s["natural_sum"] for s in shards) / natural_pairs if natural_pairs else None
    top1_count = sum(g["top1_count"] for g in graphs)
    top1 = sum(g["top1_sum"] for g in graphs) / top1_count if top1_count else None
    top2 = sum(g["top2_sum"] for g in graphs) / 2 / (n - 1) if n > 1 else None
    lengths: dict[int, int] = {}
    for s in stats:
        for length, count in s["path_lengths"].items():
            lengths[int(length)] = lengths.get(int(length), 0) + count
    # A border that is a kNN edge joins the last path of one partition to the first of the
    # next: one path fewer (the length histogram still counts them apart, and says so).
    paths = sum(lengths.values()) - sum(1 for b in borders if b["knn_edge"])
    placed = placement["documents"]
    return {
        "documents": int(n),
        "coverage": {"each_exactly_once": placed == n, "placed": int(placed), "documents": int(n)},
        "adjacent_cosine": {
            "order": order, "random": random, "natural": natural, "top1_bound": top1, "top2_bound": top2,
            "of_top1": _ratio(order, top1), "of_top2": _ratio(order, top2), "over_natural": _ratio(order, natural),
            "over_random": _ratio(order, random),
            "random_is": "expected over uniformly random orders",
            "natural_scope": "corpus" if len(shards) <= 1 else f"within each of {len(shards)} id shards",
        },
        "knn_edge_fraction": ((sum(s["knn_edges"] for s in stats) + sum(b["knn_edge"] for b in borders)) / pairs
                              if pairs else None),
        "adjacent_near_duplicate": {
            "threshold": float(near_duplicate),
            "rate": ((sum(s["near_duplicate_pairs"] for s in stats)
                      + sum(b["cosine"] >= near_duplicate for b in borders)) / pairs if pairs else None),
        },
        "jumps": {"count": max(paths - 1, 0), "rate": (max(paths - 1, 0) / pairs) if pairs else None,
                  "path_lengths": {**_lengths_summary(lengths, n),
                                   **({"note": "paths cut at partition borders"}
                                      if any(b["knn_edge"] for b in borders) else {})}},
        "partitions": {"count": len(summaries), "border_knn_edges": sum(b["knn_edge"] for b in borders)},
    }
