"""OrderDocuments: the ``order`` stage, In-Context Pretraining's document order.

Shi et al. (ICLR 2024) train on contexts of related documents: embed every
document, build a kNN graph, walk it so that each document is followed by its
most similar unvisited neighbour, and cut the concatenation into contexts.
The stage, step by step (each a transform of its own module)::

    (id shard, docs) -> EmbedDocuments -> (id shard, EmbeddedShard) -> embeddings/
                     -> count -> knn_plan (exact on one worker, or partitioned)
    embedded -> KnnGraph -> (id shard, ShardGraph) -> neighbors/ (ids via LookupByKey)
    embedded + graph + centroids -> TraversePartitions -> positions, partition layout
    docs + positions -> PlaceDocuments -> (ordered shard, docs with ``position``)

It hands on the documents in position order, sharded into contiguous ranges
of the order, so ``docs/`` and every later stage (decompose, contexts) keep
it. Its stats hold the plan, recall@k of the partitioned graph, and the
quality figures (``beam.quality``).
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa

from corpusmill.schemas.config import ConfigError, OrderConfig
from corpusmill.schemas.documents import ORDERED_DOCUMENT_SCHEMA
from corpusmill.transforms.decompose.tokenizer import tokenizer_problem
from corpusmill.transforms.io.shard_files import OutputSpec
from corpusmill.transforms.order.beam.contexts import PackContexts, contexts_spec
from corpusmill.transforms.order.beam.embed import EmbedDocuments
from corpusmill.transforms.order.beam.graph import KnnGraph
from corpusmill.transforms.order.beam.lookup import LookupByKey, Owned, lookup
from corpusmill.transforms.order.beam.place import PlaceDocuments
from corpusmill.transforms.order.beam.reuse import reuse_plan
from corpusmill.transforms.order.beam.quality import finish_quality, graph_sums, shard_sums
from corpusmill.transforms.order.beam.semantic import SemanticDedup
from corpusmill.transforms.order.beam.traverse import TraversePartitions
from corpusmill.transforms.io.beam.shards import WriteShards
from corpusmill.transforms.order.plan import knn_plan
from corpusmill.transforms.stage import StageContext, StageResult

EMBEDDINGS = OutputSpec("embeddings", pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("vector", pa.list_(pa.float32()), nullable=False),
    pa.field("text_hash", pa.int64(), nullable=False),  # xxh3-64 of the text: reuse only for the same text
]), ("id",))
NEIGHBORS = OutputSpec("neighbors", pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("neighbor_ids", pa.list_(pa.string()), nullable=False),
    pa.field("scores", pa.list_(pa.float32()), nullable=False),
]), ("id",))
ORDERED_DOCS = OutputSpec("docs", ORDERED_DOCUMENT_SCHEMA, ("position",))


def _ragged(values: np.ndarray, lengths: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    offsets = np.zeros(lengths.size + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, value_type))


def embeddings_table(element):
    """``(shard, EmbeddedShard)`` -> ``(shard, embeddings rows)``, in the shard's id order."""
    shard, embedded = element
    m, d = embedded.vectors.shape
    vectors = _ragged(embedded.vectors.ravel(), np.full(m, d, dtype=np.int64), pa.float32())
    return shard, pa.table({"id": pa.array(embedded.ids.tolist(), pa.string()), "vector": vectors,
                            "text_hash": pa.array(embedded.text_hashes, pa.int64())}, schema=EMBEDDINGS.schema)


def neighbors_table(element):
    """``(shard, {embedded, graph, answers})`` -> ``(shard, neighbors rows)``: keys named by id."""
    shard, grouped = element
    answers = list(grouped["answers"])
    for embedded, graph in zip(grouped["embedded"], grouped["graph"]):
        found = graph.neighbors != -1
        names = lookup(answers, graph.neighbors[found]) if found.any() else np.empty(0, dtype=object)
        lengths = found.sum(axis=1)
        yield shard, pa.table({
            "id": pa.array(embedded.ids.tolist(), pa.string()),
            "neighbor_ids": _ragged(names.astype(object), lengths, pa.string()),
            "scores": _ragged(graph.scores[found].astype(np.float32), lengths, pa.float32()),
        }, schema=NEIGHBORS.schema)


def _stats(plan: dict, recall: dict, quality: dict, info: list[dict], contexts: list[dict],
           semantic: list[dict], config: OrderConfig, reuse: dict | None) -> dict:
    embedder = {k: v for k, v in info[0].items() if k not in ("reused", "embedded")} if info else {
        "spec": config.embed.model, "fingerprint": None, "dim": None}
    if any(i["fingerprint"] != embedder["fingerprint"] for i in info):
        raise RuntimeError("shards were embedded by embedders with different fingerprints")
    embedder["documents_embedded"] = sum(i["embedded"] for i in info)
    embedder["documents_reused"] = sum(i["reused"] for i in info)
    if reuse is not None:
        embedder["reused_from"] = {k: reuse[k] for k in ("snapshot", "manifest_sha256", "embedder")}
    return {"embedder": embedder, "knn": {**plan, "recall": recall}, "traversal": config.traversal,
            "quality": quality, "contexts": contexts[0] if contexts else None,
            "semantic_dedup": semantic[0] if semantic else {"enabled": False}}


class OrderDocuments(beam.PTransform):
    """The ``order`` stage: embed, kNN graph, traversal, documents placed in order.

    Input: ``(shard, pyarrow.Table)`` documents by id shard (``id``, ``text``,
    ``timestamp`` and the rest), one element per shard. Output: a
    ``StageResult`` whose ``docs`` are ``(ordered shard, table)`` in position
    order with a ``position`` column, ``shards`` the written embeddings and
    neighbours files, and ``stats`` the order section of the manifest.

    Args:
        config: The ``order`` section of the job.
        context: Shard count, staging directory and Parquet encoding.
    """

    name = "order"
    docs_spec = ORDERED_DOCS

    def __init__(self, config: OrderConfig, context: StageContext):
        super().__init__()
        self._config = config
        self._context = context

    @staticmethod
    def check(config: OrderConfig) -> None:
        """The embedder's model and the contexts' tokenizer must be loadable here, a reused snapshot usable."""
        if config.contexts.enabled:
            problem = tokenizer_problem(config.contexts.tokenizer)
            if problem:
                raise ConfigError("order.contexts.tokenizer", problem)
        reuse_plan(config.embed)
        model = config.embed.model
        if model.startswith("st:"):
            try:
                import sentence_transformers  # noqa: F401
            except ImportError:
                raise ConfigError("order.embed.model", f"{model!r} needs sentence-transformers and torch: "
                                  "pip install 'corpusmill[embed]'") from None

    @staticmethod
    def output_specs(config: OrderConfig, context: StageContext) -> list[OutputSpec]:
        """``embeddings/`` and ``neighbors/`` (by id), and ``contexts/`` (by context index) when enabled."""
        return [EMBEDDINGS, NEIGHBORS, *([contexts_spec(config.contexts)] if config.contexts.enabled else [])]

    def expand(self, docs):
        config, context = self._config, self._context
        n = context.num_shards
        count = docs | "CountDocuments" >> beam.Map(lambda e: e[1].num_rows) | "SumDocuments" >> beam.CombineGlobally(sum)
        plan = count | "KnnPlan" >> beam.Map(lambda documents, knn: knn_plan(knn, documents), config.knn)
        reuse = reuse_plan(config.embed)
        embedded, info = docs | "EmbedDocuments" >> EmbedDocuments(config.embed, count, reuse=reuse,
                                                                   num_shards=n)
        graph = embedded | "KnnGraph" >> KnnGraph(config.knn, n, plan)
        kept, kept_graph, duplicates, drops, semantic = embedded, graph["graph"], None, None, []
        if config.semantic_dedup.enabled:
            found = (embedded, graph["graph"]) | "SemanticDedup" >> SemanticDedup(config.semantic_dedup, n)
            drops, duplicates, semantic = found["drops"], found["duplicates"], [found["stats"]]
            kept, kept_graph = found["embedded"], found["graph"]
        traversed = ((kept, kept_graph, graph["centroids"])
                     | "TraversePartitions" >> TraversePartitions(config.traversal, config.near_duplicate_cosine, n))
        placed = ((docs, traversed["positions"], traversed["placement"])
                  | "PlaceDocuments" >> PlaceDocuments(n, drops))
        kept_count = traversed["placement"] | "KeptDocuments" >> beam.Map(lambda placement: placement["documents"])

        owned = embedded | "KeysToIds" >> beam.MapTuple(lambda shard, e: (shard, Owned(e.keys, e.ids)))
        wanted = graph["graph"] | "NeighbourKeys" >> beam.MapTuple(lambda shard, g: (shard, g.neighbors.ravel()))
        answers = (owned, wanted) | "NeighbourIds" >> LookupByKey(n)
        neighbors = ({"embedded": embedded, "graph": graph["graph"], "answers": answers}
                     | "JoinNeighbourIds" >> beam.CoGroupByKey()
                     | "NeighborsTable" >> beam.FlatMap(neighbors_table))
        written = [
            embedded | "EmbeddingsTable" >> beam.Map(embeddings_table)
            | "WriteEmbeddings" >> WriteShards(EMBEDDINGS, context.staging_dir, n, context.parquet),
            neighbors | "WriteNeighbors" >> WriteShards(NEIGHBORS, context.staging_dir, n, context.parquet),
        ]
        contexts = []
        if config.contexts.enabled:
            contexts_written, contexts_stats = placed | "PackContexts" >> PackContexts(
                config.contexts, n, context.staging_dir, context.parquet, kept_count)
            written.append(contexts_written)
            contexts = [contexts_stats]

        shard_stats = kept | "ShardSums" >> beam.Map(shard_sums) | "GatherShardSums" >> beam.combiners.ToList()
        graph_stats = kept_graph | "GraphSums" >> beam.Map(graph_sums) | "GatherGraphSums" >> beam.combiners.ToList()
        quality = traversed["summaries"] | "Quality" >> beam.Map(
            finish_quality, beam.pvalue.AsSingleton(traversed["placement"]), beam.pvalue.AsSingleton(shard_stats),
            beam.pvalue.AsSingleton(graph_stats), config.near_duplicate_cosine)
        stats = plan | "OrderStats" >> beam.Map(
            _stats, beam.pvalue.AsSingleton(graph["recall"]), beam.pvalue.AsSingleton(quality),
            beam.pvalue.AsList(info),
            beam.pvalue.AsList(contexts[0]) if contexts else [],
            beam.pvalue.AsList(semantic[0]) if semantic else [], config, reuse)
        return StageResult(placed, duplicates, tuple(written) | "AllOrderShards" >> beam.Flatten(), stats)
