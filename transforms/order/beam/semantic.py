"""SemanticDedup: kNN neighbours at cosine >= threshold become duplicates of kind ``semantic``.

The same machinery as the dedup stage: the edges go through its
``ConnectedComponents`` (one worker or distributed rounds, chosen by edge
count), each cluster keeps one member by ``order.semantic_dedup.keep``
(``keep_policy.choose_representatives``), and every other member becomes a
``DUPLICATE_SCHEMA`` row whose ``similarity`` is its cosine to the kept one.
Data flow::

    graph (shard, ShardGraph) -> edges with score >= threshold -> ConnectedComponents
    labels + embedded (by shard) -> members keyed by cluster partition -> resolve
        -> duplicates rows, dropped keys (shard, keys), cluster stats
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa

from corpusmill.schemas.config import SemanticDedupConfig
from corpusmill.schemas.documents import DUPLICATE_SCHEMA, DuplicateKind
from corpusmill.transforms.common import shard_of_keys, split_by
from corpusmill.transforms.dedup.components import min_label_per_node
from corpusmill.transforms.dedup.beam.components import ConnectedComponents
from corpusmill.transforms.dedup.keep_policy import NO_TIMESTAMP, choose_representatives
from corpusmill.transforms.order.beam.lookup import LookupByKey, Owned, lookup

DEFAULT_MAX_ROUNDS = 12
SINGLE_WORKER_MAX_EDGES = 5_000_000


def edges(element, threshold: float):
    """``(left, right)`` keys of one shard's kNN edges at or above the threshold."""
    _, graph = element
    strong = (graph.neighbors != -1) & (graph.scores >= threshold)
    if strong.any():
        rows, _ = np.nonzero(strong)
        yield graph.keys[rows], graph.neighbors[strong]


def _members(element, num_shards: int):
    """Each labelled document of a shard, with what the keep policy needs, keyed by its cluster's partition."""
    _, grouped = element
    labelled = list(grouped["labels"])
    if not labelled:
        return
    # A node may come twice: its smallest label.
    nodes, labels = min_label_per_node(np.concatenate([n for n, _ in labelled]),
                                                  np.concatenate([lab for _, lab in labelled]))
    for shard in grouped["embedded"]:
        sorter = np.argsort(shard.keys, kind="stable")
        at = sorter[np.searchsorted(shard.keys, nodes, sorter=sorter)]
        if np.any(shard.keys[at] != nodes):
            raise RuntimeError("a semantic cluster names a document its shard does not hold")
        for part, (rows, cluster) in split_by(shard_of_keys(labels, num_shards), at, labels):
            yield part, (cluster, shard.keys[rows], shard.ids[rows], shard.lengths[rows],
                         shard.timestamps[rows], shard.vectors[rows])


def resolve(element, keep: str, num_shards: int):
    """Representatives of one partition's clusters: duplicates rows, drops by shard, and a summary."""
    _, pieces = element
    pieces = list(pieces)
    cluster, keys, ids, lengths, stamps, vectors = (np.concatenate([p[i] for p in pieces]) for i in range(6))
    by_key = np.argsort(keys, kind="stable")  # arrival order must not matter
    cluster, keys, ids, lengths, stamps, vectors = (a[by_key] for a in (cluster, keys, ids, lengths, stamps, vectors))
    stamps = np.where(stamps == -1, NO_TIMESTAMP, stamps)
    rep = choose_representatives(cluster, ids, keep, lengths=lengths, timestamps=stamps)
    named = choose_representatives(cluster, ids, "smallest_id")
    dropped = np.flatnonzero(rep != np.arange(rep.size))
    similarity = np.einsum("ij,ij->i", vectors[dropped].astype(np.float64), vectors[rep[dropped]].astype(np.float64))
    yield beam.pvalue.TaggedOutput("duplicates", pa.RecordBatch.from_arrays([
        pa.array(ids[dropped].tolist(), pa.string()),
        pa.array([DuplicateKind.SEMANTIC] * dropped.size, pa.string()),
        pa.array(ids[named[dropped]].tolist(), pa.string()),
        pa.array(ids[rep[dropped]].tolist(), pa.string()),
        pa.array(np.minimum(similarity, 1.0), pa.float64()),
    ], schema=DUPLICATE_SCHEMA))
    for shard, (gone,) in split_by(shard_of_keys(keys[dropped], num_shards), keys[dropped]):
        yield beam.pvalue.TaggedOutput("drops", (shard, gone))
    sizes = np.unique(cluster, return_counts=True)[1]
    yield {"clusters": int(sizes.size), "members": int(cluster.size), "duplicates": int(dropped.size),
           "largest": int(sizes.max()) if sizes.size else 0}


def summarise(records: list[dict], components: list[dict], config: SemanticDedupConfig) -> dict:
    """The ``semantic_dedup`` section of the order stage's stats."""
    totals = {key: sum(r[key] for r in records) for key in ("clusters", "members", "duplicates")}
    mode = next((c for c in components if c.get("type") == "components"), {})
    return {"enabled": True, "threshold": config.threshold, "keep": config.keep, **totals,
            "largest_cluster": max((r["largest"] for r in records), default=0),
            "components_mode": mode.get("mode"), "edges": mode.get("edges")}


def dropped_flags(element):
    """``(shard, {embedded, drops})`` -> ``(shard, Owned(keys, dropped?))`` for LookupByKey."""
    shard, grouped = element
    gone = np.concatenate(grouped["drops"]) if grouped["drops"] else np.empty(0, np.int64)
    for embedded in grouped["embedded"]:
        yield shard, Owned(embedded.keys, np.isin(embedded.keys, gone))


def kept_graph(element):
    """A shard's graph without its dropped rows and without dropped neighbours (lists closed up)."""
    shard, grouped = element
    answers = list(grouped["answers"])
    for (_, graph) in drop_rows((shard, {"graph": grouped["graph"], "drops": grouped["drops"]}), "graph"):
        gone = lookup(answers, graph.neighbors, missing=False).astype(bool) if graph.neighbors.size else \
            np.zeros(graph.neighbors.shape, dtype=bool)
        keep = (graph.neighbors != -1) & ~gone
        first = np.argsort(~keep, axis=1, kind="stable")
        neighbors = np.where(keep, graph.neighbors, -1)
        scores = np.where(keep, graph.scores, np.float32(-np.inf)).astype(np.float32)
        yield shard, graph._replace(neighbors=np.take_along_axis(neighbors, first, axis=1),
                                    scores=np.take_along_axis(scores, first, axis=1))


def drop_rows(element, which: str):
    """``(shard, {which: [rows], drops: [keys...]})`` -> the shard's rows without the dropped documents."""
    shard, grouped = element
    gone = np.concatenate(grouped["drops"]) if grouped["drops"] else np.empty(0, np.int64)
    for value in grouped[which]:
        if gone.size:
            keep = ~np.isin(value.keys, gone)
            value = type(value)(*(a[keep] if isinstance(a, np.ndarray) and a.shape[:1] == keep.shape else a
                                  for a in value))
        yield shard, value


class SemanticDedup(beam.PTransform):
    """``(embedded, graph)`` -> dict of ``drops`` (shard, keys), ``duplicates`` (RecordBatch), ``stats``,
    and the ``embedded`` shards and ``graph`` without the dropped documents (rows and neighbours).

    Args:
        config: The ``order.semantic_dedup`` section.
        num_shards: Shards of the documents.
    """

    def __init__(self, config: SemanticDedupConfig, num_shards: int):
        super().__init__()
        self._config = config
        self._num_shards = num_shards

    def expand(self, pcolls):
        embedded, graph = pcolls
        n = self._num_shards
        components = (graph | "StrongEdges" >> beam.FlatMap(edges, self._config.threshold)
                      | "SemanticComponents" >> ConnectedComponents("auto", SINGLE_WORKER_MAX_EDGES, n, n,
                                                                    DEFAULT_MAX_ROUNDS))
        resolved = (
            {"labels": components["labels"], "embedded": embedded}
            | "JoinClusterMembers" >> beam.CoGroupByKey()
            | "ClusterMembers" >> beam.FlatMap(_members, n)
            | "GroupClusters" >> beam.GroupByKey()
            | "KeepOnePerCluster" >> beam.FlatMap(resolve, self._config.keep, n).with_outputs(
                "duplicates", "drops", main="summaries")
        )
        component_stats = components["stats"] | "GatherComponentStats" >> beam.combiners.ToList()
        stats = (resolved.summaries | "GatherSemanticSummaries" >> beam.combiners.ToList()
                 | "SemanticStats" >> beam.Map(summarise, beam.pvalue.AsSingleton(component_stats), self._config))
        drops = resolved.drops
        flags = ({"embedded": embedded, "drops": drops} | "JoinDropFlags" >> beam.CoGroupByKey()
                 | "DropFlags" >> beam.FlatMap(dropped_flags))
        wanted = graph | "NeighbourKeys" >> beam.MapTuple(lambda shard, g: (shard, g.neighbors.ravel()))
        answers = (flags, wanted) | "NeighbourDropped" >> LookupByKey(n)
        kept = ({"embedded": embedded, "drops": drops} | "JoinEmbeddedDrops" >> beam.CoGroupByKey()
                | "DropEmbedded" >> beam.FlatMap(drop_rows, "embedded"))
        graph_kept = ({"graph": graph, "drops": drops, "answers": answers} | "JoinGraphDrops" >> beam.CoGroupByKey()
                      | "DropFromGraph" >> beam.FlatMap(kept_graph))
        return {"drops": drops, "duplicates": resolved.duplicates, "stats": stats, "embedded": kept,
                "graph": graph_kept}
