"""Dedup benchmark: precision / recall / F1 of a contender's clusters against the ground truth."""

from __future__ import annotations

from typing import Any

import numpy as np

from dedup_bench_params import EXAMPLES, JACCARD_BANDS
from dedup_bench_truth import band_label, in_band, jaccard


def _prf(tp: int, predicted: int, actual: int) -> dict[str, float]:
    precision = tp / predicted if predicted else 1.0
    recall = tp / actual if actual else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "true_positives": int(tp), "predicted": int(predicted), "actual": int(actual)}


def _pairs_within(labels: np.ndarray) -> int:
    _, sizes = np.unique(labels, return_counts=True)
    return int(np.sum(sizes * (sizes - 1) // 2))


def score(labels: np.ndarray, truth: dict[str, Any], ids: np.ndarray) -> dict[str, Any]:
    """Pair- and document-level precision/recall/F1 of predicted clusters against the exact pairs.

    Pair level: predicted pairs are all pairs inside a predicted cluster; actual
    pairs are the ground-truth pairs (Jaccard >= threshold). A second variant
    compares with the transitive closure of the ground truth (all pairs inside
    its connected components), which does not count chaining as an error.
    Document level: predicted are the documents in a predicted cluster of size
    >= 2; actual are the documents in at least one ground-truth pair.
    Pair recall by Jaccard band: the share of the ground-truth pairs of each
    band of exact Jaccard whose two documents share a predicted cluster.
    """
    pairs = truth["pairs"]
    n = labels.size
    _, cluster_sizes = np.unique(labels, return_inverse=False, return_counts=True)
    size_of = np.bincount(labels, minlength=n)[labels]
    in_cluster = size_of >= 2
    same = labels[pairs[:, 0]] == labels[pairs[:, 1]]
    truth_labels = truth["labels"]
    truth_in = np.zeros(n, dtype=bool)
    truth_in[pairs.ravel()] = True
    # Pairs in the same predicted cluster and the same ground-truth component.
    joint = np.unique(np.stack([labels, truth_labels], axis=1), axis=0, return_counts=True)[1]
    closure_tp = int(np.sum(joint * (joint - 1) // 2))
    result = {
        "clusters": int(np.sum(cluster_sizes >= 2)),
        "largest_cluster": int(cluster_sizes.max()) if cluster_sizes.size else 0,
        "documents_in_clusters": int(in_cluster.sum()),
        "removed": int(np.sum(cluster_sizes - 1)),
        "pair": _prf(int(same.sum()), _pairs_within(labels), pairs.shape[0]),
        "pair_vs_closure": _prf(closure_tp, _pairs_within(labels), _pairs_within(truth_labels)),
        "document": _prf(int(np.sum(in_cluster & truth_in)), int(in_cluster.sum()), int(truth_in.sum())),
        "pair_recall_by_jaccard": {},
    }
    for low, high in JACCARD_BANDS:
        mask = in_band(truth["similarity"], low, high)
        result["pair_recall_by_jaccard"][band_label(low, high)] = (
            {"recall": round(float(same[mask].mean()), 4), "pairs": int(mask.sum())} if mask.any() else None)
    missed = pairs[~same][:EXAMPLES]
    result["missed_pair_examples"] = [
        {"ids": [str(ids[a]), str(ids[b])], "jaccard": round(jaccard(truth, a, b), 4),
         "clusters": [int(size_of[a]), int(size_of[b])]} for a, b in missed]
    false_pairs = []
    truth_set = {(int(a), int(b)) for a, b in pairs}
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    for members in np.split(order, bounds):
        if len(false_pairs) >= EXAMPLES:
            break
        if 2 <= members.size <= 64:
            for i, a in enumerate(members):
                for b in members[i + 1 :]:
                    key = (min(a, b), max(a, b))
                    if key not in truth_set and len(false_pairs) < EXAMPLES:
                        false_pairs.append({"ids": [str(ids[key[0]]), str(ids[key[1]])],
                                            "jaccard": round(jaccard(truth, *key), 4),
                                            "cluster_size": int(members.size)})
    result["false_pair_examples"] = false_pairs
    result["false_document_examples"] = [str(ids[i]) for i in np.flatnonzero(in_cluster & ~truth_in)[:EXAMPLES]]
    result["missed_document_examples"] = [str(ids[i]) for i in np.flatnonzero(~in_cluster & truth_in)[:EXAMPLES]]
    return result
