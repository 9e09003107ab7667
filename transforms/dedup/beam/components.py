"""ConnectedComponents: the Beam side of the duplicate graph's components.

Edges arrive as ``(left, right)`` int64 uid arrays, many edges per element.
Two ways to label them, chosen by ``mode``:

* ``single``: every edge array goes to one key and ``union_find_components``
  labels them on one worker. Only for graphs up to ``single_worker_max_edges``.
* ``distributed``: large-star / small-star rounds, each operation one shuffle
  keyed by node partition, unrolled ``max_rounds`` times. No step holds more
  than one partition's edges.
* ``auto``: counts the edges in the pipeline and routes them to one branch;
  both branches are in the graph, the other one sees no data. When the input
  is known to be a single partition (``single_partition``), ``auto`` resolves
  to ``single`` when the pipeline is built, and the distributed rounds (2 x
  ``max_rounds`` + 1 shuffles) are not in the graph at all.

Every round reports the checksum of its input edge set; equal checksums of
consecutive rounds prove convergence (see ``components.rounds_to_converge``).
The final stats record the branch that ran and the rounds it needed.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from corpusmill.transforms.common import METRICS_NAMESPACE, shard_of_keys, split_by
from corpusmill.transforms.dedup import components


def _labels_by_shard(nodes: np.ndarray, labels: np.ndarray, num_shards: int):
    for shard, (part_nodes, part_labels) in split_by(shard_of_keys(nodes, num_shards), nodes, labels):
        yield shard, (part_nodes, part_labels)


class _RouteEdgesDoFn(beam.DoFn):
    def __init__(self, requested: str, single_worker_max_edges: int):
        self._requested = requested
        self._max_edges = single_worker_max_edges

    def process(self, edges, edge_count):
        yield beam.pvalue.TaggedOutput(components.choose_mode(self._requested, edge_count, self._max_edges), edges)


def _mode_record(edge_count: int, requested: str, resolved: str, single_worker_max_edges: int, max_rounds: int,
                 single_partition: bool) -> dict:
    mode = components.choose_mode(resolved, edge_count, single_worker_max_edges)
    Metrics.counter(METRICS_NAMESPACE, f"dedup_components_{mode}").inc()
    return {"type": "components", "mode": mode, "requested": requested, "edges": int(edge_count),
            "single_worker_max_edges": single_worker_max_edges, "max_rounds": max_rounds,
            "reason": components.mode_reason(requested, mode, edge_count, single_worker_max_edges, single_partition)}


class _UnionFindDoFn(beam.DoFn):
    def __init__(self, num_shards: int):
        self._num_shards = num_shards

    def process(self, element):
        _, edge_arrays = element
        left, right = components.concat_pairs(edge_arrays)
        nodes, labels = components.union_find_components(left, right)
        yield from _labels_by_shard(nodes, labels, self._num_shards)


def _key_both_orientations(edges, num_partitions: int):
    left, right = edges
    node = np.concatenate([left, right]).astype(np.int64, copy=False)
    neighbour = np.concatenate([right, left]).astype(np.int64, copy=False)
    yield from split_by(components.node_partition(node, num_partitions), node, neighbour)


def _key_by_child(edges, num_partitions: int):
    child, parent = edges
    yield from split_by(components.node_partition(child, num_partitions), child, parent)


def _checksum_record(round_index: int, larger: np.ndarray, smaller: np.ndarray) -> dict:
    count, total = components.edge_checksum(larger, smaller)
    return {"type": "round", "round": round_index, "count": count, "sum": total}


class _LargeStarDoFn(beam.DoFn):
    """One partition's large-star; reports the checksum of the round's input edges."""

    def __init__(self, round_index: int):
        self._round = round_index

    def process(self, element):
        _, parts = element
        node, neighbour = components.unique_rows(*components.concat_pairs(parts))
        node, neighbour = node[node != neighbour], neighbour[node != neighbour]
        # Each undirected edge arrives in both orientations; its larger endpoint's
        # partition counts it once.
        canonical = node > neighbour
        yield beam.pvalue.TaggedOutput("checksums",
                                       _checksum_record(self._round, node[canonical], neighbour[canonical]))
        child, parent = components.large_star(node, neighbour)
        if child.size:
            yield child, parent


class _SmallStarDoFn(beam.DoFn):
    def process(self, element):
        _, parts = element
        child, parent = components.unique_rows(*components.concat_pairs(parts))
        child, parent = components.small_star(child, parent)
        if child.size:
            yield child, parent


class _FinalLabelsDoFn(beam.DoFn):
    """Reads labels off the last round's star edges; reports their checksum."""

    def __init__(self, round_index: int, num_shards: int):
        self._round = round_index
        self._num_shards = num_shards

    def process(self, element):
        _, parts = element
        child, parent = components.unique_rows(*components.concat_pairs(parts))
        yield beam.pvalue.TaggedOutput("checksums", _checksum_record(self._round, child, parent))
        nodes, labels = components.star_labels(child, parent)
        yield from _labels_by_shard(nodes, labels, self._num_shards)


class ConnectedComponents(beam.PTransform):
    """Labels every node of the duplicate graph with its component's smallest uid.

    Input: ``(left, right)`` int64 uid arrays (edges; repeats and either
    orientation allowed). Output: a dict with
      - ``labels``: ``(shard, (nodes, labels))`` int64 arrays, nodes of that
        shard (``common.shard_of_keys``); a node may appear in several
        elements (take its smallest label);
      - ``stats``: dicts, one ``{"type": "components", "mode", ...}`` and, for
        the distributed branch, one ``{"type": "round", ...}`` checksum per
        round and partition.

    Args:
        mode: ``single``, ``distributed`` or ``auto``.
        single_worker_max_edges: Largest edge count ``auto`` labels on one worker.
        num_partitions: Node partitions of each distributed round.
        num_shards: Shards of the documents the nodes name (labels are keyed by shard).
        max_rounds: Large-star / small-star rounds unrolled in the pipeline.
        single_partition: The whole input is one partition (it already fits
            one worker): ``auto`` resolves to ``single`` at construction.
    """

    def __init__(self, mode: str, single_worker_max_edges: int, num_partitions: int, num_shards: int,
                 max_rounds: int, single_partition: bool = False):
        super().__init__()
        if mode not in components.COMPONENT_MODES:
            raise ValueError(f"components mode {mode!r}; allowed: {', '.join(components.COMPONENT_MODES)}")
        self._requested = mode
        self._single_partition = single_partition
        self._mode = "single" if mode == "auto" and single_partition else mode
        self._max_edges = single_worker_max_edges
        self._partitions = max(1, num_partitions)
        self._shards = max(1, num_shards)
        self._max_rounds = max_rounds

    def expand(self, edges):
        edge_count = (
            edges
            | "CountEdges" >> beam.Map(lambda e: int(len(e[0])))
            | "SumEdges" >> beam.CombineGlobally(sum)
        )
        mode_stats = edge_count | "RecordComponentsMode" >> beam.Map(
            _mode_record, self._requested, self._mode, self._max_edges, self._max_rounds, self._single_partition)
        if self._mode == "auto":
            routed = edges | "RouteEdges" >> beam.ParDo(
                _RouteEdgesDoFn(self._mode, self._max_edges), beam.pvalue.AsSingleton(edge_count)
            ).with_outputs("single", "distributed")
            single_edges, distributed_edges = routed.single, routed.distributed
        else:
            # The branch is known: no routing step waiting on the edge count.
            single_edges = distributed_edges = edges
        labels, stats = [], [mode_stats]
        if self._mode in ("auto", "single"):
            labels.append(
                single_edges
                | "KeyAllEdgesTogether" >> beam.Map(lambda e: (0, e))
                | "GatherAllEdges" >> beam.GroupByKey()
                | "UnionFind" >> beam.ParDo(_UnionFindDoFn(self._shards))
            )
        if self._mode in ("auto", "distributed"):
            current = distributed_edges
            for r in range(self._max_rounds):
                large = (
                    current
                    | f"KeyLargeStarRound{r:02d}" >> beam.FlatMap(_key_both_orientations, self._partitions)
                    | f"GroupLargeStarRound{r:02d}" >> beam.GroupByKey()
                    | f"LargeStarRound{r:02d}" >> beam.ParDo(_LargeStarDoFn(r)).with_outputs(
                        "checksums", main="edges")
                )
                stats.append(large.checksums)
                current = (
                    large.edges
                    | f"KeySmallStarRound{r:02d}" >> beam.FlatMap(_key_by_child, self._partitions)
                    | f"GroupSmallStarRound{r:02d}" >> beam.GroupByKey()
                    | f"SmallStarRound{r:02d}" >> beam.ParDo(_SmallStarDoFn())
                )
            final = (
                current
                | "KeyFinalStars" >> beam.FlatMap(_key_by_child, self._partitions)
                | "GroupFinalStars" >> beam.GroupByKey()
                | "StarLabels" >> beam.ParDo(_FinalLabelsDoFn(self._max_rounds, self._shards)).with_outputs(
                    "checksums", main="labels")
            )
            labels.append(final.labels)
            stats.append(final.checksums)
        return {
            "labels": tuple(labels) | "AllComponentLabels" >> beam.Flatten(),
            "stats": tuple(stats) | "AllComponentStats" >> beam.Flatten(),
        }
