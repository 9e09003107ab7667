"""RefinePartitions: traversal partitions by group votes over the merged kNN graph.

Data flow (``partitions`` module docstring for the vote; partitioned plan only,
the exact plan's graph passes through untouched)::

    graph (shard, ShardGraph) -> (key, top-1 key) edges -> ConnectedComponents -> group of each key
    graph + groups -> rows routed to their group's shard (every group whole on one worker)
    per round: labels owned by key shard, looked up for each row's neighbours
                    (LookupByKey) -> vote_groups -> rows with new labels
    rows -> labels back to their key shards -> (shard, ShardGraph) with ``label`` set

No worker holds more than one shard's rows and the labels it asked for; a
group (a component of the nearest-neighbour forest) has a few documents.
"""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
import numpy as np

from corpusmill.transforms.common import shard_of_keys, split_by
from corpusmill.transforms.dedup.components import min_label_per_node
from corpusmill.transforms.dedup.beam.components import ConnectedComponents
from corpusmill.transforms.order import partitions
from corpusmill.transforms.order.beam.lookup import LookupByKey, Owned, lookup

# Only the distributed rounds run (a fixed, small number: ``partitions.GROUP_ROUNDS``); this
# bound is not used by that mode.
SINGLE_WORKER_MAX_EDGES = 5_000_000


class GroupRows(NamedTuple):
    """Rows of whole groups, on their group's shard: keys, group keys, kNN lists and labels."""

    keys: np.ndarray
    groups: np.ndarray
    neighbors: np.ndarray
    scores: np.ndarray
    label: np.ndarray


def nearest_edges(element):
    """``(shard, ShardGraph)`` -> ``(keys, top-1 keys)`` of the rows that have a neighbour."""
    _, graph = element
    linked = graph.neighbors[:, 0] != -1 if graph.neighbors.shape[1] else np.zeros(graph.keys.size, bool)
    if linked.any():
        yield graph.keys[linked], graph.neighbors[linked, 0]


def _smallest_label(labelled: list) -> tuple[np.ndarray, np.ndarray]:
    """The nodes of one shard's component labels, each with its smallest label (a node may come twice)."""
    if not labelled:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return min_label_per_node(np.concatenate([n for n, _ in labelled]),
                                         np.concatenate([lab for _, lab in labelled]))


def route_to_groups(element, num_shards: int):
    """``(shard, {graph, groups})`` -> ``(group shard, GroupRows)``: each row to its group's shard."""
    _, grouped = element
    nodes, labels = _smallest_label(list(grouped["groups"]))
    for graph in grouped["graph"]:
        group = graph.keys.copy()
        if nodes.size:
            at = np.minimum(np.searchsorted(nodes, graph.keys), nodes.size - 1)
            found = nodes[at] == graph.keys
            group[found] = labels[at[found]]
        for part, (rows,) in split_by(shard_of_keys(group, num_shards), np.arange(group.size)):
            yield part, GroupRows(graph.keys[rows], group[rows], graph.neighbors[rows], graph.scores[rows],
                                  graph.label[rows])


def gather_rows(element):
    """``(group shard, [GroupRows])`` -> one ``GroupRows`` in key order (arrival order cannot matter)."""
    part, pieces = element
    pieces = list(pieces)
    rows = GroupRows(*(np.concatenate([getattr(p, f) for p in pieces]) for f in GroupRows._fields))
    by_key = np.argsort(rows.keys, kind="stable")
    return part, GroupRows(*(a[by_key] for a in rows))


def _owned_labels(element, num_shards: int):
    _, rows = element
    for shard, (keys, label) in split_by(shard_of_keys(rows.keys, num_shards), rows.keys, rows.label):
        yield shard, Owned(keys, label)


def _vote(element, plan: dict, round_index: int):
    part, grouped = element
    answers = list(grouped["answers"])
    for rows in grouped["rows"]:
        labels = lookup(answers, rows.neighbors, missing=-1).astype(np.int64)
        yield part, rows._replace(label=partitions.vote_groups(rows.keys, rows.groups, rows.label, labels,
                                                               rows.scores, plan["partitions"], round_index))


def _labels_home(element, num_shards: int):
    _, rows = element
    for shard, (keys, label) in split_by(shard_of_keys(rows.keys, num_shards), rows.keys, rows.label):
        yield shard, (keys, label)


def set_labels(element):
    """``(shard, {graph, labels})`` -> ``(shard, ShardGraph)`` with every row's refined label."""
    shard, grouped = element
    pieces = list(grouped["labels"])
    for graph in grouped["graph"]:
        keys = np.concatenate([k for k, _ in pieces]) if pieces else np.empty(0, np.int64)
        labels = np.concatenate([lab for _, lab in pieces]) if pieces else np.empty(0, np.int64)
        sorter = np.argsort(keys, kind="stable")
        at = sorter[np.minimum(np.searchsorted(keys, graph.keys, sorter=sorter), max(keys.size - 1, 0))] \
            if keys.size else np.zeros(graph.keys.size, np.int64)
        if keys.size < graph.keys.size or np.any(keys[at] != graph.keys):
            raise RuntimeError("a refined label is missing for a document of the graph")
        yield shard, graph._replace(label=labels[at].astype(np.int64))


class RefinePartitions(beam.PTransform):
    """``(shard, ShardGraph)`` -> the same, ``label`` refined by ``rounds`` rounds of group votes.

    Args:
        num_shards: Shards of the documents.
        rounds: Voting rounds (``order.knn.refine_rounds``).
        plan: Singleton PCollection of ``knn_plan``'s dict (only ``partitioned`` refines).
    """

    def __init__(self, num_shards: int, rounds: int, plan):
        super().__init__()
        self._num_shards = num_shards
        self._rounds = rounds
        self._plan = plan

    def expand(self, graph):
        n = self._num_shards
        if self._rounds == 0:
            return graph
        plan = beam.pvalue.AsSingleton(self._plan)
        active = graph | "OnlyPartitioned" >> beam.Filter(lambda _, p: p["mode"] == "partitioned", plan)
        untouched = graph | "OnlyExact" >> beam.Filter(lambda _, p: p["mode"] != "partitioned", plan)
        groups = (active | "NearestEdges" >> beam.FlatMap(nearest_edges)
                  | "NearestNeighbourGroups" >> ConnectedComponents("distributed", SINGLE_WORKER_MAX_EDGES, n, n,
                                                                    partitions.GROUP_ROUNDS))
        rows = ({"graph": active, "groups": groups["labels"]}
                | "JoinGroups" >> beam.CoGroupByKey()
                | "RouteToGroups" >> beam.FlatMap(route_to_groups, n)
                | "GroupShards" >> beam.GroupByKey()
                | "GatherGroupRows" >> beam.Map(gather_rows))
        for round_index in range(self._rounds):
            owned = rows | f"OwnedLabels{round_index}" >> beam.FlatMap(_owned_labels, n)
            wanted = rows | f"WantedLabels{round_index}" >> beam.MapTuple(lambda part, r: (part, r.neighbors.ravel()))
            answers = (owned, wanted) | f"NeighbourLabels{round_index}" >> LookupByKey(n)
            rows = ({"rows": rows, "answers": answers}
                    | f"GroupAnswers{round_index}" >> beam.CoGroupByKey()
                    | f"Vote{round_index}" >> beam.FlatMap(_vote, plan, round_index))
        refined = ({"graph": active, "labels": rows | "LabelsHome" >> beam.FlatMap(_labels_home, n)}
                   | "JoinRefinedLabels" >> beam.CoGroupByKey()
                   | "SetLabels" >> beam.FlatMap(set_labels))
        return (refined, untouched) | "Together" >> beam.Flatten()
