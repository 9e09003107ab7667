"""Local search on a document order: 2-opt and or-opt over kNN neighbourhoods (Beam-free).

The objective is the total similarity of adjacent documents (the order is an
open path: nothing links its last document back to its first). Two moves, both
proposed only towards a document's kNN neighbours:

* 2-opt: cut two edges and reverse the documents between them, so that a
  document comes to sit next to one of its neighbours;
* or-opt: take out a segment of 1 to ``MAX_SEGMENT`` documents (closing the
  gap) and put it back, either way round, next to a neighbour of one of its ends.

A move is tried only if the new edge beats the edge it replaces at that
document (the usual neighbour-list pruning), and applied when it raises the
total by more than ``MIN_GAIN``; so the search ends, and every move keeps each
document exactly once. Moves span at most ``window`` positions, which bounds
the cost of one move and keeps the whole pass near-linear in n k. Documents
whose surroundings changed are queued again (first in, first out), so the
search stops at a local optimum of these moves or after ``max_moves``.

Similarities are recomputed from the embeddings by one fixed kernel (float64
sums in a fixed order), so the result is the same on every machine.
"""

from __future__ import annotations

import numba
import numpy as np

DEFAULT_WINDOW = 10_000
MAX_SEGMENT = 3
MIN_GAIN = 1e-7

__all__ = ["DEFAULT_WINDOW", "MAX_SEGMENT", "MIN_GAIN", "improve", "improve_with_stats"]


@numba.njit(cache=True)
def _sim(embeddings, a, b):
    if a < 0 or b < 0:
        return 0.0  # the open ends of the path
    total = 0.0
    for t in range(embeddings.shape[1]):
        total += np.float64(embeddings[a, t]) * np.float64(embeddings[b, t])
    # Rounded as knn_graph rounds its scores, so both give a pair the same value.
    return np.float64(np.float32(total))


@numba.njit(cache=True)
def _at(order, i):
    return order[i] if 0 <= i < order.shape[0] else -1


@numba.njit(cache=True)
def _edge(edges, i):
    """Similarity across edge i (between positions i and i + 1); 0 past the ends."""
    return edges[i] if 0 <= i < edges.shape[0] else 0.0


@numba.njit(cache=True)
def _set_edge(edges, order, embeddings, i):
    if 0 <= i < edges.shape[0]:
        edges[i] = _sim(embeddings, order[i], order[i + 1])


@numba.njit(cache=True)
def _nb_reverse(order, pos, edges, lo, hi):
    """Reverse positions lo + 1 .. hi (cutting edges lo and hi)."""
    first, last = lo + 1, hi
    while first < last:
        x, y = order[first], order[last]
        order[first], order[last] = y, x
        pos[y], pos[x] = first, last
        first += 1
        last -= 1
    first, last = lo + 1, hi - 1  # the edges inside keep their values, reversed
    while first < last:
        edges[first], edges[last] = edges[last], edges[first]
        first += 1
        last -= 1


@numba.njit(cache=True)
def _nb_try_two_opt(a, order, pos, edges, neighbors, scores, embeddings, window):
    """Cut two edges, one at a, and reverse between, so that a meets a neighbour."""
    p = pos[a]
    for side in range(2):  # 0: the edge after a, 1: the edge before a
        e1 = p if side == 0 else p - 1
        current = _edge(edges, e1)
        for j in range(neighbors.shape[1]):
            c = neighbors[a, j]
            if c < 0 or c == a or scores[a, j] <= current:
                continue
            q = pos[c]
            e2 = q if side == 0 else q - 1
            lo, hi = min(e1, e2), max(e1, e2)
            if hi - lo < 2 or hi - lo > window:
                continue
            u1, v1, u2, v2 = _at(order, lo), order[lo + 1], order[hi], _at(order, hi + 1)
            new_lo, new_hi = _sim(embeddings, u1, u2), _sim(embeddings, v1, v2)
            if new_lo + new_hi - _edge(edges, lo) - _edge(edges, hi) > MIN_GAIN:
                _nb_reverse(order, pos, edges, lo, hi)
                if lo >= 0:
                    edges[lo] = new_lo
                if hi < edges.shape[0]:
                    edges[hi] = new_hi
                return lo, hi + 1
    return -1, -1


@numba.njit(cache=True)
def _nb_move_segment(order, pos, edges, embeddings, i, length, t, reverse):
    """Move positions i .. i + length - 1 between positions t and t + 1, outside the segment."""
    segment = order[i:i + length].copy()
    inner = edges[i:i + length - 1].copy()
    if reverse:
        segment, inner = segment[::-1].copy(), inner[::-1].copy()
    if t < i:  # the block t + 1 .. i - 1 moves right by length
        for x in range(i - 1, t, -1):
            order[x + length] = order[x]
            pos[order[x]] = x + length
        for x in range(i - 2, t, -1):
            edges[x + length] = edges[x]
        base, block_end = t + 1, i + length - 1
        joins = (t, t + length, block_end)
    else:  # the block i + length .. t moves left by length
        for x in range(i + length, t + 1):
            order[x - length] = order[x]
            pos[order[x]] = x - length
        for x in range(i + length, t):
            edges[x - length] = edges[x]
        base = t - length + 1
        joins = (i - 1, base - 1, t)
    for s in range(length):
        order[base + s] = segment[s]
        pos[segment[s]] = base + s
    for s in range(length - 1):
        edges[base + s] = inner[s]
    for e in joins:
        _set_edge(edges, order, embeddings, e)
    return base


@numba.njit(cache=True)
def _nb_best_insertion(end, other, outer, order, pos, edges, i, length, neighbors, scores,
                       embeddings, window):
    """The best place for segment i .. i + length - 1 with ``end`` next to one of its neighbours.

    Returns:
        ``(gain, t, reverse)``: the insertion gain (before the removal's), the
        edge to insert into, and whether the segment goes in reversed; t is
        -2 if no place was tried.
    """
    first = order[i]
    best_gain, best_t, best_reverse = 0.0, -2, False
    for j in range(neighbors.shape[1]):
        c = neighbors[end, j]
        if c < 0 or c == end or scores[end, j] <= outer:
            continue
        q = pos[c]
        if i <= q < i + length or abs(q - i) > window:
            continue
        s_end = _sim(embeddings, end, c)
        for t in (q - 1, q):
            if i - 1 <= t <= i + length - 1:
                continue  # the edges taken out, or inside the segment
            # Only the orientation that puts end next to c: c, end ... other, w
            # or u, other ... end, c.
            far = _at(order, t + 1) if t == q else _at(order, t)
            gain = s_end + _sim(embeddings, other, far) - _edge(edges, t)
            if best_t == -2 or gain > best_gain:
                # Forward keeps first on the left: end == first sits right of c (t == q).
                best_gain, best_t, best_reverse = gain, t, (end == first) != (t == q)
    return best_gain, best_t, best_reverse


@numba.njit(cache=True)
def _nb_try_or_opt(a, order, pos, edges, neighbors, scores, embeddings, window, max_segment):
    """Move a segment that starts or ends at a next to a neighbour of one of its ends."""
    n = order.shape[0]
    p = pos[a]
    for length in range(1, max_segment + 1):
        for kind in range(2):  # the segment starts, or ends, at a
            i = p if kind == 0 else p - length + 1
            if i < 0 or i + length > n or (length == 1 and kind == 1):
                continue
            first, last = order[i], order[i + length - 1]
            s_before, s_after = _edge(edges, i - 1), _edge(edges, i + length - 1)
            removal = (_sim(embeddings, _at(order, i - 1), _at(order, i + length))
                       - s_before - s_after)
            for which in range(2 if length > 1 else 1):
                end, other = (first, last) if which == 0 else (last, first)
                outer = s_before if which == 0 else s_after
                if length == 1:
                    outer = min(s_before, s_after)
                gain, t, reverse = _nb_best_insertion(end, other, outer, order, pos, edges, i,
                                                      length, neighbors, scores, embeddings, window)
                if t != -2 and gain + removal > MIN_GAIN:
                    base = _nb_move_segment(order, pos, edges, embeddings, i, length, t, reverse)
                    return min(i, base) - 1, max(i, base) + length
    return -1, -1


@numba.njit(cache=True)
def _nb_improve(order, neighbors, scores, embeddings, window, max_segment, max_moves):
    n = order.shape[0]
    pos = np.empty(n, dtype=np.int64)
    for i in range(n):
        pos[order[i]] = i
    edges = np.empty(n - 1, dtype=np.float64)
    for i in range(n - 1):
        edges[i] = _sim(embeddings, order[i], order[i + 1])
    queue = order.copy()  # a ring: each row is queued at most once at a time
    queued = np.ones(n, dtype=np.bool_)
    head, count, moves = 0, n, 0
    while count > 0 and moves < max_moves:
        a = queue[head]
        head = (head + 1) % n
        count -= 1
        queued[a] = False
        lo, hi = _nb_try_two_opt(a, order, pos, edges, neighbors, scores, embeddings, window)
        if lo == -1 and hi == -1:
            lo, hi = _nb_try_or_opt(a, order, pos, edges, neighbors, scores, embeddings, window,
                                    max_segment)
            if lo == -1 and hi == -1:
                continue
        moves += 1
        # Both ends of every changed edge and the moved segment look again; the
        # shifted middle keeps its edges.
        middle_from, middle_to = lo + max_segment + 3, hi - max_segment - 2
        for at in range(lo - 1, hi + 2):
            if middle_from <= at < middle_to or at < 0 or at >= n or queued[order[at]]:
                continue
            queued[order[at]] = True
            queue[(head + count) % n] = order[at]
            count += 1
    return order, edges, moves


def improve(order: np.ndarray, neighbors: np.ndarray, scores: np.ndarray, embeddings: np.ndarray,
            window: int = DEFAULT_WINDOW, max_segment: int = MAX_SEGMENT,
            max_moves: int | None = None) -> np.ndarray:
    """2-opt and or-opt until no move of the kind gains (module docstring).

    Args:
        order: int64 (n,) rows, each once.
        neighbors: int64 (n, k) kNN rows, -1 padded.
        scores: float32 (n, k) aligned similarities (used to prune).
        embeddings: float32 (n, d) L2-normalised (the objective).
        window: Largest position span of one move.
        max_segment: Longest segment or-opt moves.
        max_moves: Stop after this many moves (default 20 n).

    Returns:
        int64 (n,): the improved order (a new array); every row still once.
    """
    return improve_with_stats(order, neighbors, scores, embeddings, window, max_segment,
                              max_moves)[0]


def improve_with_stats(order: np.ndarray, neighbors: np.ndarray, scores: np.ndarray,
                       embeddings: np.ndarray, window: int = DEFAULT_WINDOW,
                       max_segment: int = MAX_SEGMENT,
                       max_moves: int | None = None) -> tuple[np.ndarray, dict]:
    """``improve``, and what it did.

    Returns:
        ``(order, stats)``: stats has ``moves`` and ``total_before`` /
        ``total_after``, the summed adjacent similarity (``total_after`` as
        the search kept it move by move).
    """
    order = np.array(order, dtype=np.int64, copy=True)
    if order.size < 3:
        return order, {"moves": 0, "total_before": None, "total_after": None}
    embeddings = np.ascontiguousarray(embeddings, np.float32)
    before = float(np.sum(_adjacent(order, embeddings)))
    order, edges, moves = _nb_improve(order, np.ascontiguousarray(neighbors, np.int64),
                                      np.ascontiguousarray(scores, np.float32), embeddings,
                                      int(window), int(max_segment),
                                      int(max_moves or 20 * order.size))
    return order, {"moves": int(moves), "total_before": before, "total_after": float(edges.sum())}


@numba.njit(cache=True)
def _adjacent(order, embeddings):
    out = np.empty(order.shape[0] - 1, dtype=np.float64)
    for i in range(order.shape[0] - 1):
        out[i] = _sim(embeddings, order[i], order[i + 1])
    return out
