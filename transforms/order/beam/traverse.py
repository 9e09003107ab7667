"""TraversePartitions: each partition ordered on one worker, partitions ordered by their centroids.

Data flow::

    embedded + graph -> CoGroupByKey shard -> members keyed by their one label
                     -> GroupByKey label -> local_graph + traverse -> PartitionOrder
    centroids -> order_partitions (one worker, P rows) -> partition order
    PartitionOrder summaries + partition order -> offsets, links across partition borders
    PartitionOrder + offsets -> (id shard, (keys, positions, path starts))

The global order is the partitions' orders concatenated in partition order, so
no worker holds more than one partition. Quality figures are sums that each
partition and each shard contributes (``quality_partials``), finished on one
worker from P + N small records.
"""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
import numpy as np

from corpusmill.transforms.common import shard_of_keys, split_by
from corpusmill.transforms.order import knn_graph, traversal


class PartitionOrder(NamedTuple):
    """One partition's traversal.

    Attributes:
        partition: Its id.
        keys: int64 (m,) document keys in traversal order.
        path_start: bool (m,) where a path of kNN edges begins (the first always).
        first: Vector, key and kNN list of the first document; ``last`` the same of the last.
        stats: Sums for the quality figures (``_partition_stats``).
    """

    partition: int
    keys: np.ndarray
    path_start: np.ndarray
    first: tuple
    last: tuple
    stats: dict


def route_members(element):
    """``(shard, {embedded, graph})`` -> ``(label, (keys, vectors, neighbors, scores))`` per label."""
    _, grouped = element
    for shard, graph in zip(grouped["embedded"], grouped["graph"]):
        if not np.array_equal(shard.keys, graph.keys):
            raise RuntimeError("a shard's graph rows do not match its documents")
        for label, (rows,) in split_by(graph.label, np.arange(graph.keys.size)):
            yield int(label), (graph.keys[rows], shard.vectors[rows], graph.neighbors[rows], graph.scores[rows])


def _length_counts(path_start: np.ndarray) -> dict[int, int]:
    starts = np.flatnonzero(path_start)
    lengths = np.diff(np.append(starts, path_start.size))
    values, counts = np.unique(lengths, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def _partition_stats(vectors: np.ndarray, neighbors: np.ndarray, order: np.ndarray, path_start: np.ndarray,
                     near_duplicate: float) -> dict:
    a, b = order[:-1], order[1:]
    adjacent = np.einsum("ij,ij->i", vectors[a].astype(np.float64), vectors[b].astype(np.float64))
    linked = (neighbors[a] == b[:, None]).any(axis=1) | (neighbors[b] == a[:, None]).any(axis=1)
    return {"documents": int(order.size), "pairs": int(adjacent.size), "adjacent_sum": float(adjacent.sum()),
            "near_duplicate_pairs": int((adjacent >= near_duplicate).sum()), "knn_edges": int(linked.sum()),
            "path_lengths": _length_counts(path_start)}


def traverse_partition(element, mode: str, near_duplicate: float) -> PartitionOrder:
    """Orders one partition's members (rows sorted by key first, so arrival order cannot matter)."""
    partition, pieces = element
    pieces = list(pieces)
    keys = np.concatenate([p[0] for p in pieces])
    by_key = np.argsort(keys, kind="stable")
    keys = keys[by_key]
    vectors = np.concatenate([p[1] for p in pieces])[by_key]
    neighbor_keys = np.concatenate([p[2] for p in pieces])[by_key]
    scores = np.concatenate([p[3] for p in pieces])[by_key]
    neighbors, local_scores = knn_graph.local_graph(keys, neighbor_keys, scores)
    result = traversal.traverse(neighbors, local_scores, vectors if mode == "improved" else None, mode=mode)
    order = result.order
    # A path is a run of kNN edges; the walk's own path starts are where it jumped.
    path_start = np.ones(order.size, dtype=bool)
    if order.size > 1:
        a, b = order[:-1], order[1:]
        path_start[1:] = ~((neighbors[a] == b[:, None]).any(axis=1) | (neighbors[b] == a[:, None]).any(axis=1))
    ends = [(vectors[i].copy(), int(keys[i]), neighbor_keys[i].copy()) for i in (order[0], order[-1])]
    return PartitionOrder(int(partition), keys[order], path_start, ends[0], ends[1],
                          _partition_stats(vectors, neighbors, order, path_start, near_duplicate))


def partition_order(centroids, mode: str) -> list[int]:
    """Partition ids in traversal order of their centroids (``[0]`` for the exact plan)."""
    if centroids is None:
        return [0]
    return [int(p) for p in traversal.order_partitions(centroids, mode=mode)]


def summary(order: PartitionOrder) -> dict:
    """What the driver-side steps need of a partition: its size, ends and sums (no per-document arrays)."""
    return {"partition": order.partition, "first": order.first, "last": order.last, "stats": order.stats}


def layout(summaries: list[dict], order: list[int]) -> dict:
    """Offsets of each partition in the global order, and whether each border is a kNN edge.

    Returns:
        ``{"offsets": {p: first position}, "linked": {p: bool}, "borders": [...]}``;
        ``linked[p]`` tells whether p's first document continues the previous
        partition's path; ``borders`` holds each border's cosine and link.
    """
    by_partition = {s["partition"]: s for s in summaries}
    present = [p for p in order if p in by_partition]
    if len(by_partition) != len(present):
        raise RuntimeError("a traversed partition is missing from the partition order")
    offsets, linked, borders, filled = {}, {}, [], 0
    previous = None
    for p in present:
        s = by_partition[p]
        offsets[p] = filled
        filled += s["stats"]["documents"]
        if previous is None:
            linked[p] = False
        else:
            (last_vec, last_key, last_nbrs), (first_vec, first_key, first_nbrs) = previous["last"], s["first"]
            edge = bool(first_key in last_nbrs or last_key in first_nbrs)
            linked[p] = edge
            borders.append({"cosine": float(np.dot(last_vec.astype(np.float64), first_vec.astype(np.float64))),
                            "knn_edge": edge})
        previous = s
    return {"offsets": offsets, "linked": linked, "borders": borders, "documents": filled}


def positions(order: PartitionOrder, placement: dict, num_shards: int):
    """``(id shard, (keys, positions, path_start))`` of one partition's documents."""
    start = placement["offsets"][order.partition]
    position = start + np.arange(order.keys.size, dtype=np.int64)
    path_start = order.path_start.copy()
    if path_start.size:
        path_start[0] = not placement["linked"][order.partition]
    for shard, (keys, pos, starts) in split_by(shard_of_keys(order.keys, num_shards), order.keys, position,
                                               path_start):
        yield shard, (keys, pos, starts)


class TraversePartitions(beam.PTransform):
    """``(embedded, graph, centroids)`` -> dict of ``positions``, ``summaries`` and ``placement``.

    Args:
        mode: ``paper`` or ``improved``.
        near_duplicate: Cosine of adjacent near duplicates, for the quality figures.
        num_shards: Shards of the documents.
    """

    def __init__(self, mode: str, near_duplicate: float, num_shards: int):
        super().__init__()
        self._mode = mode
        self._near_duplicate = near_duplicate
        self._num_shards = num_shards

    def expand(self, pcolls):
        embedded, graph, centroids = pcolls
        orders = (
            {"embedded": embedded, "graph": graph}
            | "JoinGraphToVectors" >> beam.CoGroupByKey()
            | "RouteToTraversal" >> beam.FlatMap(route_members)
            | "GroupTraversalPartitions" >> beam.GroupByKey()
            | "Traverse" >> beam.Map(traverse_partition, self._mode, self._near_duplicate)
        )
        summaries = orders | "Summaries" >> beam.Map(summary) | "GatherSummaries" >> beam.combiners.ToList()
        order = centroids | "OrderPartitions" >> beam.Map(partition_order, self._mode)
        placement = summaries | "Layout" >> beam.Map(layout, beam.pvalue.AsSingleton(order))
        placed = orders | "Positions" >> beam.FlatMap(positions, beam.pvalue.AsSingleton(placement),
                                                      self._num_shards)
        return {"positions": placed, "summaries": summaries, "placement": placement}
