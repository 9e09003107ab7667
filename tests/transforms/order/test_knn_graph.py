"""Tests of the kNN graph kernels: exact search against brute force, the partitioned build's pieces."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corpusmill.transforms.order import knn_graph, partitions


def clustered(n: int = 5000, d: int = 64, centers: int = 50, spread: float = 1.0, seed: int = 0) -> np.ndarray:
    """Unit vectors drawn around random centres; spread 1.0 makes clusters overlap
    (mean top-1 cosine about 0.67, like lexical document embeddings)."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, d))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = c[rng.integers(0, centers, n)] + spread * rng.normal(size=(n, d)) / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_force(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Oracle: every pair scored in float64, rows by score descending then index ascending."""
    s = x.astype(np.float64) @ x.astype(np.float64).T
    n = x.shape[0]
    neighbors = np.full((n, k), -1, dtype=np.int64)
    scores = np.full((n, k), -np.inf, dtype=np.float32)
    for i in range(n):
        ranked = sorted((j for j in range(n) if j != i), key=lambda j: (-s[i, j], j))[:k]
        neighbors[i, :len(ranked)] = ranked
        scores[i, :len(ranked)] = s[i, ranked]
    return neighbors, scores


# Entries that are multiples of 1/4 with few dimensions: every dot product is
# exact in float32, so equal scores are true ties (and there are many: repeated
# and zero rows), which the oracle and the kernel must break the same way.
EXACT_MATRICES = st.integers(1, 6).flatmap(lambda d: st.lists(
    st.lists(st.integers(-2, 2), min_size=d, max_size=d), min_size=1, max_size=45,
)).map(lambda rows: np.array(rows, dtype=np.float32) / 4)


@settings(max_examples=150, deadline=None)
@given(x=EXACT_MATRICES, k=st.integers(1, 12))
def test_exact_knn_matches_brute_force_with_ties(x, k):
    neighbors, scores = knn_graph.exact_knn(x, k)
    want_neighbors, want_scores = brute_force(x, k)
    np.testing.assert_array_equal(neighbors, want_neighbors)
    np.testing.assert_array_equal(scores, want_scores)


def test_exact_knn_on_real_like_data_excludes_self_and_sorts():
    x = clustered(1500, d=32, seed=3)
    neighbors, scores = knn_graph.exact_knn(x, 10)
    want_neighbors, want_scores = brute_force(x, 10)
    np.testing.assert_array_equal(neighbors, want_neighbors)
    np.testing.assert_allclose(scores, want_scores, atol=1e-6)
    assert not (neighbors == np.arange(1500)[:, None]).any()
    assert (np.diff(scores, axis=1) <= 0).all()


def test_many_exact_duplicates_beyond_the_margin_keep_the_smallest_indices():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(1, 8))
    x = np.vstack([np.repeat(base, 40, axis=0), rng.normal(size=(30, 8))]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    neighbors, _ = knn_graph.exact_knn(x, 5)
    # Row 7's 39 copies tie; the smallest other indices win.
    np.testing.assert_array_equal(neighbors[7], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(neighbors[0], [1, 2, 3, 4, 5])


def test_ties_that_faiss_rounds_apart_still_go_to_the_smallest_indices():
    # Permutations of one vector score the same against the all-ones query, but
    # faiss sums them in float32 in different orders and ranks them by noise;
    # the fixed-order rescoring (and its full-row fallback) restores the tie.
    rng = np.random.default_rng(0)
    v = rng.normal(size=64).astype(np.float32)
    v /= np.linalg.norm(v)
    query = np.ones(64, dtype=np.float32) / 8
    x = np.vstack([query] + [v[rng.permutation(64)] for _ in range(60)]).astype(np.float32)
    neighbors, scores = knn_graph.exact_knn(x, 5)
    np.testing.assert_array_equal(neighbors[0], [1, 2, 3, 4, 5])
    assert np.unique(scores[0]).size == 1


def test_fewer_documents_than_k_are_padded():
    neighbors, scores = knn_graph.exact_knn(np.eye(3, dtype=np.float32), 5)
    assert neighbors.shape == (3, 5)
    np.testing.assert_array_equal(neighbors[:, 2:], -1)
    assert np.isneginf(scores[:, 2:]).all()
    np.testing.assert_array_equal(neighbors[0, :2], [1, 2])


def test_partition_knn_names_neighbours_by_id_whatever_the_row_order():
    x = clustered(300, d=16, seed=1)
    ids = np.random.default_rng(2).choice(10**12, size=300, replace=False).astype(np.int64)
    nb, sc = knn_graph.partition_knn(ids, x, 7)
    perm = np.random.default_rng(3).permutation(300)
    nb2, sc2 = knn_graph.partition_knn(ids[perm], x[perm], 7)
    np.testing.assert_array_equal(nb[perm], nb2)
    np.testing.assert_array_equal(sc[perm], sc2)
    rows, _ = knn_graph.exact_knn(x, 7)
    np.testing.assert_array_equal(nb, ids[rows])


def test_partition_knn_breaks_score_ties_by_id():
    x = np.ones((4, 2), dtype=np.float32) / np.sqrt(2)
    nb, _ = knn_graph.partition_knn(np.array([40, 10, 30, 20]), x, 2)
    np.testing.assert_array_equal(nb, [[10, 20], [20, 30], [10, 20], [10, 30]])
    with pytest.raises(ValueError):
        knn_graph.partition_knn(np.array([1, 1, 2, 3]), x, 2)


def merge_oracle(parts, k):
    best: dict[int, dict[int, float]] = {}
    for ids, nbs, scs in parts:
        for i, row, srow in zip(ids, nbs, scs):
            found = best.setdefault(int(i), {})
            for j, s in zip(row, srow):
                if j >= 0 and j != i:
                    found[int(j)] = max(found.get(int(j), -np.inf), float(s))
    out_ids = np.array(sorted(best), dtype=np.int64)
    nb = np.full((len(out_ids), k), -1, dtype=np.int64)
    sc = np.full((len(out_ids), k), -np.inf, dtype=np.float32)
    for r, i in enumerate(out_ids):
        ranked = sorted(best[int(i)].items(), key=lambda t: (-t[1], t[0]))[:k]
        nb[r, :len(ranked)] = [j for j, _ in ranked]
        sc[r, :len(ranked)] = [s for _, s in ranked]
    return out_ids, nb, sc


PARTS = st.lists(st.integers(1, 6).flatmap(lambda m: st.tuples(
    st.lists(st.integers(0, 9), min_size=m, max_size=m),
    st.lists(st.lists(st.integers(-1, 9), min_size=3, max_size=3), min_size=m, max_size=m),
    st.lists(st.lists(st.sampled_from([0.1, 0.5, 0.5, 0.9]), min_size=3, max_size=3), min_size=m, max_size=m),
)), min_size=1, max_size=5).map(lambda parts: [
    (np.array(i), np.array(nb), np.array(sc, dtype=np.float32)) for i, nb, sc in parts])


@settings(max_examples=200, deadline=None)
@given(parts=PARTS, k=st.integers(1, 5))
def test_merge_topk_matches_oracle_and_is_idempotent(parts, k):
    merged = knn_graph.merge_topk(parts, k)
    for got, want in zip(merged, merge_oracle(parts, k)):
        np.testing.assert_array_equal(got, want)
    again = knn_graph.merge_topk([merged], k)
    doubled = knn_graph.merge_topk([merged, merged, *parts], k)
    # Associative, so a pipeline may merge in any grouping (a CombineFn).
    stepwise = knn_graph.merge_topk([knn_graph.merge_topk(parts[:1], k), *parts[1:]], k)
    for a, b, c, d in zip(merged, again, doubled, stepwise):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(a, d)


def test_merge_of_partition_results_recovers_the_exact_graph():
    x = clustered(400, d=16, seed=4)
    rows = np.arange(400)
    halves = [rows[:250], rows[150:]]
    everyone = (rows, *knn_graph.partition_knn(rows, x, 6))
    parts = [(h, *knn_graph.partition_knn(h, x[h], 6)) for h in halves] + [everyone]
    ids, nb, sc = knn_graph.merge_topk(parts, 6)
    exact_nb, exact_sc = knn_graph.exact_knn(x, 6)
    np.testing.assert_array_equal(ids, rows)
    np.testing.assert_array_equal(nb, exact_nb)
    np.testing.assert_array_equal(sc, exact_sc)


def test_recall_at_k():
    exact = np.array([[1, 2, 3], [0, 2, -1]])
    approx = np.array([[1, 9, 3], [2, 2, 2]])
    assert knn_graph.recall_at_k(approx, exact) == pytest.approx(3 / 5)
    assert knn_graph.recall_at_k(approx, exact, k=1) == pytest.approx(1 / 2)
    assert knn_graph.recall_at_k(exact, exact) == 1.0


def test_assign_orders_centroids_by_similarity():
    x = clustered(500, d=16, seed=5)
    centroids = knn_graph.train_centroids(x, 8, seed=0)
    assignment = knn_graph.assign(x, centroids, 3)
    s = x.astype(np.float64) @ centroids.astype(np.float64).T
    want = np.argsort(-s, axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(assignment.probes, want)
    np.testing.assert_array_equal(assignment.primary, want[:, 0])
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1, atol=1e-5)


def test_centroids_and_partitioned_graph_are_deterministic():
    x = clustered(3000, d=32, seed=6)
    a = knn_graph.train_centroids(x, 16, seed=7)
    b = knn_graph.train_centroids(x, 16, seed=7)
    c = knn_graph.train_centroids(x, 16, seed=8)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()
    first = knn_graph.partitioned_knn(x, 10, 16, 2, seed=7)
    second = knn_graph.partitioned_knn(x, 10, 16, 2, seed=7)
    for u, v in zip(first, second):
        if isinstance(u, tuple):
            u, v = np.concatenate([np.ravel(t) for t in u]), np.concatenate([np.ravel(t) for t in v])
        assert np.asarray(u).tobytes() == np.asarray(v).tobytes()


def test_partitioned_recall_on_clustered_data():
    x = clustered()
    exact, _ = knn_graph.exact_knn(x, 10)
    recall = {nprobe: knn_graph.recall_at_k(
        knn_graph.partitioned_knn(x, 10, 16, nprobe, seed=0, far_quantile=None).neighbors, exact)
        for nprobe in (1, 2, 3)}
    # One probe misses neighbours across partition borders; two find nearly all.
    assert recall[1] < 0.97
    assert recall[2] >= 0.95
    assert recall[3] >= recall[2]
    # Extra probes for the documents far from every centroid find more of what one probe misses.
    with_far = knn_graph.recall_at_k(knn_graph.partitioned_knn(x, 10, 16, 1, seed=0).neighbors, exact)
    assert with_far > recall[1]


def test_far_documents_probe_more_partitions():
    x = clustered(2000, d=32, seed=9)
    centroids = knn_graph.train_centroids(x, 8, seed=0)
    far = knn_graph.far_threshold(x, centroids, 0.25)
    assignment = knn_graph.assign(x, centroids, 2, far, far_extra=3)
    nearest = (x @ centroids.T).max(axis=1)
    probed = (assignment.probes >= 0).sum(axis=1)
    assert set(probed[nearest <= far - 1e-4]) == {5} and set(probed[nearest > far + 1e-4]) == {2}
    assert 0.2 < np.mean(probed == 5) < 0.3
    np.testing.assert_array_equal(assignment.probes[:, :2], knn_graph.assign(x, centroids, 2).probes)


def test_each_document_is_searched_in_its_primary_partition():
    x = clustered(2000, d=32, seed=9)
    built = knn_graph.partitioned_knn(x, 5, 8, 1, seed=1, far_quantile=None)
    np.testing.assert_array_equal(built.assignment.primary, built.assignment.probes[:, 0])
    # With nprobe 1 every neighbour shares the document's primary partition.
    valid = built.neighbors >= 0
    same = built.assignment.primary[np.maximum(built.neighbors, 0)] == built.assignment.primary[:, None]
    assert same[valid].all()


def test_local_graph_renumbers_and_drops_outsiders():
    ids = np.array([50, 10, 30])
    neighbor_ids = np.array([[10, 99, 30], [-1, 50, 30], [77, 88, 50]])
    scores = np.array([[0.9, 0.8, 0.7], [-np.inf, 0.6, 0.5], [0.4, 0.3, 0.2]], dtype=np.float32)
    rows, local_scores = knn_graph.local_graph(ids, neighbor_ids, scores)
    np.testing.assert_array_equal(rows, [[1, 2, -1], [0, 2, -1], [0, -1, -1]])
    np.testing.assert_array_equal(local_scores, np.array([[0.9, 0.7, -np.inf], [0.6, 0.5, -np.inf],
                                                          [0.2, -np.inf, -np.inf]], dtype=np.float32))


def group_vote_oracle(keys, groups, own, labels, scores, num_partitions, movable, best=3):
    out = list(own)
    for g in sorted(set(groups)):
        members = sorted((k, i) for i, k in enumerate(keys) if groups[i] == g)
        value = [0.0] * num_partitions
        for _, i in members:
            counted = [0] * num_partitions
            for label, score in zip(labels[i], scores[i]):
                if label >= 0 and np.isfinite(score) and counted[label] < best:
                    counted[label] += 1
                    value[label] += float(score)
        winner = max(range(num_partitions), key=lambda p: (value[p], -p))
        for _, i in members:
            if movable[g] and value[winner] > value[own[i]]:
                out[i] = winner
    return out


@settings(max_examples=200, deadline=None)
@given(data=st.data(), m=st.integers(0, 12), top=st.integers(1, 5), num_partitions=st.integers(1, 4),
       half_round=st.integers(0, 1))
def test_vote_groups_matches_oracle(data, m, top, num_partitions, half_round):
    keys = np.array(data.draw(st.lists(st.integers(-50, 50), min_size=m, max_size=m, unique=True)), dtype=np.int64)
    groups = np.array(data.draw(st.lists(st.sampled_from([-7, 3, 11]), min_size=m, max_size=m)), dtype=np.int64)
    own = np.array(data.draw(st.lists(st.integers(0, num_partitions - 1), min_size=m, max_size=m)), dtype=np.int64)
    labels = np.array(data.draw(st.lists(st.lists(st.integers(-1, num_partitions - 1), min_size=top, max_size=top),
                                         min_size=m, max_size=m)), dtype=np.int64).reshape(m, top)
    scores = np.array(data.draw(st.lists(st.lists(st.sampled_from([0.25, 0.5, 0.75]), min_size=top, max_size=top),
                                         min_size=m, max_size=m)), dtype=np.float32).reshape(m, top)
    movable = dict(zip([-7, 3, 11], partitions.moves_in(np.array([-7, 3, 11]), half_round)))
    got = partitions.vote_groups(keys, groups, own, labels, scores, num_partitions, half_round)
    assert got.tolist() == group_vote_oracle(keys, groups, own, labels, scores, num_partitions, movable)


def test_vote_groups_by_hand():
    keys = np.array([1, 2, 3])
    groups = np.array([5, 5, 9])
    (half,) = [h for h in (0, 1) if partitions.moves_in(np.array([5, 9]), h).all()] or [None]
    own = np.array([0, 0, 2])
    labels = np.array([[1, 1, 0], [1, 0, -1], [0, 1, 2]])
    scores = np.array([[0.5, 0.5, 0.9], [0.5, 0.5, -np.inf], [0.5, 0.5, 0.5]], dtype=np.float32)
    # Group 5 sums 1 -> 1.5 against 0 -> 1.4: both members move, though the second alone
    # would tie; 2 keeps a three-way tie.
    if half is not None:
        assert partitions.vote_groups(keys, groups, own, labels, scores, 3, half).tolist() == [1, 1, 2]
    for h in (0, 1):
        moved = partitions.vote_groups(keys, groups, own, labels, scores, 3, h)
        assert moved.tolist() in ([1, 1, 2], [0, 0, 2])
        assert (moved.tolist() == [1, 1, 2]) == bool(partitions.moves_in(np.array([5]), h)[0])
    with pytest.raises(ValueError):
        partitions.vote_groups(keys, groups, own, labels, scores, 2, 0)


def test_nearest_neighbour_groups_are_components_of_the_top1_forest():
    keys = np.array([40, 10, 30, 20, 50, 60])
    nearest = np.array([10, 40, 10, 50, 20, -1])
    np.testing.assert_array_equal(partitions.nearest_neighbour_groups(keys, nearest), [10, 10, 10, 20, 20, 60])


def test_refine_partitions_cuts_no_nearest_neighbour_edge_and_fewer_edges():
    x = clustered(3000, d=32, seed=14)
    built = knn_graph.partitioned_knn(x, 10, 8, 2, seed=0)
    primary = built.assignment.primary
    refined = partitions.refine_partitions(built.neighbors, built.scores, primary, 8)

    def cut(labels, column):
        return (labels[built.neighbors[:, column]] != labels).mean()

    assert cut(refined, 0) == 0 < cut(primary, 0)
    assert np.mean([cut(refined, c) for c in range(1, 10)]) < 0.75 * np.mean([cut(primary, c) for c in range(1, 10)])
    assert set(np.unique(refined)) <= set(range(8))
    again = partitions.refine_partitions(built.neighbors, built.scores, primary, 8)
    np.testing.assert_array_equal(refined, again)
    assert (partitions.refine_partitions(built.neighbors, built.scores, primary, 8, rounds=0) == primary).all()


def test_query_knn_batch_by_batch_is_exact():
    x = clustered(900, d=16, seed=15)
    ids = np.arange(900, dtype=np.int64) * 3 + 1
    sample = np.arange(0, 900, 7)
    batches = np.array_split(np.random.default_rng(0).permutation(900), 4)
    answers = [(ids[sample], *knn_graph.query_knn(ids[sample], x[sample], ids[b], x[b], 8)) for b in batches]
    _, neighbor_ids, scores = knn_graph.merge_topk(answers, 8)
    rows, want_scores = knn_graph.exact_knn(x, 8)
    np.testing.assert_array_equal(neighbor_ids, ids[rows[sample]])
    np.testing.assert_array_equal(scores, want_scores[sample])
    empty_ids, empty_scores = knn_graph.query_knn(ids[:2], x[:2], np.empty(0, np.int64), np.empty((0, 16), np.float32), 3)
    assert (empty_ids == -1).all() and np.isneginf(empty_scores).all()


def test_results_do_not_depend_on_the_thread_count():
    faiss = pytest.importorskip("faiss")
    x = clustered(3000, d=32, seed=16)
    before = faiss.omp_get_max_threads()
    try:
        faiss.omp_set_num_threads(1)
        one = knn_graph.exact_knn(x, 10)
        faiss.omp_set_num_threads(max(2, before))
        many = knn_graph.exact_knn(x, 10)
    finally:
        faiss.omp_set_num_threads(before)
    assert one[0].tobytes() == many[0].tobytes() and one[1].tobytes() == many[1].tobytes()


def test_negative_ids_are_documents_not_padding():
    # Document keys are signed 64-bit hashes: half are negative, and only -1 pads.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.sort(rng.choice(np.arange(-2**62, 2**62, 2**40), size=40, replace=False)).astype(np.int64)
    assert (ids < -1).sum() > 5
    rows, scores = knn_graph.exact_knn(x, 5)
    neighbor_ids, neighbor_scores = knn_graph.partition_knn(ids, x, 5)
    assert np.array_equal(neighbor_ids, ids[rows])
    merged_ids, merged, merged_scores = knn_graph.merge_topk([(ids, neighbor_ids, neighbor_scores)], 5)
    assert np.array_equal(merged_ids, ids) and np.array_equal(merged, ids[rows])
    local, _ = knn_graph.local_graph(ids, neighbor_ids, neighbor_scores)
    assert np.array_equal(local, rows)
    assert knn_graph.recall_at_k(neighbor_ids, ids[rows]) == 1.0
