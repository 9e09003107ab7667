"""KnnGraph: the documents' kNN graph, exact on one worker or partitioned, with its recall.

Data flow (``plan`` is ``order.plan.knn_plan`` of the document count, a side input)::

    embedded (shard, EmbeddedShard) -> sample by key -> train_centroids and far_threshold
                                                         (one worker; partitioned only)
    embedded + centroids -> (partition, members) for each of a document's nprobe
                            partitions, a few more if it is far from every centroid
                            (exact: one partition 0 of every document)
             -> GroupByKey partition -> partition_knn -> candidates keyed by owner shard
    embedded + candidates -> CoGroupByKey shard -> merge_topk -> (shard, ShardGraph)
    ShardGraph -> RefinePartitions (group votes over the merged graph, ``beam.refine``)
    recall sample (partitioned): query_knn of the sample against every shard, merged,
                                 against the sample's rows of the graph

A partition holds every document that probes it, about nprobe * n / P
documents; the exact plan holds all n, which ``knn_plan`` allows only below
``order.knn.exact_max_docs`` (the manifest says which was chosen and why).
"""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
import numpy as np

from corpusmill.schemas.config import KnnSectionConfig
from corpusmill.transforms.common import shard_of_keys, split_by
from corpusmill.transforms.order import knn_graph
from corpusmill.transforms.order.beam.refine import RefinePartitions
from corpusmill.transforms.order.plan import sample_mask

TRAIN_SEED_OFFSET = 0
RECALL_SEED_OFFSET = 1


class ShardGraph(NamedTuple):
    """One id shard's kNN lists, rows aligned with its ``EmbeddedShard``.

    Attributes:
        keys: int64 (m,) document keys.
        neighbors: int64 (m, k) neighbour keys, -1 padded.
        scores: float32 (m, k) cosines, -inf padded.
        label: int64 (m,) the partition each document is traversed in.
    """

    keys: np.ndarray
    neighbors: np.ndarray
    scores: np.ndarray
    label: np.ndarray


def _sample(element, plan: dict, config: KnnSectionConfig):
    _, shard = element
    if plan["mode"] != "partitioned":
        return
    mask = sample_mask(shard.keys, plan["partitions"] * config.train_per_partition, plan["documents"],
                       config.seed + TRAIN_SEED_OFFSET)
    if mask.any():
        yield shard.keys[mask], shard.vectors[mask]


def _train(pieces: list, plan: dict, seed: int):
    if plan["mode"] != "partitioned":
        return None
    keys = np.concatenate([p[0] for p in pieces])
    vectors = np.concatenate([p[1] for p in pieces])
    by_key = np.argsort(keys, kind="stable")  # the sample's order must not depend on arrival order
    if keys.size < plan["partitions"]:
        raise ValueError(f"{keys.size} sampled documents cannot train {plan['partitions']} centroids; "
                         "raise order.knn.train_per_partition")
    centroids = knn_graph.train_centroids(vectors[by_key], plan["partitions"], seed)
    return centroids, knn_graph.far_threshold(vectors[by_key], centroids)


def _route_to_partitions(element, plan: dict, trained):
    _, shard = element
    if plan["mode"] != "partitioned":
        yield 0, (shard.keys, shard.vectors)
        return
    centroids, far = trained
    probes = knn_graph.assign(shard.vectors, centroids, plan["nprobe"], far).probes
    rows = np.repeat(np.arange(shard.keys.size), probes.shape[1])
    probed = probes.ravel() != -1
    for p, (members,) in split_by(probes.ravel()[probed], rows[probed]):
        members = np.unique(members)
        yield int(p), (shard.keys[members], shard.vectors[members])


def _partition_knn(element, k: int, num_shards: int):
    _, pieces = element
    pieces = list(pieces)
    keys = np.concatenate([p[0] for p in pieces])
    vectors = np.concatenate([p[1] for p in pieces])
    neighbors, scores = knn_graph.partition_knn(keys, vectors, k)
    for shard, (ids, nbrs, s) in split_by(shard_of_keys(keys, num_shards), keys, neighbors, scores):
        yield shard, (ids, nbrs, s)


def _merge(element, plan: dict, centroids, k: int):
    shard_id, grouped = element
    for shard in grouped["embedded"]:
        ids, neighbors, scores = knn_graph.merge_topk(grouped["candidates"], k)
        row = np.searchsorted(ids, shard.keys)
        if ids.size != shard.keys.size or np.any(ids[np.minimum(row, ids.size - 1)] != shard.keys):
            raise RuntimeError(f"shard {shard_id}: the kNN candidates do not cover its documents")
        if plan["mode"] == "partitioned":
            label = knn_graph.assign(shard.vectors, centroids, 1).primary
        else:
            label = np.zeros(shard.keys.size, dtype=np.int64)
        yield shard_id, ShardGraph(shard.keys, neighbors[row], scores[row], label)


def _recall_queries(element, plan: dict, config: KnnSectionConfig):
    _, shard = element
    if plan["mode"] != "partitioned" or not config.recall_sample:
        return
    mask = sample_mask(shard.keys, config.recall_sample, plan["documents"], config.seed + RECALL_SEED_OFFSET)
    if mask.any():
        yield shard.keys[mask], shard.vectors[mask]


def _sorted_queries(pieces: list):
    if not pieces:
        return None
    keys = np.concatenate([p[0] for p in pieces])
    vectors = np.concatenate([p[1] for p in pieces])
    by_key = np.argsort(keys, kind="stable")
    return keys[by_key], vectors[by_key]


def _exact_answers(element, queries, k: int):
    _, shard = element
    if queries is not None:
        neighbors, scores = knn_graph.query_knn(queries[0], queries[1], shard.keys, shard.vectors, k)
        yield queries[0], neighbors, scores


def _approx_answers(element, queries):
    _, graph = element
    if queries is not None:
        mask = np.isin(graph.keys, queries[0])
        if mask.any():
            yield graph.keys[mask], graph.neighbors[mask], graph.scores[mask]


def _recall(exact: list, approx: list, plan: dict, sample: int) -> dict:
    record = {"k": plan["k"], "sample_requested": sample}
    if plan["mode"] != "partitioned":
        return {**record, "recall_at_k": 1.0, "sample": 0, "measured": False, "why": "exact graph"}
    if not exact:
        return {**record, "recall_at_k": None, "sample": 0, "measured": False,
                "why": "order.knn.recall_sample = 0" if not sample else "empty sample"}
    k = plan["k"]
    exact_ids, exact_neighbors, _ = knn_graph.merge_topk(exact, k)
    approx_ids, approx_neighbors, _ = knn_graph.merge_topk(approx, k)
    if not np.array_equal(exact_ids, approx_ids):
        raise RuntimeError("the recall sample's graph rows do not match its queries")
    return {**record, "recall_at_k": round(knn_graph.recall_at_k(approx_neighbors, exact_neighbors), 6),
            "sample": int(exact_ids.size), "measured": True}


class KnnGraph(beam.PTransform):
    """``(shard, EmbeddedShard)`` -> dict of ``graph`` ``(shard, ShardGraph)``, ``centroids``, ``recall``.

    ``centroids`` is a singleton (None for the exact plan), ``recall`` a
    singleton dict for the manifest.

    Args:
        config: The ``order.knn`` section.
        num_shards: Shards of the documents.
        plan: Singleton PCollection of ``knn_plan``'s dict.
    """

    def __init__(self, config: KnnSectionConfig, num_shards: int, plan):
        super().__init__()
        self._config = config
        self._num_shards = num_shards
        self._plan = plan

    def expand(self, embedded):
        config, n = self._config, self._num_shards
        plan = beam.pvalue.AsSingleton(self._plan)
        trained = (
            embedded
            | "SampleForCentroids" >> beam.FlatMap(_sample, plan, config)
            | "GatherCentroidSample" >> beam.combiners.ToList()
            | "TrainCentroids" >> beam.Map(_train, plan, config.seed)
        )
        centroids = trained | "Centroids" >> beam.Map(lambda t: None if t is None else t[0])
        candidates = (
            embedded
            | "RouteToPartitions" >> beam.FlatMap(_route_to_partitions, plan, beam.pvalue.AsSingleton(trained))
            | "GroupPartitions" >> beam.GroupByKey()
            | "PartitionKnn" >> beam.FlatMap(_partition_knn, config.k, n)
        )
        graph = (
            {"embedded": embedded, "candidates": candidates}
            | "GroupCandidates" >> beam.CoGroupByKey()
            | "MergeTopK" >> beam.FlatMap(_merge, plan, beam.pvalue.AsSingleton(centroids), config.k)
        )
        # With the exact plan every label is 0: the refinement runs on no rows.
        graph = graph | "RefinePartitions" >> RefinePartitions(n, config.refine_rounds, self._plan)
        queries = beam.pvalue.AsSingleton(
            embedded
            | "SampleRecallQueries" >> beam.FlatMap(_recall_queries, plan, config)
            | "GatherRecallQueries" >> beam.combiners.ToList()
            | "SortRecallQueries" >> beam.Map(_sorted_queries))
        exact = (embedded | "ExactSampleNeighbours" >> beam.FlatMap(_exact_answers, queries, config.k)
                 | "GatherExactSample" >> beam.combiners.ToList())
        approx = (graph | "GraphSampleNeighbours" >> beam.FlatMap(_approx_answers, queries)
                  | "GatherGraphSample" >> beam.combiners.ToList())
        recall = exact | "RecallAtK" >> beam.Map(_recall, beam.pvalue.AsSingleton(approx), plan,
                                                 config.recall_sample)
        return {"graph": graph, "centroids": centroids, "recall": recall}
