"""Tests of the ordering-quality kernels against hand-worked examples and loops."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corpusmill.transforms.order import knn_graph, quality
from test_knn_graph import clustered

sp = pytest.importorskip("scipy.sparse")  # a sparse TF-IDF matrix stands in for what callers pass


def unit(angles_degrees) -> np.ndarray:
    a = np.radians(np.asarray(angles_degrees, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 40), seed=st.integers(0, 9))
def test_adjacent_similarities_match_a_loop_dense_and_sparse(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    order = rng.permutation(n)
    want = [float(x[order[i]] @ x[order[i + 1]]) for i in range(n - 1)]
    np.testing.assert_allclose(quality.adjacent_similarities(x.astype(np.float32), order), want, atol=1e-6)
    np.testing.assert_allclose(quality.adjacent_similarities(sp.csr_matrix(x), order), want, atol=1e-9)


def test_coverage():
    assert quality.coverage(np.array([2, 0, 1]), 3)["each_exactly_once"]
    bad = quality.coverage(np.array([2, 2, 7]), 3)
    assert bad == {"each_exactly_once": False, "missing": 2, "repeated": 1, "out_of_range": 1}
    assert not quality.coverage(np.array([0, 1]), 3)["each_exactly_once"]


def test_knn_edge_fraction_counts_either_direction():
    neighbors = np.array([[1], [2], [0], [0]])
    # Order 0 1 3 2: 0->1 is an edge, 1-3 and 3-2 are not, in either direction.
    assert quality.knn_edge_fraction(np.array([0, 1, 3, 2]), neighbors) == pytest.approx(1 / 3)
    assert quality.knn_edge_fraction(np.array([3, 0, 2, 1]), neighbors) == pytest.approx(1.0)
    assert quality.knn_edge_fraction(np.array([0]), neighbors) is None


def test_path_length_summary():
    summary = quality.path_length_summary(np.array([0, 1, 3, 7]), 12)  # lengths 1, 2, 4, 5
    assert summary == {"count": 4, "mean": 3.0, "median": 3.0, "p90": pytest.approx(4.7), "max": 5,
                       "histogram": {"1": 1, "2-3": 1, "4-7": 2}}
    assert quality.path_length_summary(np.array([], dtype=np.int64), 0)["count"] == 0


def test_ordering_quality_by_hand():
    # Points at 0, 10, 20, 90 degrees: order 0-10-20-90 is as good as it gets.
    x = unit([0, 10, 20, 90])
    neighbors, scores = knn_graph.exact_knn(x, 1)
    result = quality.ordering_quality(x, np.array([0, 1, 2, 3]), neighbors=neighbors, scores=scores,
                                      path_starts=np.array([0, 3]), natural_order=np.array([3, 0, 2, 1]),
                                      near_duplicate_threshold=0.98)
    c10, c70, c90, c20 = (np.cos(np.radians(a)) for a in (10, 70, 90, 20))
    adjacent = result["adjacent_cosine"]
    assert adjacent["order"] == pytest.approx((c10 + c10 + c70) / 3)
    assert adjacent["natural"] == pytest.approx((c90 + c20 + c10) / 3)
    assert adjacent["top1_bound"] == pytest.approx((c10 + c10 + c10 + c70) / 4)
    assert adjacent["of_top1"] == pytest.approx(adjacent["order"] / adjacent["top1_bound"])
    # k = 1 gives no second neighbour, so no top-2 bound from the graph ...
    assert adjacent["top2_bound"] is None
    # ... computed from the embeddings instead: (best two of each point) / 2 / (n - 1).
    bound = quality.ordering_quality(x, np.arange(4))["adjacent_cosine"]["top2_bound"]
    c80 = np.cos(np.radians(80))
    assert bound == pytest.approx(((c10 + c20) + (c10 + c10) + (c10 + c20) + (c70 + c80)) / 2 / 3)
    assert adjacent["order"] <= bound
    assert result["knn_edge_fraction"] == pytest.approx(1.0)
    assert result["jumps"]["count"] == 1 and result["jumps"]["rate"] == pytest.approx(1 / 3)
    assert result["jumps"]["path_lengths"]["histogram"] == {"1": 1, "2-3": 1}
    assert result["adjacent_near_duplicate"]["rate"] == pytest.approx(2 / 3)  # cos 10 degrees = 0.985
    assert result["coverage"]["each_exactly_once"]
    json.dumps(result, allow_nan=False)


def test_ordering_quality_on_clustered_data():
    x = clustered(2000, d=32, seed=21)
    neighbors, scores = knn_graph.exact_knn(x, 10)
    by_cluster = np.argsort(x @ x[0], kind="stable")
    result = quality.ordering_quality(x, by_cluster, neighbors=neighbors, seed=3)
    again = quality.ordering_quality(x, by_cluster, neighbors=neighbors, seed=3)
    assert result == again
    adjacent = result["adjacent_cosine"]
    # The top-1 bound computed here equals the graph's own first column.
    assert adjacent["top1_bound"] == pytest.approx(float(scores[:, 0].mean()), abs=1e-6)
    assert abs(adjacent["random"]) < 0.05 < adjacent["order"]
    assert adjacent["top1_bound"] > adjacent["top2_bound"] > adjacent["order"]
    assert adjacent["natural"] == pytest.approx(adjacent["random"], abs=0.05)  # rows are unsorted
    assert "jumps" not in result
    json.dumps(result, allow_nan=False)


def test_sparse_embeddings_need_the_bound_passed_in():
    x = sp.csr_matrix(np.eye(4))
    result = quality.ordering_quality(x, np.arange(4))
    assert result["adjacent_cosine"]["top1_bound"] is None and result["adjacent_cosine"]["of_top1"] is None
    result = quality.ordering_quality(x, np.arange(4), top1_similarity=0.5, top2_bound=0.25)
    assert result["adjacent_cosine"]["of_top1"] == 0.0 and result["adjacent_cosine"]["top2_bound"] == 0.25
