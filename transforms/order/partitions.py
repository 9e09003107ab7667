"""Traversal partitions that cut fewer of the edges a traversal follows (Beam-free kernels).

Each document is traversed in exactly one partition, first its ``primary``
(nearest k-means centroid). k-means borders run through dense regions, and a
kNN edge that crosses a border is lost to both traversals. Rounds of weighted
label voting move border documents to the partition of their nearest
neighbours.

What is lost is not any edge but the edges the order would have followed, and
those are mostly each document's strongest few. So the vote is cast by groups,
not single documents: a group is a connected component of the nearest-neighbour
forest (each document joined to its top-1 neighbour; about 4.5 documents per
group on linux-doc and html-docs, at most a few dozen), and a group always moves
as one, so no top-1 edge is cut once a group has voted. A document's vote for
partition q is the sum of its ``best`` (3) highest similarities among its
neighbours now in q; the group takes the partition with the largest summed vote
over its members, and a member moves only if that beats its own partition's
sum (its own partition wins ties; then the smallest id). Groups vote in two
alternating halves (by a hash of the group key; the halves take turns, one
round each): synchronous votes of neighbouring groups swap partitions back and
forth, halves settle.

Where the loss against one partition comes from (linux-doc / html-docs, 16
partitions, nprobe 3, the yardstick of benchmarks/order_bench.py): the 15
junctions between partitions hold < 0.1% of the adjacent similarity (their
ends are each partition's leftovers; orienting each partition's path to its
neighbours or ordering partitions by inter-partition edge weight moved the
total by <= 0.02 points, so neither is done); the partitioned graph itself
costs 2.0% / 0.4% (one traversal over the whole partitioned graph: the edges it
misses join documents far from every centroid, which share no probed
partition; nprobe 4 leaves 1.5% / 0.4%); the rest is the edges the traversal
partitions cut.

On linux-doc and html-docs with 16 forced partitions (benchmarks/order_bench.py)
this took the loss of adjacent similarity against one partition from 5.3% /
4.5% (3 rounds of per-document votes over the top 5 neighbours) to 3.2% / 2.3%
(3 rounds; more change nothing); partition sizes stay within the k-means range
(no size bound is applied).

A round is local to one group, its members' neighbour lists and the
neighbours' current labels, so a pipeline runs it as one label lookup per
round on rows co-located by group (``vote_groups`` on each batch of whole
groups); ``refine_partitions`` runs the rounds in one process as the reference.
Votes are summed in a fixed order (members by key, lists in kNN order), so every
runner gets the same bits.
"""

from __future__ import annotations

import numba
import numpy as np

from corpusmill.transforms.dedup.components import distributed_components
from corpusmill.transforms.order.plan import unit_interval

REFINE_ROUNDS = 3
VOTE_BEST = 3
GROUP_ROUNDS = 3
HALF_SEED = 0x51ED

__all__ = ["GROUP_ROUNDS", "REFINE_ROUNDS", "VOTE_BEST", "moves_in", "nearest_neighbour_groups", "refine_partitions",
           "vote_groups"]


def nearest_neighbour_groups(keys: np.ndarray, nearest: np.ndarray, rounds: int = GROUP_ROUNDS) -> np.ndarray:
    """The group of each document: its component in the nearest-neighbour forest, named by a key in it.

    ``rounds`` large-star / small-star rounds (``dedup.components``, as the
    pipeline's ``ConnectedComponents`` runs them): 3 rounds label the forests of
    linux-doc and html-docs all but exactly (1,353 groups for 1,345 components);
    a component not settled by then is split into groups of its own, each named
    by its smallest label. A few rounds keep the pipeline's fixed cost small.

    Args:
        keys: int64 (n,) document keys.
        nearest: int64 (n,) each document's top-1 neighbour key (-1: none).
        rounds: Large-star / small-star rounds.

    Returns:
        int64 (n,) group keys; a document without neighbours is a group of its own.
    """
    keys = np.asarray(keys, dtype=np.int64)
    nearest = np.asarray(nearest, dtype=np.int64)
    linked = nearest != -1
    nodes, labels, _ = distributed_components(keys[linked], nearest[linked], max_rounds=rounds)
    group = keys.copy()
    if nodes.size:
        at = np.minimum(np.searchsorted(nodes, keys), nodes.size - 1)
        found = nodes[at] == keys
        group[found] = labels[at[found]]
    return group


def moves_in(groups: np.ndarray, half_round: int) -> np.ndarray:
    """bool (n,): whether each group may move in this round (alternating halves by group key)."""
    half = (unit_interval(np.asarray(groups, dtype=np.int64), HALF_SEED) * 2).astype(np.int64)
    return half == half_round % 2


@numba.njit(cache=True)
def _nb_vote_groups(order, groups, own, labels, scores, movable, num_partitions, best):
    n, k = labels.shape
    out = own.copy()
    value = np.zeros(num_partitions, dtype=np.float64)
    counted = np.zeros(num_partitions, dtype=np.int64)
    touched = np.empty(n * k + n, dtype=np.int64)
    start = 0
    while start < n:
        stop = start + 1
        while stop < n and groups[order[stop]] == groups[order[start]]:
            stop += 1
        used = 0
        for t in range(start, stop):
            i = order[t]
            for j in range(k):
                q = labels[i, j]
                if q < 0 or not np.isfinite(scores[i, j]) or counted[q] >= best:
                    continue
                if counted[q] == 0 and value[q] == 0.0:
                    touched[used] = q
                    used += 1
                counted[q] += 1
                value[q] += scores[i, j]
            for j in range(k):  # the per-document counts start again for the next member
                q = labels[i, j]
                if q >= 0:
                    counted[q] = 0
        if movable[order[start]] and used:
            winner = touched[0]
            for u in range(1, used):
                q = touched[u]
                if value[q] > value[winner] or (value[q] == value[winner] and q < winner):
                    winner = q
            for t in range(start, stop):
                i = order[t]
                if value[winner] > value[own[i]]:
                    out[i] = winner
        for u in range(used):
            value[touched[u]] = 0.0
        start = stop
    return out


def vote_groups(keys: np.ndarray, groups: np.ndarray, own: np.ndarray, neighbor_labels: np.ndarray,
                scores: np.ndarray, num_partitions: int, half_round: int, best: int = VOTE_BEST) -> np.ndarray:
    """One round of the group vote for a batch holding whole groups (module docstring).

    Args:
        keys: int64 (m,) document keys (the summation order within a group).
        groups: int64 (m,) group keys (``nearest_neighbour_groups``); every member of a
            group present in the batch must be in it.
        own: int64 (m,) each document's current partition.
        neighbor_labels: int64 (m, k) its neighbours' current partitions, in kNN-list
            order; -1 for padding.
        scores: float32 (m, k) the neighbours' similarities, aligned.
        num_partitions: Partition ids are 0..num_partitions - 1.
        half_round: The round: which half of the groups may move (``moves_in``).
        best: Similarities per partition that count in one document's vote.

    Returns:
        int64 (m,): each document's partition after the round.
    """
    keys = np.asarray(keys, dtype=np.int64)
    groups = np.asarray(groups, dtype=np.int64)
    own = np.asarray(own, dtype=np.int64)
    labels = np.ascontiguousarray(neighbor_labels, dtype=np.int64)
    if own.size and (own.min() < 0 or own.max() >= num_partitions or labels.max() >= num_partitions):
        raise ValueError(f"partition ids must lie in [0, {num_partitions})")
    order = np.lexsort((keys, groups))
    return _nb_vote_groups(order, groups, own, labels, np.ascontiguousarray(scores, dtype=np.float32),
                           moves_in(groups, half_round), int(num_partitions), int(best))


def refine_partitions(neighbors: np.ndarray, scores: np.ndarray, primary: np.ndarray,
                      num_partitions: int, rounds: int = REFINE_ROUNDS,
                      keys: np.ndarray | None = None) -> np.ndarray:
    """Rounds of ``vote_groups`` over the whole graph, in one process: the pipeline's reference.

    Args:
        neighbors: int64 (n, k) kNN rows, -1 padded, nearest first.
        scores: float32 (n, k) aligned.
        primary: int64 (n,) the starting partitions (``Assignment.primary``).
        num_partitions: Number of partitions.
        rounds: Voting rounds (``order.knn.refine_rounds``); the groups of one half may
            move in even rounds, the others in odd ones.
        keys: Optional int64 (n,) document keys (groups, halves and summation order;
            default: row indices).

    Returns:
        int64 (n,): each document's traversal partition.
    """
    neighbors = np.asarray(neighbors, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float32)
    n = neighbors.shape[0]
    keys = np.arange(n, dtype=np.int64) if keys is None else np.asarray(keys, dtype=np.int64)
    labels = np.asarray(primary, dtype=np.int64).copy()
    if n == 0 or neighbors.shape[1] == 0:
        return labels
    nearest = np.where(neighbors[:, 0] >= 0, keys[np.maximum(neighbors[:, 0], 0)], -1)
    groups = nearest_neighbour_groups(keys, nearest)
    for half_round in range(rounds):
        neighbor_labels = np.where(neighbors >= 0, labels[np.maximum(neighbors, 0)], -1)
        labels = vote_groups(keys, groups, labels, neighbor_labels, scores, num_partitions, half_round)
    return labels
