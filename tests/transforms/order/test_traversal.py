"""Tests of the traversal kernels: Algorithm 1 against a direct transcription, path joining, local search."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corpusmill.transforms.order import knn_graph, local_search, path_joining, traversal
from corpusmill.transforms.order.quality import adjacent_similarities
from test_knn_graph import clustered


def algorithm1_oracle(neighbors, scores, keys, degree):
    """Algorithm 1 as the paper writes it, with sets and linear scans: O(n^2), obviously right."""
    n = len(neighbors)
    adjacent = [set() for _ in range(n)]
    for i in range(n):
        for j in neighbors[i]:
            if j >= 0 and j != i:
                adjacent[i].add(int(j))
                adjacent[int(j)].add(i)
    unvisited, order, starts = set(range(n)), [], []

    def deg(v):
        return len(adjacent[v] & unvisited) if degree == "remaining" else len(adjacent[v])

    while unvisited:
        current = min(unvisited, key=lambda v: (deg(v), keys[v]))
        starts.append(len(order))
        while current is not None:
            unvisited.remove(current)
            order.append(current)
            options = [(float(scores[current][j]), int(v)) for j, v in enumerate(neighbors[current])
                       if v >= 0 and v != current and v in unvisited]
            current = max(options, key=lambda t: (t[0], -keys[t[1]]))[1] if options else None
    return order, starts


@st.composite
def graphs(draw, max_n=30):
    """Random kNN lists with padding, self entries, repeats, isolated rows and tied scores."""
    n = draw(st.integers(1, max_n))
    k = draw(st.integers(1, 5))
    neighbors = np.array(draw(st.lists(st.lists(st.integers(-1, n - 1), min_size=k, max_size=k),
                                       min_size=n, max_size=n)), dtype=np.int64)
    scores = np.array(draw(st.lists(st.lists(st.sampled_from([0.1, 0.4, 0.4, 0.8]), min_size=k, max_size=k),
                                    min_size=n, max_size=n)), dtype=np.float32)
    keys = np.array(draw(st.permutations(range(n))), dtype=np.int64) * 7 + 3
    return neighbors, scores, keys


@settings(max_examples=300, deadline=None)
@given(graph=graphs(), degree=st.sampled_from(traversal.DEGREE_MODES))
def test_paper_order_matches_the_transcription(graph, degree):
    neighbors, scores, keys = graph
    got = traversal.paper_order(neighbors, scores, keys=keys, degree=degree)
    want_order, want_starts = algorithm1_oracle(neighbors, scores, keys, degree)
    np.testing.assert_array_equal(got.order, want_order)
    np.testing.assert_array_equal(got.path_starts, want_starts)


@settings(max_examples=150, deadline=None)
@given(graph=graphs(max_n=60), seed=st.integers(0, 3), window=st.sampled_from([2, 5, 10_000]))
def test_improved_keeps_every_document_once(graph, seed, window):
    neighbors, scores, keys = graph
    n = neighbors.shape[0]
    x = np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    result = traversal.traverse(neighbors, scores, x, mode="improved", keys=keys, window=window)
    np.testing.assert_array_equal(np.sort(result.order), np.arange(n))
    assert result.path_starts[0] == 0 and (np.diff(result.path_starts) > 0).all()


def test_tie_breaks_follow_the_keys():
    # A chain 0 - 1 - 2 - 3 (k = 1): rows 0 and 3 have the minimum degree, 1.
    neighbors = np.array([[1], [2], [1], [2]])
    scores = np.array([[0.9], [0.8], [0.8], [0.7]], dtype=np.float32)
    walk = traversal.paper_order(neighbors, scores)
    np.testing.assert_array_equal(walk.order, [0, 1, 2, 3])
    np.testing.assert_array_equal(walk.path_starts, [0, 3])
    walk = traversal.paper_order(neighbors, scores, keys=np.array([30, 20, 10, 0]))
    np.testing.assert_array_equal(walk.order, [3, 2, 1, 0])
    np.testing.assert_array_equal(walk.path_starts, [0, 3])
    # Equal similarities: the neighbour with the smaller key is next.
    neighbors = np.array([[1, 2], [0, -1], [0, -1]])
    scores = np.array([[0.5, 0.5], [0.5, -np.inf], [0.5, -np.inf]], dtype=np.float32)
    assert traversal.paper_order(neighbors, scores).order.tolist() == [1, 0, 2]
    assert traversal.paper_order(neighbors, scores, keys=np.array([0, 9, 5])).order.tolist() == [2, 0, 1]


def test_undirected_adjacency_deduplicates():
    indptr, indices = traversal.undirected_adjacency(np.array([[1, 1, 0], [0, -1, 2], [-1, -1, -1]]))
    assert [indices[indptr[i]:indptr[i + 1]].tolist() for i in range(3)] == [[1], [0, 2], [1]]


def test_improved_beats_the_paper_on_the_same_graph():
    x = clustered(4000, d=32, seed=11)
    neighbors, scores = knn_graph.exact_knn(x, 10)
    paper = traversal.traverse(neighbors, scores, mode="paper")
    improved = traversal.traverse(neighbors, scores, x, mode="improved")
    paper_total = adjacent_similarities(x, paper.order).sum()
    improved_total = adjacent_similarities(x, improved.order).sum()
    assert improved_total > paper_total * 1.01
    assert improved.path_starts.size < paper.path_starts.size
    np.testing.assert_array_equal(np.sort(improved.order), np.arange(4000))
    again = traversal.traverse(neighbors, scores, x, mode="improved")
    np.testing.assert_array_equal(improved.order, again.order)


def test_graph_jumps():
    neighbors = np.array([[1], [0], [3], [2]])
    np.testing.assert_array_equal(traversal.graph_jumps(np.array([0, 1, 2, 3]), neighbors), [0, 2])
    np.testing.assert_array_equal(traversal.graph_jumps(np.array([1, 0, 3, 2]), neighbors), [0, 2])


@st.composite
def paths_and_links(draw):
    n = draw(st.integers(1, 40))
    order = np.array(draw(st.permutations(range(n))), dtype=np.int64)
    cuts = draw(st.sets(st.integers(1, max(n - 1, 1)), max_size=n)) if n > 1 else set()
    starts = np.array(sorted({0, *[c for c in cuts if c < n]}), dtype=np.int64)
    m = draw(st.integers(0, 3 * n))
    a = np.array(draw(st.lists(st.integers(0, n - 1), min_size=m, max_size=m)), dtype=np.int64)
    b = np.array(draw(st.lists(st.integers(0, n - 1), min_size=m, max_size=m)), dtype=np.int64)
    s = np.array(draw(st.lists(st.sampled_from([0.2, 0.5, 0.5, 0.9]), min_size=m, max_size=m)), dtype=np.float32)
    return order, starts, a, b, s


@settings(max_examples=300, deadline=None)
@given(case=paths_and_links())
def test_join_paths_keeps_paths_whole_and_links_only_endpoints(case):
    order, starts, a, b, s = case
    n = order.size
    new_order, chain_starts, joins = path_joining.join_paths(order, starts, a, b, s, np.arange(n))
    np.testing.assert_array_equal(np.sort(new_order), np.arange(n))
    assert chain_starts.size == starts.size - joins
    where = np.empty(n, dtype=np.int64)
    where[new_order] = np.arange(n)
    ends = np.append(starts[1:], n)
    for start, end in zip(starts, ends):
        positions = where[order[start:end]]
        steps = np.diff(positions)
        assert (steps == 1).all() or (steps == -1).all()  # contiguous, either way round
    links = {(int(x), int(y)) for x, y in zip(a, b)} | {(int(y), int(x)) for x, y in zip(a, b)}
    path_of = path_joining.path_of_rows(order, starts)
    chain_start_set = set(chain_starts.tolist())
    for p in range(1, n):
        x, y = int(new_order[p - 1]), int(new_order[p])
        if path_of[x] != path_of[y] and p not in chain_start_set:
            assert (x, y) in links


def test_join_paths_takes_the_strongest_links_first():
    order = np.array([0, 1, 2, 3, 4, 5])
    starts = np.array([0, 2, 4])  # paths 0-1, 2-3, 4-5
    a, b = np.array([1, 1, 3]), np.array([2, 4, 4])
    s = np.array([0.5, 0.9, 0.7], dtype=np.float32)
    new_order, chain_starts, joins = path_joining.join_paths(order, starts, a, b, s, np.arange(6))
    # 1-4 first, then 3-4 is blocked (4 is taken) and 1-2 is blocked (1 is taken).
    assert joins == 1
    assert new_order.tolist() == [0, 1, 4, 5, 2, 3]
    assert chain_starts.tolist() == [0, 4]


def test_join_paths_fully_ends_with_one_chain_when_links_exist():
    x = clustered(600, d=16, seed=12)
    neighbors, scores = knn_graph.exact_knn(x, 5)
    walk = traversal.paper_order(neighbors, scores)
    order, starts = path_joining.join_paths_fully(walk.order, walk.path_starts, neighbors, scores, x,
                                                  np.arange(600))
    assert starts.tolist() == [0]
    np.testing.assert_array_equal(np.sort(order), np.arange(600))


@settings(max_examples=100, deadline=None)
@given(graph=graphs(max_n=50), seed=st.integers(0, 5), window=st.sampled_from([2, 7, 10_000]),
       max_segment=st.integers(0, 4), max_moves=st.sampled_from([1, 2, 3, None]))
def test_local_search_never_loses_and_tracks_its_total(graph, seed, window, max_segment, max_moves):
    neighbors, scores, _ = graph
    n = neighbors.shape[0]
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    # Scores as the graph would carry them for these embeddings.
    scores = np.where(neighbors >= 0, np.einsum("ij,ikj->ik", x, x[np.maximum(neighbors, 0)]), -np.inf)
    start = rng.permutation(n)
    order, stats = local_search.improve_with_stats(start, neighbors, scores.astype(np.float32), x,
                                                   window=window, max_segment=max_segment,
                                                   max_moves=max_moves)
    np.testing.assert_array_equal(np.sort(order), np.arange(n))
    if n >= 3:
        total = adjacent_similarities(x, order).sum()
        # Every single move gains (max_moves 1, 2, 3 look at the first few alone).
        assert total >= adjacent_similarities(x, start).sum() - 1e-5
        assert stats["moves"] == 0 or total > adjacent_similarities(x, start).sum()
        assert stats["total_after"] == pytest.approx(total, abs=1e-4)


def test_local_search_repairs_a_scrambled_line():
    # Points along a line: the best order is the line itself.
    t = np.linspace(0, 1.5, 200)
    x = np.stack([np.cos(t), np.sin(t)], axis=1).astype(np.float32)
    neighbors, scores = knn_graph.exact_knn(x, 6)
    scrambled = np.arange(200)
    for lo in range(0, 200, 20):
        scrambled[lo:lo + 10] = scrambled[lo:lo + 10][::-1].copy()  # reversed blocks
    scrambled[[50, 150]] = scrambled[[150, 50]]
    repaired = local_search.improve(scrambled, neighbors, scores, x)
    assert adjacent_similarities(x, repaired).sum() > adjacent_similarities(x, scrambled).sum()
    steps = np.abs(np.diff(repaired))
    assert (steps == 1).mean() > 0.97


def test_order_partitions_follows_a_circle():
    angles = np.random.default_rng(0).permutation(24) * (2 * np.pi / 24)
    centroids = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    for mode in traversal.TRAVERSAL_MODES:
        order = traversal.order_partitions(centroids, k=4, mode=mode)
        np.testing.assert_array_equal(np.sort(order), np.arange(24))
        step = np.round(np.diff(angles[order]) / (2 * np.pi / 24)).astype(int) % 24
        assert np.isin(step, [1, 23]).sum() >= 22  # one turn round the circle, at most one jump
    assert traversal.order_partitions(centroids[:1]).tolist() == [0]


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        traversal.paper_order(np.array([[3]]), np.array([[0.5]], dtype=np.float32))
    with pytest.raises(ValueError):
        traversal.traverse(np.array([[0]]), np.array([[0.5]], dtype=np.float32), mode="improved")
    with pytest.raises(ValueError):
        traversal.paper_order(np.array([[0]]), np.array([[0.5]], dtype=np.float32), degree="max")
    assert traversal.paper_order(np.empty((0, 3), np.int64), np.empty((0, 3), np.float32)).order.size == 0


def test_partitioned_traverse_concatenates_partitions_in_order():
    x = clustered(3000, d=32, seed=13)
    built = knn_graph.partitioned_knn(x, 10, 8, 2, seed=0)
    partition_order = traversal.order_partitions(built.centroids)
    primary = built.assignment.primary
    for mode in traversal.TRAVERSAL_MODES:
        result = traversal.partitioned_traverse(built.neighbors, built.scores, x, primary, partition_order, mode)
        np.testing.assert_array_equal(np.sort(result.order), np.arange(3000))
        # Partitions come out whole and in the given order.
        seen = primary[result.order]
        np.testing.assert_array_equal(seen[np.sort(np.unique(seen, return_index=True)[1])], partition_order)
        assert (np.diff(seen) != 0).sum() == 7
        single = traversal.traverse(*knn_graph.exact_knn(x, 10), x, mode=mode)
        loss = 1 - adjacent_similarities(x, result.order).mean() / adjacent_similarities(x, single.order).mean()
        # Cut edges at the partition borders cost a little (Algorithm 1's walk is noisier).
        assert loss < (0.03 if mode == "improved" else 0.05)
    whole = traversal.partitioned_traverse(built.neighbors, built.scores, x, np.zeros(3000, np.int64), [0])
    np.testing.assert_array_equal(whole.order, traversal.traverse(built.neighbors, built.scores, x).order)
    with pytest.raises(ValueError):
        traversal.partitioned_traverse(built.neighbors, built.scores, x, primary, partition_order[:-1])
