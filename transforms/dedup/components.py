"""Connected components of the duplicate graph (Beam-free kernels).

Nodes are int64 document uids and every component is labelled with its
smallest uid, by both algorithms here, so their results compare directly.

* ``union_find_components``: one worker, all edges in memory; the shortcut for
  small graphs.
* Large-star / small-star (Kiveris et al., "Connected Components in MapReduce
  and Beyond", SoCC 2014): each operation is local to one node's
  neighbourhood, so a Beam pipeline runs it as one shuffle keyed by node
  partition (``node_partition``) per operation, with ``large_star`` and
  ``small_star`` applied to each partition's edges. The pipeline unrolls a
  fixed number of rounds; the graph stops changing once every component is a
  star around its smallest node, and ``edge_checksum`` of each round's edges
  shows when that happened. ``distributed_components`` runs the same rounds
  in one process, partition by partition, as the reference for the tests.
"""

from __future__ import annotations

import numba
import numpy as np

COMPONENT_MODES = ("auto", "single", "distributed")

__all__ = [
    "COMPONENT_MODES",
    "choose_mode",
    "concat_pairs",
    "edge_checksum",
    "distributed_components",
    "large_star",
    "min_label_per_node",
    "mode_reason",
    "node_partition",
    "small_star",
    "star_labels",
    "union_find_components",
    "unique_rows",
]

_EMPTY = np.empty(0, dtype=np.int64)


@numba.njit(cache=True)
def _nb_find(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]  # path halving keeps trees shallow
        i = parent[i]
    return i


@numba.njit(cache=True)
def _nb_union_find(parent, a, b):
    for e in range(a.shape[0]):
        ra = _nb_find(parent, a[e])
        rb = _nb_find(parent, b[e])
        # The smaller index becomes the root, so each root is its component's minimum.
        if ra < rb:
            parent[rb] = ra
        elif rb < ra:
            parent[ra] = rb
    for i in range(parent.shape[0]):
        parent[i] = _nb_find(parent, i)


def union_find_components(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of an edge list on one worker.

    Args:
        left: int64 endpoints.
        right: int64 endpoints, aligned with ``left``.

    Returns:
        ``(nodes, labels)``: every node that occurs in an edge, sorted, and the
        smallest node of its component.
    """
    left = np.asarray(left, dtype=np.int64)
    right = np.asarray(right, dtype=np.int64)
    if left.size == 0:
        return _EMPTY.copy(), _EMPTY.copy()
    nodes, inverse = np.unique(np.concatenate([left, right]), return_inverse=True)
    parent = np.arange(nodes.shape[0], dtype=np.int64)
    inverse = inverse.astype(np.int64)
    _nb_union_find(parent, inverse[: left.shape[0]], inverse[left.shape[0]:])
    return nodes, nodes[parent]


def node_partition(nodes: np.ndarray, num_partitions: int) -> np.ndarray:
    """The partition that owns each node: a mixed hash of the uid, modulo num_partitions.

    Mixing keeps the partitions balanced whatever the uids are (hashes of
    ids, or any other numbering).
    """
    h = np.asarray(nodes, dtype=np.int64).astype(np.uint64)
    h = (h ^ (h >> np.uint64(33))) * np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    return (h % np.uint64(max(1, num_partitions))).astype(np.int64)


def _group_min(keys_sorted: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group starts, per-row group index and per-group minimum of values, for sorted keys."""
    starts = np.flatnonzero(np.concatenate([[True], keys_sorted[1:] != keys_sorted[:-1]]))
    group = np.cumsum(np.concatenate([[False], keys_sorted[1:] != keys_sorted[:-1]]))
    return starts, group, np.minimum.reduceat(values, starts)


def _sorted_group_min(keys: np.ndarray, values: np.ndarray):
    """Both arrays sorted by key (stable), with ``_group_min``'s starts, groups and minima."""
    keys = np.asarray(keys, dtype=np.int64)
    values = np.asarray(values, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], values[order]
    return (keys, values, *_group_min(keys, values))


def large_star(node: np.ndarray, neighbour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The large-star operation for the nodes of one partition.

    Every node connects its larger neighbours to the smallest node of its
    closed neighbourhood.

    Args:
        node: int64 nodes owned by this partition, one row per incident edge.
        neighbour: int64, ``neighbour[i]`` is adjacent to ``node[i]``. All
            edges of an owned node must be present (send both orientations).

    Returns:
        ``(child, parent)`` edges with ``parent < child``, possibly repeated.
    """
    if np.size(node) == 0:
        return _EMPTY.copy(), _EMPTY.copy()
    node, neighbour, _, group, smallest = _sorted_group_min(node, neighbour)
    smallest_closed = np.minimum(smallest[group], node)
    larger = neighbour > node
    return neighbour[larger], smallest_closed[larger]


def small_star(child: np.ndarray, parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The small-star operation for the nodes of one partition.

    Every node connects itself and its smaller neighbours to the smallest of them.

    Args:
        child: int64 nodes owned by this partition, one row per edge to a smaller node.
        parent: int64 smaller endpoints (``parent < child``). All edges from an
            owned node to smaller nodes must be present.

    Returns:
        ``(child, parent)`` edges with ``parent < child``, possibly repeated.
    """
    if np.size(child) == 0:
        return _EMPTY.copy(), _EMPTY.copy()
    child, parent, starts, group, smallest = _sorted_group_min(child, parent)
    target = smallest[group]
    # The node itself joins its smallest smaller neighbour ...
    own_child, own_parent = child[starts], smallest
    # ... and so does every other smaller neighbour.
    others = parent != target
    return (np.concatenate([own_child, parent[others]]),
            np.concatenate([own_parent, target[others]]))


def edge_checksum(larger: np.ndarray, smaller: np.ndarray) -> tuple[int, int]:
    """Order-independent fingerprint of a set of undirected edges.

    Args:
        larger: int64 larger endpoints of unique edges.
        smaller: int64 smaller endpoints, aligned.

    Returns:
        ``(count, sum of mixed edge hashes mod 2**64)``; sums of disjoint
        parts add up (mod 2**64) to the fingerprint of their union.
    """
    h = np.asarray(larger, dtype=np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    h ^= np.asarray(smaller, dtype=np.int64).astype(np.uint64)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(29)
    total = int(np.sum(h, dtype=np.uint64)) if h.size else 0
    return int(h.size), total


def star_labels(child: np.ndarray, parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Node labels read off converged (child, parent) star edges.

    Returns:
        ``(nodes, labels)`` unreduced: each child labelled with its parent and
        each parent with itself; reduce with ``min_label_per_node``.
    """
    child = np.asarray(child, dtype=np.int64)
    parent = np.asarray(parent, dtype=np.int64)
    return np.concatenate([child, parent]), np.concatenate([parent, parent])


def min_label_per_node(nodes: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each distinct node with the smallest label it was given, sorted by node."""
    nodes = np.asarray(nodes, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if nodes.size == 0:
        return _EMPTY.copy(), _EMPTY.copy()
    order = np.lexsort([labels, nodes])
    nodes, labels = nodes[order], labels[order]
    first = np.concatenate([[True], nodes[1:] != nodes[:-1]])
    return nodes[first], labels[first]


def _canonical(child: np.ndarray, parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if child.size == 0:
        return _EMPTY.copy(), _EMPTY.copy()
    pairs = np.unique(np.stack([child, parent], axis=1), axis=0)
    return pairs[:, 0].copy(), pairs[:, 1].copy()


def distributed_components(left: np.ndarray, right: np.ndarray, num_partitions: int = 4,
                           max_rounds: int = 32) -> tuple[np.ndarray, np.ndarray, dict]:
    """Large-star / small-star rounds run partition by partition in one process.

    This is exactly what the Beam stage does with one shuffle per operation,
    and serves as its reference.

    Args:
        left: int64 endpoints.
        right: int64 endpoints.
        num_partitions: Node partitions per operation.
        max_rounds: Rounds (one large-star then one small-star each) to run.

    Returns:
        ``(nodes, labels, info)`` where ``info`` has ``rounds_to_converge``
        (rounds that changed the edge set; None if it still changed in the last
        round) and ``checksums`` (one per round input, plus the final edges).
    """
    left = np.asarray(left, dtype=np.int64)
    right = np.asarray(right, dtype=np.int64)
    larger, smaller = _canonical(np.maximum(left, right), np.minimum(left, right))
    keep = larger != smaller
    child, parent = larger[keep], smaller[keep]
    checksums = []
    for _ in range(max_rounds):
        checksums.append(edge_checksum(child, parent))
        node = np.concatenate([child, parent])
        neighbour = np.concatenate([parent, child])
        owner = node_partition(node, num_partitions)
        outs = [large_star(node[owner == p], neighbour[owner == p]) for p in range(num_partitions)]
        child, parent = _canonical(np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs]))
        owner = node_partition(child, num_partitions)
        outs = [small_star(child[owner == p], parent[owner == p]) for p in range(num_partitions)]
        child, parent = _canonical(np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs]))
    checksums.append(edge_checksum(child, parent))
    nodes, labels = min_label_per_node(*star_labels(child, parent))
    return nodes, labels, {"rounds_to_converge": rounds_to_converge(checksums), "checksums": checksums}


def rounds_to_converge(checksums: list[tuple[int, int]]) -> int | None:
    """Rounds that changed the edge set, from the checksums of each round's input and the final edges.

    Returns:
        The first round index ``i`` whose input equals round ``i + 1``'s (so
        ``i`` rounds did all the work), or None if the last round still changed edges.
    """
    for i in range(len(checksums) - 1):
        if checksums[i] == checksums[i + 1]:
            return i
    return None


def concat_pairs(pairs) -> tuple[np.ndarray, np.ndarray]:
    """One (left, right) int64 edge array pair from many."""
    pairs = list(pairs)
    if not pairs:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    return (np.concatenate([p[0] for p in pairs]).astype(np.int64, copy=False),
            np.concatenate([p[1] for p in pairs]).astype(np.int64, copy=False))


def choose_mode(requested: str, edge_count: int, single_worker_max_edges: int) -> str:
    """The branch that labels the graph: the requested one, or for auto by edge count."""
    if requested != "auto":
        return requested
    return "single" if edge_count <= single_worker_max_edges else "distributed"


def mode_reason(requested: str, mode: str, edge_count: int, single_worker_max_edges: int,
                single_partition: bool) -> str:
    """Why ``mode`` ran, for the manifest."""
    if requested != "auto":
        return f"components = {requested} requested"
    if single_partition:
        return "auto with a single-partition input: single-worker union-find chosen when the pipeline was built"
    relation = "<=" if mode == "single" else ">"
    return f"auto: {edge_count} edges {relation} single_worker_max_edges {single_worker_max_edges}"


def unique_rows(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (a, b) pairs, sorted."""
    if a.size == 0:
        return a, b
    pairs = np.unique(np.stack([a, b], axis=1), axis=0)
    return pairs[:, 0].copy(), pairs[:, 1].copy()
