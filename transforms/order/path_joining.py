"""Joining the paths of a traversal end to end (Beam-free kernels).

Algorithm 1 leaves many paths: each dead end is followed by a jump to a
document chosen by degree alone, so the pair across a jump is about as similar
as two random documents. Here the paths become longer chains by greedy edge
matching of their endpoints (the greedy-edge heuristic of the travelling
salesman problem, restricted to path ends): candidate links are sorted by
similarity, and a link is taken when both its ends are still free and it joins
two different chains (a union-find rules out cycles). A one-document path can
take a link on each side. Interiors of paths are never changed.

``join_paths_fully`` first uses the kNN edges between endpoints (free: they
are in the graph already), then rounds of links proposed by a kNN search over
the remaining endpoints' embeddings, until one chain is left or a round joins
nothing. Every document stays exactly once.

Tie-breaks: equal similarities go to the link whose smaller endpoint rank is
smaller, then the larger one's; chains come out in the order of their first
path in the input.
"""

from __future__ import annotations

import numba
import numpy as np

from corpusmill.transforms.order.knn_graph import exact_knn, partitioned_knn

# Endpoints searched exactly up to this many; beyond, by the partitioned build.
EXACT_ENDPOINT_LIMIT = 20_000
ENDPOINT_NEIGHBORS = 8

__all__ = [
    "embedding_candidates",
    "graph_candidates",
    "join_paths",
    "join_paths_fully",
    "path_of_rows",
]


def path_of_rows(order: np.ndarray, path_starts: np.ndarray) -> np.ndarray:
    """int64 (n,): the path index of every row, for an order and its path starts."""
    order = np.asarray(order, dtype=np.int64)
    path_starts = np.asarray(path_starts, dtype=np.int64)
    lengths = np.diff(np.append(path_starts, order.size))
    path_of = np.empty(order.size, dtype=np.int64)
    path_of[order] = np.repeat(np.arange(path_starts.size, dtype=np.int64), lengths)
    return path_of


def _endpoints(order: np.ndarray, path_starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ends = np.append(path_starts[1:], order.size) - 1
    return order[path_starts], order[ends]


@numba.njit(cache=True)
def _nb_graph_candidates(heads, tails, path_of, neighbors, scores):
    k = neighbors.shape[1]
    size = 2 * heads.shape[0] * k
    a = np.empty(size, dtype=np.int64)
    b = np.empty(size, dtype=np.int64)
    s = np.empty(size, dtype=np.float32)
    m = 0
    for p in range(heads.shape[0]):
        for side in range(2):
            x = heads[p] if side == 0 else tails[p]
            if side == 1 and x == heads[p]:
                break  # a one-document path has one endpoint row
            for j in range(k):
                v = neighbors[x, j]
                if v < 0 or v == x:
                    continue
                q = path_of[v]
                if q != p and (v == heads[q] or v == tails[q]):
                    a[m], b[m], s[m] = x, v, scores[x, j]
                    m += 1
    return a[:m], b[:m], s[:m]


def graph_candidates(order: np.ndarray, path_starts: np.ndarray, neighbors: np.ndarray,
                     scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Links between endpoints of different paths that are kNN edges.

    Returns:
        ``(a, b, similarity)``: rows, rows, float32; a mutual edge appears twice.
    """
    heads, tails = _endpoints(order, path_starts)
    return _nb_graph_candidates(heads, tails, path_of_rows(order, path_starts),
                                np.ascontiguousarray(neighbors, np.int64),
                                np.ascontiguousarray(scores, np.float32))


def embedding_candidates(order: np.ndarray, path_starts: np.ndarray, embeddings: np.ndarray,
                         k: int = ENDPOINT_NEIGHBORS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Links from each path endpoint to its k most similar endpoints of other paths.

    The search covers endpoints only, so its cost follows the number of paths,
    not of documents: exact up to ``EXACT_ENDPOINT_LIMIT`` endpoints, the
    partitioned build (seeded, nprobe 2) beyond.

    Returns:
        ``(a, b, similarity)`` as ``graph_candidates``.
    """
    heads, tails = _endpoints(order, path_starts)
    rows = np.unique(np.concatenate([heads, tails]))
    empty = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))
    if rows.size < 2:
        return empty
    vectors = embeddings[rows]
    want = min(k + 2, rows.size - 1)  # +2: a path's own other end is dropped below
    if rows.size <= EXACT_ENDPOINT_LIMIT:
        found, similarity = exact_knn(vectors, want)
    else:
        built = partitioned_knn(vectors, want, num_partitions=max(2, rows.size // 1000), nprobe=2)
        found, similarity = built.neighbors, built.scores
    a = np.repeat(rows, found.shape[1])
    b = np.where(found >= 0, rows[np.maximum(found, 0)], -1).ravel()
    similarity = similarity.ravel()
    path_of = path_of_rows(order, path_starts)
    keep = (b >= 0) & (path_of[a] != path_of[np.maximum(b, 0)])
    return a[keep], b[keep], similarity[keep]


@numba.njit(cache=True)
def _nb_find(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]  # path halving keeps the trees shallow
        i = parent[i]
    return i


@numba.njit(cache=True)
def _nb_free_side(p, x, heads, tails, link_to):
    """The free side (0 head, 1 tail) of path p at its endpoint row x, or -1."""
    if heads[p] == tails[p]:
        if link_to[p, 1] < 0:
            return 1
        return 0 if link_to[p, 0] < 0 else -1
    side = 0 if x == heads[p] else (1 if x == tails[p] else -1)
    if side < 0 or link_to[p, side] >= 0:
        return -1
    return side


@numba.njit(cache=True)
def _nb_match(a, b, heads, tails, path_of):
    paths = heads.shape[0]
    link_to = np.full((paths, 2), -1, dtype=np.int64)
    link_side = np.full((paths, 2), -1, dtype=np.int64)
    parent = np.arange(paths)
    joins = 0
    for e in range(a.shape[0]):
        p, q = path_of[a[e]], path_of[b[e]]
        if p == q:
            continue
        side_p = _nb_free_side(p, a[e], heads, tails, link_to)
        side_q = _nb_free_side(q, b[e], heads, tails, link_to)
        if side_p < 0 or side_q < 0:
            continue
        root_p, root_q = _nb_find(parent, p), _nb_find(parent, q)
        if root_p == root_q:
            continue  # the link would close a cycle
        parent[max(root_p, root_q)] = min(root_p, root_q)
        link_to[p, side_p], link_side[p, side_p] = q, side_q
        link_to[q, side_q], link_side[q, side_q] = p, side_p
        joins += 1
    return link_to, link_side, joins


@numba.njit(cache=True)
def _nb_assemble(order, path_starts, link_to, link_side):
    n, paths = order.shape[0], path_starts.shape[0]
    out = np.empty(n, dtype=np.int64)
    chain_starts = np.empty(paths, dtype=np.int64)
    done = np.zeros(paths, dtype=np.bool_)
    filled = 0
    chains = 0
    for first in range(paths):
        if done[first] or (link_to[first, 0] >= 0 and link_to[first, 1] >= 0):
            continue  # chains are entered at an end; cycles cannot exist
        chain_starts[chains] = filled
        chains += 1
        p = first
        side_in = 0 if link_to[p, 0] < 0 else 1
        while p >= 0:
            done[p] = True
            start = path_starts[p]
            stop = path_starts[p + 1] if p + 1 < paths else n
            if side_in == 0:
                for t in range(start, stop):
                    out[filled] = order[t]
                    filled += 1
            else:
                for t in range(stop - 1, start - 1, -1):
                    out[filled] = order[t]
                    filled += 1
            exit_side = 1 - side_in
            p, side_in = link_to[p, exit_side], link_side[p, exit_side]
    return out, chain_starts[:chains].copy()


def join_paths(order: np.ndarray, path_starts: np.ndarray, a: np.ndarray, b: np.ndarray,
               similarity: np.ndarray, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Greedy matching of path endpoints over candidate links (module docstring).

    Args:
        order: int64 (n,) rows, each once.
        path_starts: int64 ascending positions where paths begin, first 0.
        a: int64 candidate link ends (rows that are endpoints of their path).
        b: int64 other ends, aligned.
        similarity: float32 link similarities, aligned.
        rank: int64 (n,) tie-break rank of every row (0..n-1).

    Returns:
        ``(order, chain_starts, joins)``: the new order, where its chains begin,
        and how many links were taken.
    """
    order = np.asarray(order, dtype=np.int64)
    path_starts = np.asarray(path_starts, dtype=np.int64)
    if order.size == 0 or path_starts.size <= 1 or np.size(a) == 0:
        return order.copy(), path_starts.copy(), 0
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    similarity = np.asarray(similarity, np.float32)
    low, high = np.minimum(rank[a], rank[b]), np.maximum(rank[a], rank[b])
    by_similarity = np.lexsort((high, low, -similarity))
    heads, tails = _endpoints(order, path_starts)
    link_to, link_side, joins = _nb_match(a[by_similarity], b[by_similarity], heads, tails,
                                          path_of_rows(order, path_starts))
    new_order, chain_starts = _nb_assemble(order, path_starts, link_to, link_side)
    return new_order, chain_starts, int(joins)


def join_paths_fully(order: np.ndarray, path_starts: np.ndarray, neighbors: np.ndarray,
                     scores: np.ndarray, embeddings: np.ndarray, rank: np.ndarray,
                     k: int = ENDPOINT_NEIGHBORS, max_rounds: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """kNN-edge links first, then endpoint-search rounds, until one chain or no progress.

    Args:
        order: int64 (n,) rows (Algorithm 1's order).
        path_starts: int64 its path starts.
        neighbors: int64 (n, k) kNN rows.
        scores: float32 (n, k) aligned similarities.
        embeddings: float32 (n, d) L2-normalised.
        rank: int64 (n,) tie-break rank of every row.
        k: Endpoints proposed per endpoint in each search round.
        max_rounds: Search rounds at most.

    Returns:
        ``(order, chain_starts)``.
    """
    order, starts, _ = join_paths(order, path_starts,
                                  *graph_candidates(order, path_starts, neighbors, scores), rank)
    for _ in range(max_rounds):
        if starts.size <= 1:
            break
        order, starts, joins = join_paths(order, starts,
                                          *embedding_candidates(order, starts, embeddings, k), rank)
        if joins == 0:
            break
    return order, starts
