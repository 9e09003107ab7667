"""Document order by traversal of the kNN graph (Beam-free kernels).

``paper_order`` is Algorithm 1 of "In-Context Pretraining: Language Modeling
Beyond Document Boundaries" (Shi et al., ICLR 2024), the paper being the spec
where the reference code differs (that code starts from an arbitrary unseen
document, looks at 9 neighbours and cuts paths at 21 documents; none of that
is here):

1. start at an unvisited document of minimum degree;
2. repeatedly move to the most similar unvisited document of the current
   document's kNN list;
3. at a dead end (every listed neighbour visited) jump to an unvisited
   document of minimum degree; stop when every document is visited.

Degree, as in the paper: the number of documents a document shares an edge
with in the (undirected) document graph, an edge joining each document to each
of its k nearest neighbours; repeated and self entries count once / not at all.
``min_deg(D)`` in the paper takes D, the documents not yet visited, so by
default (``degree="remaining"``) an edge counts only while its other end is
unvisited: the walk starts where a document is about to be stranded.
``degree="static"`` counts every edge of the whole graph.

Tie-breaks (all deterministic): equal degrees go to the smallest key; equal
similarities to the neighbour with the smallest key. Keys default to row
indices; a caller that sorts its rows by document key gets the same order
without passing keys.

``traverse`` runs ``paper`` or ``improved``; ``order_partitions`` orders
partitions by the same traversal over their centroids. ``improved`` does not
start from Algorithm 1's walk: it builds paths by greedy edge matching over
every kNN edge (``greedy_edge_paths``: edges by similarity, each taken when both
ends still have a free side and it closes no cycle; the greedy-edge heuristic
of the travelling salesman problem), joins the paths end to end
(``path_joining.join_paths_fully``) and improves the path by 2-opt and or-opt
moves (``local_search``). On linux-doc and html-docs (benchmarks/order_bench.py)
that start was worth more than the improvement passes after Algorithm 1:
adjacent cosine (yardstick) 0.689 / 0.770 of top-1 with local search (0.686 /
0.767 before it), against Algorithm 1 then joins and local search at 0.681 /
0.763 and Algorithm 1 alone at 0.665 / 0.746.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from corpusmill.transforms.order import local_search, path_joining
from corpusmill.transforms.order.knn_graph import exact_knn, local_graph

TRAVERSAL_MODES = ("paper", "improved")
DEGREE_MODES = ("remaining", "static")

__all__ = [
    "DEGREE_MODES",
    "TRAVERSAL_MODES",
    "Traversal",
    "graph_jumps",
    "greedy_edge_paths",
    "order_partitions",
    "paper_order",
    "partitioned_traverse",
    "traverse",
    "undirected_adjacency",
]


class Traversal(NamedTuple):
    """An order of documents and where it leaves the kNN graph.

    Attributes:
        order: int64 (n,): row indices, each exactly once.
        path_starts: int64, ascending, first 0 (if n > 0): positions where a
            path begins. For ``paper``, Algorithm 1's jumps; for ``improved``,
            the positions whose predecessor is not a kNN edge away.
    """

    order: np.ndarray
    path_starts: np.ndarray


def _check_graph(neighbors: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    neighbors = np.ascontiguousarray(neighbors, dtype=np.int64)
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    if neighbors.ndim != 2 or neighbors.shape != scores.shape:
        raise ValueError(f"neighbors {neighbors.shape} and scores {scores.shape} must be equal (n, k)")
    n = neighbors.shape[0]
    if neighbors.size and (neighbors.min() < -1 or neighbors.max() >= n):
        raise ValueError(f"neighbors must be row indices in [0, {n}) or -1")
    return neighbors, scores


def _ranks(keys: np.ndarray | None, n: int) -> np.ndarray:
    if keys is None:
        return np.arange(n, dtype=np.int64)
    keys = np.asarray(keys)
    if keys.shape != (n,):
        raise ValueError(f"keys must have shape ({n},)")
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(keys, kind="stable")] = np.arange(n, dtype=np.int64)
    return rank


@numba.njit(cache=True)
def _nb_undirected(neighbors):
    n, k = neighbors.shape
    counts = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        for j in range(k):
            u = neighbors[i, j]
            if u >= 0 and u != i:
                counts[i + 1] += 1
                counts[u + 1] += 1
    fill = np.cumsum(counts)
    raw = np.empty(fill[n], dtype=np.int64)
    cursor = fill[:n].copy()
    for i in range(n):
        for j in range(k):
            u = neighbors[i, j]
            if u >= 0 and u != i:
                raw[cursor[i]] = u
                cursor[i] += 1
                raw[cursor[u]] = i
                cursor[u] += 1
    # Each row sorted and deduplicated in place, then compacted.
    indptr = np.zeros(n + 1, dtype=np.int64)
    out = 0
    for i in range(n):
        row = np.sort(raw[fill[i]:fill[i + 1]])
        for t in range(row.shape[0]):
            if t == 0 or row[t] != row[t - 1]:
                raw[out] = row[t]
                out += 1
        indptr[i + 1] = out
    return indptr, raw[:out].copy()


def undirected_adjacency(neighbors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The undirected document graph of a kNN list, in CSR form.

    Args:
        neighbors: int64 (n, k) row indices, -1 padded; repeats and self
            entries are ignored.

    Returns:
        ``(indptr, indices)``: the neighbours of row i are
        ``indices[indptr[i]:indptr[i + 1]]``, sorted and distinct; the degree
        of row i is ``indptr[i + 1] - indptr[i]``.
    """
    neighbors, _ = _check_graph(neighbors, np.zeros(np.shape(neighbors), np.float32))
    return _nb_undirected(neighbors)


@numba.njit(cache=True)
def _nb_sift_up(heap, pos, key, i):
    node = heap[i]
    while i > 0:
        parent = (i - 1) >> 1
        if key[heap[parent]] <= key[node]:
            break
        heap[i] = heap[parent]
        pos[heap[i]] = i
        i = parent
    heap[i] = node
    pos[node] = i


@numba.njit(cache=True)
def _nb_sift_down(heap, pos, key, i, size):
    node = heap[i]
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and key[heap[child + 1]] < key[heap[child]]:
            child += 1
        if key[heap[child]] >= key[node]:
            break
        heap[i] = heap[child]
        pos[heap[i]] = i
        i = child
    heap[i] = node
    pos[node] = i


@numba.njit(cache=True)
def _nb_best_unvisited(neighbors, scores, rank, visited, current):
    best = -1
    best_score = np.float32(0.0)
    for j in range(neighbors.shape[1]):
        v = neighbors[current, j]
        if v < 0 or v == current or visited[v]:
            continue
        s = scores[current, j]
        if best < 0 or s > best_score or (s == best_score and rank[v] < rank[best]):
            best, best_score = v, s
    return best


@numba.njit(cache=True)
def _nb_paper_walk(neighbors, scores, rank, indptr, adjacency, remaining):
    n = neighbors.shape[0]
    # An indexed min-heap of documents by key = degree * n + rank (unique), one
    # entry a document: a degree decrement sifts the document up in place, so the
    # heap never outgrows n and a decrement by one mostly moves it a level or none.
    # Visited documents stay in it until popped, and are then skipped.
    key = np.empty(n, dtype=np.int64)
    heap = np.empty(n, dtype=np.int64)
    pos = np.empty(n, dtype=np.int64)
    for i in range(n):
        key[i] = (indptr[i + 1] - indptr[i]) * n + rank[i]
        heap[i] = i
        pos[i] = i
    for i in range(n // 2 - 1, -1, -1):
        _nb_sift_down(heap, pos, key, i, n)
    size = n
    visited = np.zeros(n, dtype=np.bool_)
    order = np.empty(n, dtype=np.int64)
    starts = np.empty(n, dtype=np.int64)
    filled = 0
    paths = 0
    while filled < n:
        while True:
            current = heap[0]
            size -= 1
            if size > 0:
                heap[0] = heap[size]
                pos[heap[0]] = 0
                _nb_sift_down(heap, pos, key, 0, size)
            if not visited[current]:
                break
        starts[paths] = filled
        paths += 1
        while current >= 0:
            visited[current] = True
            order[filled] = current
            filled += 1
            if remaining:
                for t in range(indptr[current], indptr[current + 1]):
                    v = adjacency[t]
                    if not visited[v]:
                        key[v] -= n
                        _nb_sift_up(heap, pos, key, pos[v])
            current = _nb_best_unvisited(neighbors, scores, rank, visited, current)
    return order, starts[:paths].copy()


def paper_order(neighbors: np.ndarray, scores: np.ndarray, keys: np.ndarray | None = None,
                degree: str = "remaining") -> Traversal:
    """Algorithm 1 of the paper on a kNN graph (module docstring).

    Time O(n k log n) at most, memory O(n k): one pass over the lists, an
    indexed heap of one entry per document, a sift up per degree decrement.

    Args:
        neighbors: int64 (n, k) row indices, -1 padded; any order, repeats
            and self entries allowed.
        scores: float32 (n, k) similarities, aligned.
        keys: Optional (n,) sortable keys for the tie-breaks (default: row index).
        degree: ``remaining`` (the paper's min_deg over unvisited documents)
            or ``static`` (degree in the whole graph).

    Returns:
        The ``Traversal``: order and the start of every path (each jump).
    """
    if degree not in DEGREE_MODES:
        raise ValueError(f"degree must be one of {DEGREE_MODES}, got {degree!r}")
    neighbors, scores = _check_graph(neighbors, scores)
    n = neighbors.shape[0]
    if n == 0:
        return Traversal(np.empty(0, np.int64), np.empty(0, np.int64))
    indptr, adjacency = _nb_undirected(neighbors)
    order, starts = _nb_paper_walk(neighbors, scores, _ranks(keys, n), indptr, adjacency,
                                   degree == "remaining")
    return Traversal(order, starts)


def graph_jumps(order: np.ndarray, neighbors: np.ndarray) -> np.ndarray:
    """Positions (first 0) whose predecessor in ``order`` is not a kNN edge away.

    Args:
        order: int64 (n,) row indices.
        neighbors: int64 (n, k) kNN lists; an edge counts in either direction.

    Returns:
        int64 ascending positions, 0 included when n > 0.
    """
    order = np.asarray(order, dtype=np.int64)
    if order.size == 0:
        return np.empty(0, np.int64)
    a, b = order[:-1], order[1:]
    linked = (neighbors[a] == b[:, None]).any(axis=1) | (neighbors[b] == a[:, None]).any(axis=1)
    return np.concatenate([[0], np.flatnonzero(~linked) + 1]).astype(np.int64)


def traverse(neighbors: np.ndarray, scores: np.ndarray, embeddings: np.ndarray | None = None,
             mode: str = "improved", keys: np.ndarray | None = None, degree: str = "remaining",
             window: int = local_search.DEFAULT_WINDOW) -> Traversal:
    """Order the documents of one partition.

    Args:
        neighbors: int64 (n, k) kNN row indices (``knn_graph.exact_knn``).
        scores: float32 (n, k) cosines, aligned.
        embeddings: float32 (n, d) L2-normalised, required by ``improved``
            (joins and moves score pairs that are not kNN edges).
        mode: ``paper`` (Algorithm 1 alone) or ``improved`` (``greedy_edge_paths``,
            then ``path_joining.join_paths_fully`` and ``local_search.improve``;
            module docstring).
        keys: Optional (n,) keys for the tie-breaks (default: row index).
        degree: Algorithm 1's degree, ``remaining`` or ``static`` (``paper`` only).
        window: Largest position span of one local-search move.

    Returns:
        The ``Traversal``.
    """
    if mode not in TRAVERSAL_MODES:
        raise ValueError(f"mode must be one of {TRAVERSAL_MODES}, got {mode!r}")
    neighbors, scores = _check_graph(neighbors, scores)
    if mode == "paper":
        return paper_order(neighbors, scores, keys=keys, degree=degree)
    if embeddings is None:
        raise ValueError("mode 'improved' needs the embeddings")
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    if embeddings.shape[0] != neighbors.shape[0]:
        raise ValueError("embeddings and neighbors must have the same rows")
    rank = _ranks(keys, neighbors.shape[0])
    order, starts = greedy_edge_paths(neighbors, scores, rank)
    order, _ = path_joining.join_paths_fully(order, starts, neighbors, scores, embeddings, rank)
    order = local_search.improve(order, neighbors, scores, embeddings, window=window)
    return Traversal(order, graph_jumps(order, neighbors))


def greedy_edge_paths(neighbors: np.ndarray, scores: np.ndarray,
                      rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paths of greedy edge matching over every kNN edge, each document a path of its own first.

    Args:
        neighbors: int64 (n, k) kNN rows, -1 padded.
        scores: float32 (n, k) aligned similarities.
        rank: int64 (n,) tie-break rank of every row (equal similarities: smaller ranks first).

    Returns:
        ``(order, path_starts)``: every row once, paths in the order of their first row's
        first appearance (``path_joining.join_paths``).
    """
    n, k = neighbors.shape
    a = np.repeat(np.arange(n, dtype=np.int64), k)
    b = neighbors.reshape(-1)
    kept = (b >= 0) & (b != a)
    singletons = np.arange(n, dtype=np.int64)
    order, starts, _ = path_joining.join_paths(singletons, singletons, a[kept], b[kept],
                                               scores.reshape(-1)[kept], rank)
    return order, starts


def order_partitions(centroids: np.ndarray, k: int = 10, mode: str = "improved") -> np.ndarray:
    """The order of partitions: the same traversal over the centroid kNN graph.

    The global order is then the partitions' own orders concatenated in this
    order; no worker holds more than one partition.

    Args:
        centroids: float32 (P, d) L2-normalised centroids (``train_centroids``).
        k: Neighbours per centroid in the centroid graph (capped at P - 1).
        mode: ``paper`` or ``improved``.

    Returns:
        int64 (P,): partition ids in traversal order; ties by partition id.
    """
    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    if centroids.shape[0] <= 1:
        return np.arange(centroids.shape[0], dtype=np.int64)
    neighbors, scores = exact_knn(centroids, min(k, centroids.shape[0] - 1))
    return traverse(neighbors, scores, centroids, mode=mode).order


def partitioned_traverse(neighbors: np.ndarray, scores: np.ndarray, embeddings: np.ndarray | None,
                         primary: np.ndarray, partition_order: np.ndarray, mode: str = "improved",
                         keys: np.ndarray | None = None) -> Traversal:
    """Each partition traversed on its own, concatenated in partition order: the pipeline's reference.

    Args:
        neighbors: int64 (n, k) the whole graph's rows.
        scores: float32 (n, k) aligned.
        embeddings: float32 (n, d), for ``improved``.
        primary: int64 (n,) each document's one traversal partition.
        partition_order: int64 partition ids in order (``order_partitions``).
        mode: ``paper`` or ``improved``.
        keys: Optional (n,) tie-break keys; within a partition, rows go in key order.

    Returns:
        The global ``Traversal``; every partition starts a path.
    """
    neighbors, scores = _check_graph(neighbors, scores)
    rank = _ranks(keys, neighbors.shape[0])
    primary = np.asarray(primary, dtype=np.int64)
    pieces, starts, filled = [], [], 0
    for p in np.asarray(partition_order, dtype=np.int64):
        members = np.flatnonzero(primary == p)
        members = members[np.argsort(rank[members], kind="stable")]
        local_neighbors, local_scores = local_graph(members, neighbors[members], scores[members])
        part = traverse(local_neighbors, local_scores,
                        None if embeddings is None else embeddings[members], mode=mode)
        pieces.append(members[part.order])
        starts.append(part.path_starts + filled)
        filled += members.size
    order = np.concatenate(pieces) if pieces else np.empty(0, np.int64)
    if order.size != neighbors.shape[0]:
        raise ValueError("partition_order must name the primary partition of every document")
    return Traversal(order, np.concatenate(starts) if starts else np.empty(0, np.int64))
