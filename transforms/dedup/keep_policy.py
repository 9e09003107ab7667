"""Which member of a duplicate cluster survives (Beam-free kernel).

Policies, each followed by the smallest id as the deterministic tie-break:

* ``longest``: most characters in the original (not normalised) text;
* ``newest``: latest timestamp; documents without a timestamp count as oldest;
* ``source_priority``: the source that matches the earliest pattern of a list
  (``fnmatch``, case-sensitive), sources matching none rank last;
* ``smallest_id``: only the tie-break.

Ids compare by Unicode code point, which is also their UTF-8 byte order.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import numpy as np

__all__ = ["KEEP_POLICIES", "NO_TIMESTAMP", "choose_representatives", "source_ranks"]

KEEP_POLICIES = ("longest", "newest", "source_priority", "smallest_id")

#: Timestamp (µs since the epoch) standing in for a missing one: older than any real one.
NO_TIMESTAMP = np.iinfo(np.int64).min


def source_ranks(sources: Sequence[str], patterns: Sequence[str]) -> np.ndarray:
    """Priority rank of each source: index of the first matching pattern, else len(patterns).

    Args:
        sources: Source names, one per document.
        patterns: fnmatch patterns, best first.

    Returns:
        int32 ranks (lower is better).
    """
    cache: dict[str, int] = {}
    ranks = np.empty(len(sources), dtype=np.int32)
    for i, source in enumerate(sources):
        rank = cache.get(source)
        if rank is None:
            rank = next((k for k, p in enumerate(patterns) if fnmatch.fnmatchcase(source, p)), len(patterns))
            cache[source] = rank
        ranks[i] = rank
    return ranks


def choose_representatives(cluster: np.ndarray, ids: Sequence[str], policy: str, *,
                           lengths: np.ndarray | None = None, timestamps: np.ndarray | None = None,
                           ranks: np.ndarray | None = None, first: list[np.ndarray] = ()) -> np.ndarray:
    """The surviving member of each cluster.

    Args:
        cluster: Cluster label of each document (any integer labels).
        ids: Document ids, aligned with ``cluster``.
        policy: One of ``KEEP_POLICIES``.
        lengths: Text lengths (needed by ``longest``).
        timestamps: int64 µs timestamps, ``NO_TIMESTAMP`` when missing (needed by ``newest``).
        ranks: Source priority ranks from ``source_ranks`` (needed by ``source_priority``).
        first: Integer keys that rank before the policy, most significant
            first, smaller wins (a refresh puts published documents first).

    Returns:
        For every document, the row index of its cluster's representative.
    """
    cluster = np.asarray(cluster)
    n = cluster.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.int64)
    # Rank of each id in code-point order, so ids join a numeric lexsort.
    _, id_rank = np.unique(np.asarray(ids, dtype=object).astype(str), return_inverse=True)
    if policy == "longest":
        preference = [-np.asarray(lengths, dtype=np.int64)]
    elif policy == "newest":
        # Negate without overflow: NO_TIMESTAMP must sort last, i.e. largest.
        ts = np.asarray(timestamps, dtype=np.int64)
        preference = [np.where(ts == NO_TIMESTAMP, np.iinfo(np.int64).max, -ts)]
    elif policy == "source_priority":
        preference = [np.asarray(ranks, dtype=np.int64)]
    elif policy == "smallest_id":
        preference = []
    else:
        raise ValueError(f"unknown keep policy {policy!r}; allowed: {', '.join(KEEP_POLICIES)}")
    preference = [np.asarray(key, dtype=np.int64) for key in first] + preference
    # lexsort: last key is primary. Cluster first, then the policy, then the id.
    order = np.lexsort([id_rank.reshape(-1)] + preference[::-1] + [cluster])
    sorted_cluster = cluster[order]
    first = np.concatenate([[True], sorted_cluster[1:] != sorted_cluster[:-1]])
    first_index = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    representative = np.empty(n, dtype=np.int64)
    representative[order] = order[first_index]
    return representative
