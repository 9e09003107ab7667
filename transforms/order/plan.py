"""Decisions of the order stage that depend on the corpus size (Beam-free).

The pipeline learns the number of kept documents only while it runs, so the
kNN mode is chosen then, from the count, by ``knn_plan``, and recorded in the
manifest as the dedup stage records its components mode. ``sample_mask``
picks the documents of a sample by their stable key alone, so every runner
and every shard count picks the same ones.
"""

from __future__ import annotations

import math

import numpy as np

from corpusmill.schemas.config import KnnSectionConfig

_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)

__all__ = ["knn_plan", "sample_mask", "unit_interval"]


def knn_plan(config: KnnSectionConfig, documents: int) -> dict:
    """How the kNN graph of ``documents`` documents is built.

    Args:
        config: The ``order.knn`` section.
        documents: Kept documents that reach the order stage.

    Returns:
        A JSON-ready dict: ``mode`` (``exact``: one partition holding every
        document; ``partitioned``), ``reason``, ``documents``, ``partitions``,
        ``nprobe`` and ``k``.
    """
    if config.mode == "exact" or (config.mode == "auto" and documents <= config.exact_max_docs):
        reason = ("order.knn.mode = exact" if config.mode == "exact"
                  else f"{documents} documents <= order.knn.exact_max_docs {config.exact_max_docs}")
        partitions = 1
    else:
        partitions = config.num_partitions or math.ceil(documents / config.partition_docs)
        reason = (f"order.knn.num_partitions = {config.num_partitions}" if config.num_partitions else
                  f"ceil({documents} documents / order.knn.partition_docs {config.partition_docs})")
        if config.mode == "auto":
            reason = f"{documents} documents > order.knn.exact_max_docs {config.exact_max_docs}; {reason}"
    # k-means needs at least one document per centroid.
    partitions = max(1, min(partitions, documents))
    mode = "exact" if partitions == 1 else "partitioned"
    if mode == "exact" and config.mode == "partitioned":
        reason += "; one partition: exact"
    return {"mode": mode, "reason": reason, "documents": int(documents), "partitions": int(partitions),
            "nprobe": int(min(config.nprobe, partitions)), "k": int(config.k)}


def unit_interval(keys: np.ndarray, seed: int) -> np.ndarray:
    """A uniform-looking value in [0, 1) per document key (splitmix64 of key and seed)."""
    with np.errstate(over="ignore"):
        x = np.asarray(keys, dtype=np.int64).view(np.uint64) ^ np.uint64(seed * 0x9E3779B97F4A7C15 % 2**64)
        x = (x ^ (x >> np.uint64(30))) * _MIX_1
        x = (x ^ (x >> np.uint64(27))) * _MIX_2
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def sample_mask(keys: np.ndarray, wanted: int, total: int, seed: int) -> np.ndarray:
    """Rows of ``keys`` in a sample of about ``wanted`` of ``total`` documents, chosen by key.

    Args:
        keys: int64 document keys.
        wanted: Sample size wanted over the whole corpus.
        total: Documents in the whole corpus.
        seed: Seeds the choice; different purposes use different seeds.

    Returns:
        A bool mask; every document is in when ``wanted >= total``.
    """
    if total <= 0 or wanted >= total:
        return np.ones(len(keys), dtype=bool)
    return unit_interval(keys, seed) < wanted / total
