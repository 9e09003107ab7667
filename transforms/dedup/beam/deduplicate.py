"""Deduplicate: exact and MinHash-LSH near duplicates, clustered, one survivor per cluster.

Data flow (every arrow is one step; ``P`` partitions = ``num_shards``)::

    (shard, table) -> ComputeDedupFeatures -> features per shard (uids, ids, exact hash,
                                              signature, length, timestamp, source rank)
                                           -> bucket arrays keyed (band, key range);
                                              band -1 holds the exact hashes
                                           -> shingle-hash sets per shard (verify = exact)
    buckets  -> GroupBuckets -> BucketStars -> exact edges | candidate edges keyed by partition
                (with exact dedup on, copies of one text count once in a near bucket)
    candidates + payload of their endpoints (taken from the owning shard's
             shingle sets or signatures) -> VerifyCandidates -> verified edges
    exact + verified edges -> ConnectedComponents -> (shard, node labels)
    labels + features (by shard) -> AttachFeatures -> members keyed by cluster partition
             -> ResolveClusters -> duplicates rows, ids to drop (by shard), cluster stats
    (shard, Arrow IPC pieces) + drops (by shard) -> DropDuplicates -> kept (shard, table)

Documents are named inside the stage by their stable key (xxh3-64 of the id,
``corpusmill.transforms.dedup.features``), whose shard is the key modulo the
shard count. Only small per-document features travel. Each text is normalised
and shingled once, in the features step; exact verification gets the
endpoints' shingle-hash sets (uint32 values + offsets) from there. The text
itself crosses one shuffle, the final filter, as Arrow IPC bytes: a table
inside a CoGroupByKey value loses its type hint and would be pickled.
"""

from __future__ import annotations

import time

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from corpusmill.schemas.config import DedupConfig
from corpusmill.schemas.documents import DOCUMENT_BATCH_SCHEMA, DuplicateKind
from corpusmill.transforms.common import METRICS_NAMESPACE, shard_of_keys, split_by
from corpusmill.transforms.dedup import components, lsh, stats
from corpusmill.transforms.dedup import index as index_lib
from corpusmill.transforms.dedup.beam.components import ConnectedComponents
from corpusmill.transforms.dedup.clusters import excerpt_text, largest, resolve_clusters
from corpusmill.transforms.dedup.features import (
    EXACT_BAND,
    DedupPlan,
    bucket_arrays,
    bucket_edges,
    compute_features,
    members_of,
    rows_of,
    shingle_set_pieces,
)
from corpusmill.transforms.io import arrow_ipc
from corpusmill.transforms.io.beam.shards import WriteShards
from corpusmill.transforms.io.beam.snapshot import checkpoint
from corpusmill.transforms.io.shard_files import OutputSpec
from corpusmill.transforms.stage import StageContext, StageResult

DEFAULT_MAX_ROUNDS = 12
# Rows of a previous snapshot's index per element of the refresh's join (about 1 MB with shingle sets).
INDEX_PIECE_ROWS = 256


def _counter(name: str, value: int = 1) -> None:
    if value:
        Metrics.counter(METRICS_NAMESPACE, name).inc(int(value))


class _ComputeFeaturesDoFn(beam.DoFn):
    """One shard's features and bucket arrays; in a refresh, merged with the shard's published index rows."""

    def __init__(self, plan: DedupPlan):
        self._plan = plan

    def process(self, element):
        started = time.perf_counter()
        checkpoint("dedup")
        if self._plan.refresh:
            shard, grouped = element
            tables = list(grouped["docs"])
            table = tables[0] if tables else DOCUMENT_BATCH_SCHEMA.empty_table()
            features = compute_features(table, self._plan)
            pieces = [arrow_ipc.decode_table(piece) for piece in grouped["published"]]
            published, published_sets = index_lib.published_features(
                pa.concat_tables(pieces) if pieces else index_lib.INDEX_SCHEMA.empty_table(), self._plan)
            features, early = index_lib.merge_published(features, published, published_sets)
            if early.num_rows:
                kinds = np.asarray(early.column("kind").to_pylist(), dtype=object)
                yield beam.pvalue.TaggedOutput("early", early)
                yield beam.pvalue.TaggedOutput("early_drops", (shard, (
                    np.asarray(early.column("id").to_pylist(), dtype=object), kinds)))
                yield beam.pvalue.TaggedOutput("stats", {"type": "published_ids", "by_kind": {
                    str(k): int(c) for k, c in zip(*np.unique(kinds.astype(str), return_counts=True))}})
        else:
            shard, table = element
            features = compute_features(table, self._plan)
        _counter("dedup_input_documents", table.num_rows)
        _counter("dedup_key_collisions", features["key_collisions"])
        yield beam.pvalue.TaggedOutput("stats", {"type": "features", "key_collisions": features["key_collisions"]})
        for key, arrays in bucket_arrays(features, self._plan):
            yield beam.pvalue.TaggedOutput("buckets", (key, arrays))
        if features["shingle_sets"] is not None:
            for piece in shingle_set_pieces(features):
                yield beam.pvalue.TaggedOutput("shingle_sets", (shard, piece))
        # Band keys are only needed for the buckets, shingle sets only by
        # verification and the index; the rest of the features live on to the resolve step.
        features.pop("band_keys")
        features.pop("shingle_sets")
        yield shard, features
        _counter("time_dedup_features_ms", int((time.perf_counter() - started) * 1000))


def _read_index_file(path: str, num_shards: int):
    """One index file of the previous snapshot -> ``(shard, Arrow IPC bytes)`` of its rows, by this run's shards."""
    with FileSystems.open(path) as handle:
        table = pq.read_table(handle)
    shard = shard_of_keys(table.column("key").to_numpy(), num_shards)
    for part, (rows,) in split_by(shard, np.arange(table.num_rows)):
        piece = table.take(pa.array(rows, pa.int64()))
        for start in range(0, piece.num_rows, INDEX_PIECE_ROWS):
            yield part, arrow_ipc.encode_ipc(piece.slice(start, INDEX_PIECE_ROWS))


class _IndexDoFn(beam.DoFn):
    """One shard's index rows: its published documents and its kept new ones."""

    def process(self, element):
        shard, grouped = element
        if not grouped["features"]:
            return
        (features,) = grouped["features"]
        sets = None
        if grouped["shingle_sets"]:
            pieces = sorted(grouped["shingle_sets"], key=lambda piece: int(piece[0][0]))
            sets = lsh.csr_concat([(piece[1], piece[2]) for piece in pieces])
        drop_ids = [doc_id for ids, _ in grouped["drops"] for doc_id in ids.tolist()]
        dropped = pc.is_in(pa.array(features["id"].tolist(), pa.string()),
                           value_set=pa.array(drop_ids, pa.string())).to_numpy(zero_copy_only=False)
        keep = features["published"] | ~dropped
        yield shard, index_lib.index_table(features, sets, keep)


class _BucketStarsDoFn(beam.DoFn):
    """Star edges of the buckets of one (band, key range)."""

    def __init__(self, plan: DedupPlan):
        self._plan = plan

    def process(self, element):
        (band, _), parts = element
        centre, member = bucket_edges(parts)
        if centre.size == 0:
            return
        if band == EXACT_BAND:
            _counter("dedup_exact_pairs", centre.size)
            yield beam.pvalue.TaggedOutput("exact", (centre, member))
        elif self._plan.config.verify == "none":
            _counter("dedup_candidate_pairs", centre.size)
            yield beam.pvalue.TaggedOutput("near", (centre, member))
        else:
            _counter("dedup_candidate_pairs", centre.size)
            # Key by the centre's partition: a centre's star meets its repeats
            # from other bands in one place, where they are deduplicated.
            partition = components.node_partition(centre, self._plan.num_partitions)
            for p, (c, m) in split_by(partition, centre, member):
                yield beam.pvalue.TaggedOutput("candidates", (p, (c, m)))


def _payload_requests(element, num_shards: int):
    """(partition, edges) -> (shard, (partition, endpoint uids)) for each shard involved."""
    partition, (centre, member) = element
    endpoints = np.unique(np.concatenate([centre, member]))
    for shard, (uids,) in split_by(shard_of_keys(endpoints, num_shards), endpoints):
        yield shard, (partition, uids)


def _requested(requests) -> tuple[int, list[tuple[int, np.ndarray]]]:
    """The number of distinct documents requested, and the distinct uids each partition requested.

    A partition sends one request per candidate element, i.e. per band, and a
    document that is a candidate in several bands is named in each; its payload
    goes to the partition once (sent once per band, the shingle sets of
    linux-doc cost ~60 MB of peak memory per band).
    """
    by_partition: dict[int, list[np.ndarray]] = {}
    for partition, uids in requests:
        by_partition.setdefault(partition, []).append(uids)
    merged = [(partition, np.unique(np.concatenate(parts))) for partition, parts in sorted(by_partition.items())]
    return np.unique(np.concatenate([uids for _, uids in merged])).size, merged


class _ShingleSetPayloadDoFn(beam.DoFn):
    """Shingle-hash sets of the requested documents of one shard, sent to each requesting partition."""

    def process(self, element):
        started = time.perf_counter()
        shard, grouped = element
        if not grouped["requests"] or not grouped["shingle_sets"]:
            return
        pieces = sorted(grouped["shingle_sets"], key=lambda piece: int(piece[0][0]))
        uids = np.concatenate([piece[0] for piece in pieces])
        values, offsets = lsh.csr_concat([(piece[1], piece[2]) for piece in pieces])
        count, requests = _requested(grouped["requests"])
        for partition, requested in requests:
            requested_values, requested_offsets = lsh.csr_take(values, offsets, rows_of(uids, requested))
            for first, part_values, part_offsets in lsh.csr_pieces(requested_values, requested_offsets):
                yield partition, (requested[first : first + part_offsets.shape[0] - 1], part_values, part_offsets)
        _counter("dedup_payload_documents", count)
        _counter("time_dedup_payload_ms", int((time.perf_counter() - started) * 1000))


class _SignaturePayloadDoFn(beam.DoFn):
    """Signatures of the requested documents of one shard, from its features."""

    def process(self, element):
        shard, grouped = element
        if not grouped["requests"] or not grouped["features"]:
            return
        (features,) = grouped["features"]
        _, requests = _requested(grouped["requests"])
        for partition, uids in requests:
            yield partition, (uids, features["signature"][rows_of(features["uid"], uids)])


class _VerifyDoFn(beam.DoFn):
    """Checks one partition's candidate edges against the endpoints' payload."""

    def __init__(self, plan: DedupPlan):
        self._plan = plan

    def process(self, element):
        started = time.perf_counter()
        _, grouped = element
        if not grouped["edges"]:
            return
        centre = np.concatenate([e[0] for e in grouped["edges"]])
        member = np.concatenate([e[1] for e in grouped["edges"]])
        left, right = lsh.unique_edges(centre, member)
        payloads = list(grouped["payload"])
        uids = np.concatenate([p[0] for p in payloads])
        order = np.argsort(uids, kind="stable")
        # The same document may arrive from two requests of this partition's
        # bucket elements; its payload is identical, keep one.
        first = np.concatenate([[True], uids[order][1:] != uids[order][:-1]])
        rows = order[first]
        if self._plan.config.verify == "signature":
            payload = (np.concatenate([p[1] for p in payloads])[rows],)
        else:
            values, offsets = lsh.csr_concat([(p[1], p[2]) for p in payloads])
            payload = lsh.csr_take(values, offsets, rows)
        _, passed = lsh.verify_edges(self._plan.config.verify, self._plan.config.threshold,
                                     left, right, uids[rows], payload)
        _counter("dedup_candidates_passed", int(passed.sum()))
        _counter("dedup_candidates_rejected", int((~passed).sum()))
        _counter("time_dedup_verify_ms", int((time.perf_counter() - started) * 1000))
        yield beam.pvalue.TaggedOutput("stats", {"type": "candidates", "unique_pairs": int(left.size),
                                                 "passed": int(passed.sum())})
        if passed.any():
            yield left[passed], right[passed]


class _AttachFeaturesDoFn(beam.DoFn):
    """Joins one shard's node labels with its documents' features; keys members by cluster partition."""

    def __init__(self, plan: DedupPlan):
        self._plan = plan

    def process(self, element):
        _, grouped = element
        if not grouped["labels"] or not grouped["features"]:
            return
        (features,) = grouped["features"]
        nodes = np.concatenate([n for n, _ in grouped["labels"]])
        labels = np.concatenate([lab for _, lab in grouped["labels"]])
        members = members_of(features, *components.min_label_per_node(nodes, labels))
        partition = components.node_partition(members["cluster"], self._plan.num_partitions)
        for p, (member_rows,) in split_by(partition, np.arange(partition.size)):
            yield p, {name: (None if value is None else value[member_rows]) for name, value in members.items()}


class _ResolveClustersDoFn(beam.DoFn):
    def __init__(self, plan: DedupPlan):
        self._plan = plan

    def process(self, element):
        _, parts = element
        parts = list(parts)
        members = {name: (None if parts[0][name] is None else np.concatenate([p[name] for p in parts]))
                   for name in parts[0]}
        duplicates, drops, summaries, totals = resolve_clusters(members, self._plan)
        if duplicates.num_rows:
            yield beam.pvalue.TaggedOutput("duplicates", duplicates)
        for shard, drop in drops.items():
            yield shard, drop
        yield beam.pvalue.TaggedOutput("stats", totals)
        for summary in largest(summaries, self._plan.config.report_top_clusters):
            yield beam.pvalue.TaggedOutput("clusters", summary)


class _TopClustersFn(beam.CombineFn):
    def __init__(self, n: int):
        self._n = n

    def create_accumulator(self):
        return []

    def add_input(self, accumulator, summary):
        return largest(accumulator + [summary], self._n)

    def merge_accumulators(self, accumulators):
        return largest([s for acc in accumulators for s in acc], self._n)

    def extract_output(self, accumulator):
        return accumulator


def _docs_as_pieces(element: tuple[int, pa.Table]):
    shard, table = element
    for piece in arrow_ipc.table_pieces(table):
        yield shard, piece


class _DropDuplicatesDoFn(beam.DoFn):
    """Filters one shard's documents; emits excerpts of the largest clusters' representatives."""

    def process(self, element, top_clusters):
        shard, grouped = element
        if not grouped["docs"]:
            if grouped["drops"]:
                _counter("dedup_drops_without_documents", sum(len(d[0]) for d in grouped["drops"]))
            return
        table = arrow_ipc.table_from_pieces(grouped["docs"])
        kept = table
        if grouped["drops"]:
            drop_ids = np.concatenate([d[0] for d in grouped["drops"]])
            drop_kinds = np.concatenate([d[1] for d in grouped["drops"]])
            mask = pc.is_in(table.column("id"), value_set=pa.array(drop_ids.tolist(), pa.string()))
            kept = table.filter(pc.invert(mask))
            for kind in DuplicateKind.ALL:
                _counter(f"dedup_{kind}_duplicate", int(np.sum(drop_kinds == kind)))
            missing = len(drop_ids) - (table.num_rows - kept.num_rows)
            _counter("dedup_drops_without_documents", missing)
        _counter("dedup_kept", kept.num_rows)
        wanted = {s["representative_id"]: s["cluster_id"] for s in top_clusters
                  if s["representative_shard"] == shard}
        if wanted:
            reps = kept.filter(pc.is_in(kept.column("id"), value_set=pa.array(list(wanted), pa.string())))
            for doc_id, text in zip(reps.column("id").to_pylist(), reps.column("text").to_pylist()):
                yield beam.pvalue.TaggedOutput("stats", {"type": "excerpt", "cluster_id": wanted[doc_id],
                                                         "excerpt": excerpt_text(text)})
        yield beam.pvalue.TaggedOutput("stats", {"type": "documents", "input": table.num_rows,
                                                 "kept": kept.num_rows})
        yield shard, kept


class _MergeStatsFn(beam.CombineFn):
    """Folds the stage's stats fragments into one accumulator (``dedup.stats``)."""

    def create_accumulator(self):
        return stats.new_accumulator()

    def add_input(self, acc, fragment):
        return stats.add_fragment(acc, fragment)

    def merge_accumulators(self, accumulators):
        merged = stats.new_accumulator()
        for acc in accumulators:
            for fragment in stats.as_fragments(acc):
                stats.add_fragment(merged, fragment)
        return merged

    def extract_output(self, acc):
        return acc


def _build_stats(acc: dict, top_clusters: list[dict], plan: DedupPlan) -> dict:
    section = stats.build_stats(acc, top_clusters, plan)
    if not section["components"]["converged"]:
        _counter("dedup_components_not_converged")
    return section


class Deduplicate(beam.PTransform):
    """Removes exact and near duplicates, keeping one document per cluster: the ``dedup`` stage.

    Input: ``(shard: int, pyarrow.Table)`` with the columns of
    ``DOCUMENT_BATCH_SCHEMA``, one element per shard, ids unique, every row's
    id hashing to its shard (``common.shard_of``).

    Output: a ``StageResult``:
      - ``docs``: ``(shard, pyarrow.Table)``, the kept rows of every input
        shard (same key, same columns and row order; possibly empty);
      - ``duplicates``: ``pyarrow.RecordBatch`` of ``DUPLICATE_SCHEMA``, one row
        per removed document;
      - ``shards``: None (the job writes the duplicates);
      - ``stats``: exactly one dict, the manifest's dedup section (``stats.build_stats``).

    Args:
        config: The dedup section of the job.
        context: The job's shard count (also the partition count of the
            shuffles inside the stage) and whether the input is one partition:
            ``components = auto`` then resolves to the single-worker union-find
            when the pipeline is built, and the distributed rounds are left out
            of the graph. The stats record the mode and the reason.
        max_rounds: Large-star / small-star rounds unrolled for distributed
            connected components.
    """

    name = "dedup"

    def __init__(self, config: DedupConfig, context: StageContext, max_rounds: int = DEFAULT_MAX_ROUNDS):
        super().__init__()
        self._config = config
        self._context = context
        self._plan = DedupPlan.from_config(config, context.num_shards, max_rounds, context.previous_index)
        self._single_partition = context.single_partition

    @staticmethod
    def check(config: DedupConfig) -> None:
        """Nothing beyond the config's own checks: dedup needs no file or model."""

    @staticmethod
    def output_specs(config: DedupConfig, context: StageContext) -> list[OutputSpec]:
        """``index/``, what a later refresh joins against; removed documents go to the job's ``duplicates/``."""
        return [index_lib.INDEX] if config.exact or config.near else []

    def expand(self, shards):
        plan, config = self._plan, self._config
        if not (config.exact or config.near):
            stats_only = shards.pipeline | "DedupDisabled" >> beam.Create([{"enabled": False}])
            return StageResult(shards, None, None, stats_only)
        source = shards
        if plan.refresh:
            # The previous snapshot's index joins the new documents shard by shard (its rows
            # regrouped by this run's shard count): no worker reads it whole.
            published = (
                shards.pipeline
                | "PreviousIndexFiles" >> beam.Create(sorted(plan.previous_index))
                | "ReadPreviousIndex" >> beam.FlatMap(_read_index_file, plan.num_shards)
            )
            source = {"docs": shards, "published": published} | "JoinPreviousIndex" >> beam.CoGroupByKey()
        features = source | "ComputeDedupFeatures" >> beam.ParDo(_ComputeFeaturesDoFn(plan)).with_outputs(
            "buckets", "shingle_sets", "stats", "early", "early_drops", main="features")
        stars = (
            features.buckets
            | "GroupBuckets" >> beam.GroupByKey()
            | "BucketStars" >> beam.ParDo(_BucketStarsDoFn(plan)).with_outputs("exact", "near", "candidates")
        )
        edge_sets, fragments = [stars.exact, stars.near], [features.stats]
        if config.near and config.verify != "none":
            verified = self._verify(stars.candidates, features)
            edge_sets.append(verified.edges)
            fragments.append(verified.stats)
        clusters = tuple(edge_sets) | "AllDuplicateEdges" >> beam.Flatten() | "ConnectedComponents" >> (
            ConnectedComponents(config.components, config.single_worker_max_edges, plan.num_partitions,
                                plan.num_shards, plan.max_rounds, single_partition=self._single_partition))
        resolved = (
            {"labels": clusters["labels"], "features": features.features}
            | "JoinLabelsWithFeatures" >> beam.CoGroupByKey()
            | "AttachFeatures" >> beam.ParDo(_AttachFeaturesDoFn(plan))
            | "GroupClusters" >> beam.GroupByKey()
            | "ResolveClusters" >> beam.ParDo(_ResolveClustersDoFn(plan)).with_outputs(
                "duplicates", "stats", "clusters", main="drops")
        )
        top_clusters = resolved.clusters | "TopClusters" >> beam.CombineGlobally(
            _TopClustersFn(config.report_top_clusters))
        drops, duplicates = resolved.drops, resolved.duplicates
        if plan.refresh:
            drops = (drops, features.early_drops) | "AllDrops" >> beam.Flatten()
            duplicates = (duplicates, features.early) | "AllDedupDuplicates" >> beam.Flatten()
        kept = (
            {"docs": shards | "DocsAsArrowIpcPieces" >> beam.FlatMap(_docs_as_pieces), "drops": drops}
            | "JoinDropsWithDocs" >> beam.CoGroupByKey()
            | "DropDuplicates" >> beam.ParDo(
                _DropDuplicatesDoFn(), beam.pvalue.AsSingleton(top_clusters)).with_outputs("stats", main="docs")
        )
        fragments += [clusters["stats"], resolved.stats, kept.stats]
        summary = (
            tuple(fragments)
            | "AllDedupStats" >> beam.Flatten()
            | "MergeDedupStats" >> beam.CombineGlobally(_MergeStatsFn())
            | "BuildDedupStats" >> beam.Map(_build_stats, beam.pvalue.AsSingleton(top_clusters), plan)
        )
        index_shards = (
            {"features": features.features, "shingle_sets": features.shingle_sets, "drops": drops}
            | "JoinIndexParts" >> beam.CoGroupByKey()
            | "IndexRows" >> beam.ParDo(_IndexDoFn())
            | "WriteIndex" >> WriteShards(index_lib.INDEX, self._context.staging_dir, plan.num_shards,
                                          self._context.parquet)
        )
        return StageResult(kept.docs, duplicates, index_shards, summary)

    def _verify(self, candidates, features):
        """Candidate edges -> verified edges, with the endpoints' payload joined in by shard."""
        requests = candidates | "PayloadRequests" >> beam.FlatMap(_payload_requests, self._plan.num_shards)
        if self._config.verify == "exact":
            payload = (
                {"shingle_sets": features.shingle_sets, "requests": requests}
                | "JoinRequestsWithShingleSets" >> beam.CoGroupByKey()
                | "ShingleSetPayload" >> beam.ParDo(_ShingleSetPayloadDoFn())
            )
        else:
            payload = (
                {"features": features.features, "requests": requests}
                | "JoinRequestsWithFeatures" >> beam.CoGroupByKey()
                | "SignaturePayload" >> beam.ParDo(_SignaturePayloadDoFn())
            )
        return (
            {"edges": candidates, "payload": payload}
            | "JoinCandidatesWithPayload" >> beam.CoGroupByKey()
            | "VerifyCandidates" >> beam.ParDo(_VerifyDoFn(self._plan)).with_outputs("stats", main="edges")
        )
