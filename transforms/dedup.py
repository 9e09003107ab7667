"""Deduplicate: exact and MinHash-LSH near duplicates, clustered, one survivor per cluster.

Data flow (every arrow is one step; ``P`` partitions = ``num_shards``)::

    (shard, table) -> ComputeDedupFeatures -> features per shard (ids, exact hash,
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
    (shard, Arrow IPC bytes) + drops (by shard) -> DropDuplicates -> kept (shard, table)

Documents are named inside the stage by a uid, ``shard << 32 | row``, where
``row`` is the document's position in its shard sorted by id, so every step
that looks at a shard sees the same numbering however Beam re-reads it.
Only small per-document features travel. Each text is normalised and
shingled once, in the features step; exact verification gets the endpoints'
shingle-hash sets (uint32 values + offsets) from there. The text itself
crosses one shuffle, the final filter, as Arrow IPC bytes: a table inside a
CoGroupByKey value loses its type hint and would be pickled.
"""

from __future__ import annotations

import heapq
import itertools
import time
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from corpusmill.schemas.config import DedupConfig
from corpusmill.schemas.documents import DUPLICATE_SCHEMA, DuplicateKind
from corpusmill.transforms import components, keep_policy, lsh, minhash
from corpusmill.transforms.coders import ArrowTableCoder
from corpusmill.transforms.dedup_components import ConnectedComponents, SHARD_SHIFT, shard_of_uid, split_by
from corpusmill.transforms.normalize import exact_hashes, normalize_array
from corpusmill.transforms.read import METRICS_NAMESPACE

DEFAULT_MAX_ROUNDS = 12
EXACT_BAND = -1
EXCERPT_CHARS = 200
MEMBER_IDS_LISTED = 10
_ROW_MASK = np.int64((1 << SHARD_SHIFT) - 1)
# Large values cross shuffles in pieces of about this size: the FnApiRunner's
# data plane copies an element several times on its way through a
# GroupByKey, and a 60 MB table moved as one element cost about twice as much
# as the same table in ~1 MB pieces (benchmarks in the change notes).
PIECE_BYTES = 1 << 20


def _counter(name: str, value: int = 1) -> None:
    if value:
        Metrics.counter(METRICS_NAMESPACE, name).inc(int(value))


@dataclass(frozen=True)
class DedupPlan:
    """What the stage derives from its config before the pipeline is built."""

    config: DedupConfig
    params: minhash.MinHashParams
    bands: int
    rows: int
    num_partitions: int
    num_ranges: int
    max_rounds: int

    @classmethod
    def from_config(cls, config: DedupConfig, num_shards: int, max_rounds: int) -> "DedupPlan":
        """Resolves LSH bands/rows (datasketch's optimum when 0) and partition counts."""
        params = minhash.MinHashParams(config.num_perm, config.ngram, config.seed, config.scheme)
        if config.bands:
            bands, rows = config.bands, config.rows
        else:
            # A threshold of 1.0 is allowed by the config but not by the optimiser.
            bands, rows = minhash.lsh_params(min(config.threshold, 0.99), config.num_perm)
        partitions = max(1, num_shards)
        ranges = 1 << (partitions - 1).bit_length()
        return cls(config, params, bands, rows, partitions, ranges, max_rounds)

    @property
    def verify(self) -> str:
        """Verification that actually runs (near duplicates only)."""
        return self.config.verify if self.config.near else "not_run"


def _sorted_by_id(table: pa.Table) -> np.ndarray:
    """Row order of a shard by id; ids are unique, so this numbering is deterministic."""
    return pc.sort_indices(table.column("id")).to_numpy()


def _shard_uids(shard: int, n: int) -> np.ndarray:
    return (np.int64(shard) << np.int64(SHARD_SHIFT)) + np.arange(n, dtype=np.int64)


_TABLE_CODER = ArrowTableCoder()


def _docs_as_ipc(element: tuple[int, pa.Table]):
    """(shard, table) -> (shard, (chunk, part, Arrow IPC bytes)) pieces of about PIECE_BYTES.

    Pieces are slices of the table's chunks, numbered so that ``_tables_from_ipc``
    rebuilds exactly the chunks it was given, in their order: the Parquet
    writer's output depends on chunk boundaries, and the kept documents must
    not change bytes with the piece size or the order pieces arrive in.
    """
    shard, table = element
    batches = table.to_batches()
    if not batches:
        yield shard, (0, 0, _TABLE_CODER.encode(table))
        return
    for chunk, batch in enumerate(batches):
        rows = max(1, -(-batch.num_rows * PIECE_BYTES // max(1, batch.nbytes)))
        for part, start in enumerate(range(0, max(1, batch.num_rows), rows)):
            piece = pa.Table.from_batches([batch.slice(start, rows)], schema=table.schema)
            yield shard, (chunk, part, _TABLE_CODER.encode(piece))


def _tables_from_ipc(pieces) -> pa.Table:
    """Inverse of ``_docs_as_ipc``: the table with its original chunks."""
    chunks = []
    for _, parts in itertools.groupby(sorted(pieces, key=lambda p: p[:2]), key=lambda p: p[0]):
        tables = [_TABLE_CODER.decode(encoded) for _, _, encoded in parts]
        chunks.append(tables[0] if len(tables) == 1 else pa.concat_tables(tables).combine_chunks())
    return chunks[0] if len(chunks) == 1 else pa.concat_tables(chunks)


def _csr_pieces(values: np.ndarray, offsets: np.ndarray):
    """Yields ``(first_set, values, offsets)`` runs of whole sets of about PIECE_BYTES each."""
    sets = offsets.shape[0] - 1
    count = max(1, min(sets, -(-values.nbytes // PIECE_BYTES)))
    targets = np.linspace(0, offsets[-1], count + 1)
    bounds = np.unique(np.concatenate([[0], np.searchsorted(offsets, targets[1:-1]), [sets]]))
    for first, last in zip(bounds[:-1], bounds[1:]):
        yield int(first), values[offsets[first] : offsets[last]], offsets[first : last + 1] - offsets[first]


def _csr_from_pieces(pieces) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``_csr_pieces``: the sets in order of their first set."""
    pieces = sorted(pieces, key=lambda piece: piece[0])
    return lsh.csr_concat([(values, offsets) for _, values, offsets in pieces])


def compute_features(shard: int, table: pa.Table, plan: DedupPlan) -> dict:
    """Per-document dedup features of one shard, in id order (Beam-free).

    Returns:
        A dict of aligned arrays: ``uid``, ``id`` (object), ``hash`` (n x 2
        uint64), ``signature`` (n x num_perm uint32, or None when near dedup is
        off), ``band_keys`` (n x bands uint64, or None), ``has_shingles``,
        ``length``, ``timestamp`` (µs, ``NO_TIMESTAMP`` when null), ``rank``,
        ``shingle_sets`` (``(values, offsets)`` CSR of uint32 shingle hashes
        when near dedup verifies exactly, else None).
    """
    order = _sorted_by_id(table)
    ordered = table.take(pa.array(order, type=pa.int64()))
    normalized = normalize_array(ordered.column("text"), plan.config.normalize)
    features = {
        "uid": _shard_uids(shard, ordered.num_rows),
        "id": np.asarray(ordered.column("id").to_pylist(), dtype=object),
        "hash": exact_hashes(normalized),
        "length": pc.utf8_length(ordered.column("text")).to_numpy().astype(np.int64),
        "timestamp": ordered.column("timestamp").cast(pa.int64()).fill_null(keep_policy.NO_TIMESTAMP)
        .to_numpy().astype(np.int64),
        "rank": (keep_policy.source_ranks(ordered.column("source").to_pylist(), plan.config.source_priority)
                 if plan.config.keep == "source_priority" else np.zeros(ordered.num_rows, dtype=np.int32)),
        "signature": None,
        "band_keys": None,
        "has_shingles": None,
        "shingle_sets": None,
    }
    if plan.config.near:
        if plan.config.verify == "exact":
            # Shingled once: the sets exact verification compares come out of
            # the same pass as the signatures.
            sigs, features["shingle_sets"] = minhash.signatures_and_shingle_sets(normalized, plan.params)
        else:
            sigs = minhash.signatures(normalized, plan.params)
        features["signature"] = sigs.astype(np.uint32)
        features["band_keys"] = minhash.band_hashes(sigs, plan.bands, plan.rows)
        # A text without words has the empty signature; every such text would
        # share every band, but Jaccard is undefined for them (exact dedup
        # still groups identical ones).
        features["has_shingles"] = ~np.all(sigs == minhash.EMPTY_HASH_VALUE, axis=1)
    return features


def bucket_arrays(features: dict, plan: DedupPlan):
    """Yields ``((band, range), arrays)`` bucket arrays of one shard (Beam-free).

    ``arrays`` is ``(keys, uids)``. Band ``EXACT_BAND`` carries the two-column
    exact hash as keys. When exact dedup runs, near-duplicate bands also carry
    each row's exact hash, ``(keys, uids, hashes)``, so that ``bucket_edges``
    can stand one uid in for all copies of a text (``lsh.collapse_copies``).
    """
    uids = features["uid"]
    if plan.config.exact:
        keys = features["hash"]
        for key_range, (part_keys, part_uids) in split_by(lsh.key_ranges(keys, plan.num_ranges), keys, uids):
            yield (EXACT_BAND, key_range), (part_keys, part_uids)
    if plan.config.near:
        usable = features["has_shingles"]
        band_keys, band_uids = features["band_keys"][usable], uids[usable]
        carried = (features["hash"][usable],) if plan.config.exact else ()
        for band in range(plan.bands):
            keys = band_keys[:, band]
            for key_range, parts in split_by(lsh.key_ranges(keys, plan.num_ranges), keys, band_uids, *carried):
                yield (band, key_range), parts


def bucket_edges(parts) -> tuple[np.ndarray, np.ndarray]:
    """Star edges ``(centre, member)`` of one (band, range)'s bucket arrays from all shards (Beam-free)."""
    parts = list(parts)
    keys = np.concatenate([p[0] for p in parts])
    uids = np.concatenate([p[1] for p in parts])
    if len(parts[0]) > 2:
        keys, uids = lsh.collapse_copies(keys, uids, np.concatenate([p[2] for p in parts]))
    return lsh.bucket_stars(keys, uids)


class _ComputeFeaturesDoFn(beam.DoFn):
    def __init__(self, plan: DedupPlan):
        self._plan = plan

    def process(self, element):
        started = time.perf_counter()
        shard, table = element
        features = compute_features(shard, table, self._plan)
        _counter("dedup_input_documents", table.num_rows)
        for key, arrays in bucket_arrays(features, self._plan):
            yield beam.pvalue.TaggedOutput("buckets", (key, arrays))
        # Band keys are only needed for the buckets, shingle sets only by
        # verification; the rest of the features live on to the resolve step.
        features.pop("band_keys")
        shingle_sets = features.pop("shingle_sets")
        if shingle_sets is not None:
            for piece in _csr_pieces(*shingle_sets):
                yield beam.pvalue.TaggedOutput("shingle_sets", (shard, piece))
        yield shard, features
        _counter("time_dedup_features_ms", int((time.perf_counter() - started) * 1000))


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


def _payload_requests(element):
    """(partition, edges) -> (shard, (partition, endpoint uids)) for each shard involved."""
    partition, (centre, member) = element
    endpoints = np.unique(np.concatenate([centre, member]))
    for shard, (uids,) in split_by(shard_of_uid(endpoints), endpoints):
        yield shard, (partition, uids)


def _requested_rows(requests) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    requests = list(requests)
    rows = np.unique(np.concatenate([uids for _, uids in requests]) & _ROW_MASK)
    return rows, requests


class _ShingleSetPayloadDoFn(beam.DoFn):
    """Shingle-hash sets of the requested documents of one shard, sent to each requesting partition."""

    def process(self, element):
        started = time.perf_counter()
        shard, grouped = element
        if not grouped["requests"] or not grouped["shingle_sets"]:
            return
        values, offsets = _csr_from_pieces(grouped["shingle_sets"])
        rows, requests = _requested_rows(grouped["requests"])
        for partition, uids in requests:
            requested_values, requested_offsets = lsh.csr_take(values, offsets, uids & _ROW_MASK)
            for first, part_values, part_offsets in _csr_pieces(requested_values, requested_offsets):
                yield partition, (uids[first : first + part_offsets.shape[0] - 1], part_values, part_offsets)
        _counter("dedup_payload_documents", rows.size)
        _counter("time_dedup_payload_ms", int((time.perf_counter() - started) * 1000))


class _SignaturePayloadDoFn(beam.DoFn):
    """Signatures of the requested documents of one shard, from its features."""

    def process(self, element):
        shard, grouped = element
        if not grouped["requests"] or not grouped["features"]:
            return
        (features,) = grouped["features"]
        _, requests = _requested_rows(grouped["requests"])
        for partition, uids in requests:
            yield partition, (uids, features["signature"][uids & _ROW_MASK])


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
        _counter("dedup_candidates_verified", int(passed.sum()))
        _counter("dedup_candidates_rejected", int((~passed).sum()))
        _counter("time_dedup_verify_ms", int((time.perf_counter() - started) * 1000))
        yield beam.pvalue.TaggedOutput("stats", {"type": "candidates", "unique_pairs": int(left.size),
                                                 "verified": int(passed.sum())})
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
        nodes, labels = components.min_label_per_node(nodes, labels)
        rows = nodes & _ROW_MASK
        members = {name: (None if features[name] is None else features[name][rows])
                   for name in ("uid", "id", "hash", "signature", "length", "timestamp", "rank")}
        members["cluster"] = labels
        partition = components.node_partition(labels, self._plan.num_partitions)
        for p, (member_rows,) in split_by(partition, np.arange(rows.size)):
            yield p, {name: (None if value is None else value[member_rows]) for name, value in members.items()}


def resolve_clusters(members: dict, plan: DedupPlan) -> tuple[pa.RecordBatch, dict, list[dict], dict]:
    """Chooses representatives and describes every removed document (Beam-free).

    Args:
        members: Aligned arrays of all members of some clusters (as from
            ``_AttachFeaturesDoFn``), including a ``cluster`` label column.
        plan: The stage plan.

    Returns:
        ``(duplicates, drops, summaries, totals)``: a ``DUPLICATE_SCHEMA`` batch;
        ``{shard: (ids, kinds)}`` of removed documents; one summary dict per
        cluster (size, ids, kinds) for the largest-clusters list; and totals
        (clusters, per kind, size histogram).
    """
    config = plan.config
    cluster = members["cluster"]
    ids = members["id"]
    rep = keep_policy.choose_representatives(cluster, ids, config.keep, lengths=members["length"],
                                             timestamps=members["timestamp"], ranks=members["rank"])
    # cluster_id: the smallest id of the cluster, independent of the keep policy.
    cluster_id_of = keep_policy.choose_representatives(cluster, ids, "smallest_id")
    dropped = np.flatnonzero(rep != np.arange(rep.size))
    exact = np.all(members["hash"][dropped] == members["hash"][rep[dropped]], axis=1)
    similarity = np.ones(dropped.size, dtype=np.float64)
    if members["signature"] is not None and (~exact).any():
        near = dropped[~exact]
        similarity[~exact] = lsh.estimated_jaccard(members["signature"][near], members["signature"][rep[near]])
    kinds = np.where(exact, DuplicateKind.EXACT, DuplicateKind.NEAR).astype(object)
    duplicates = pa.RecordBatch.from_arrays(
        [pa.array(ids[dropped].tolist(), pa.string()), pa.array(kinds.tolist(), pa.string()),
         pa.array(ids[cluster_id_of[dropped]].tolist(), pa.string()),
         pa.array(ids[rep[dropped]].tolist(), pa.string()), pa.array(similarity, pa.float64())],
        schema=DUPLICATE_SCHEMA)
    drops = {shard: (part_ids, part_kinds) for shard, (part_ids, part_kinds)
             in split_by(shard_of_uid(members["uid"][dropped]), ids[dropped], kinds)}
    # Per cluster: size and members, for the size histogram and the largest-clusters list.
    reps, sizes = np.unique(rep, return_counts=True)
    kind_of = np.full(rep.size, "representative", dtype=object)
    kind_of[dropped] = kinds
    summaries = []
    order = np.lexsort([rep])
    bounds = np.flatnonzero(np.diff(rep[order])) + 1
    for rows in np.split(order, bounds):
        if rows.size == 0:
            continue
        r = rep[rows[0]]
        member_ids = sorted(ids[rows].tolist())
        summaries.append({
            "cluster_id": ids[cluster_id_of[r]],
            "size": int(rows.size),
            "representative_id": ids[r],
            "representative_shard": int(shard_of_uid(members["uid"][r : r + 1])[0]),
            "member_ids": member_ids[:MEMBER_IDS_LISTED],
            "by_kind": {k: int(np.sum(kind_of[rows] == k)) for k in DuplicateKind.ALL},
        })
    size_values, size_counts = np.unique(sizes, return_counts=True)
    totals = {
        "type": "clusters",
        "clusters": int(reps.size),
        "by_kind": {k: int(np.sum(kinds == k)) for k in DuplicateKind.ALL},
        "sizes": {int(s): int(c) for s, c in zip(size_values, size_counts)},
    }
    return duplicates, drops, summaries, totals


def _largest(summaries, n: int) -> list[dict]:
    """The n largest clusters, ties broken by the smaller cluster id."""
    return heapq.nsmallest(n, summaries, key=lambda s: (-s["size"], s["cluster_id"]))


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
        for summary in _largest(summaries, self._plan.config.report_top_clusters):
            yield beam.pvalue.TaggedOutput("clusters", summary)


class _TopClustersFn(beam.CombineFn):
    def __init__(self, n: int):
        self._n = n

    def create_accumulator(self):
        return []

    def add_input(self, accumulator, summary):
        return _largest(accumulator + [summary], self._n)

    def merge_accumulators(self, accumulators):
        return _largest([s for acc in accumulators for s in acc], self._n)

    def extract_output(self, accumulator):
        return accumulator


def excerpt_text(text: str) -> str:
    """At most EXCERPT_CHARS characters of a text, whitespace collapsed for one-line display."""
    return " ".join(text[: EXCERPT_CHARS * 4].split())[:EXCERPT_CHARS]


class _DropDuplicatesDoFn(beam.DoFn):
    """Filters one shard's documents; emits excerpts of the largest clusters' representatives."""

    def process(self, element, top_clusters):
        shard, grouped = element
        if not grouped["docs"]:
            if grouped["drops"]:
                _counter("dedup_drops_without_documents", sum(len(d[0]) for d in grouped["drops"]))
            return
        table = _tables_from_ipc(grouped["docs"])
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
        yield beam.pvalue.TaggedOutput("counts", {"type": "documents", "input": table.num_rows,
                                                  "kept": kept.num_rows})
        yield shard, kept


class _MergeStatsFn(beam.CombineFn):
    """Folds the stage's stats fragments into one accumulator (small: counts and histograms)."""

    def create_accumulator(self):
        return {"input": 0, "kept": 0, "clusters": 0, "by_kind": {}, "sizes": {}, "unique_pairs": 0,
                "verified": 0, "rounds": {}, "components": None, "excerpts": {}}

    def add_input(self, acc, fragment):
        kind = fragment["type"]
        if kind == "documents":
            acc["input"] += fragment["input"]
            acc["kept"] += fragment["kept"]
        elif kind == "clusters":
            acc["clusters"] += fragment["clusters"]
            for name, value in fragment["by_kind"].items():
                acc["by_kind"][name] = acc["by_kind"].get(name, 0) + value
            for size, value in fragment["sizes"].items():
                acc["sizes"][size] = acc["sizes"].get(size, 0) + value
        elif kind == "candidates":
            acc["unique_pairs"] += fragment["unique_pairs"]
            acc["verified"] += fragment["verified"]
        elif kind == "round":
            count, total = acc["rounds"].get(fragment["round"], (0, 0))
            acc["rounds"][fragment["round"]] = (count + fragment["count"], (total + fragment["sum"]) % (1 << 64))
        elif kind == "components":
            acc["components"] = fragment
        elif kind == "excerpt":
            acc["excerpts"][fragment["cluster_id"]] = fragment["excerpt"]
        return acc

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for acc in accumulators:
            for fragment in _as_fragments(acc):
                self.add_input(merged, fragment)
        return merged

    def extract_output(self, acc):
        return acc


def _as_fragments(acc: dict):
    yield {"type": "documents", "input": acc["input"], "kept": acc["kept"]}
    yield {"type": "clusters", "clusters": acc["clusters"], "by_kind": acc["by_kind"], "sizes": acc["sizes"]}
    yield {"type": "candidates", "unique_pairs": acc["unique_pairs"], "verified": acc["verified"]}
    for round_index, (count, total) in acc["rounds"].items():
        yield {"type": "round", "round": round_index, "count": count, "sum": total}
    if acc["components"] is not None:
        yield acc["components"]
    for cluster_id, text in acc["excerpts"].items():
        yield {"type": "excerpt", "cluster_id": cluster_id, "excerpt": text}


def build_stats(acc: dict, top_clusters: list[dict], plan: DedupPlan) -> dict:
    """The stage's manifest section from the merged fragments."""
    config = plan.config
    by_kind = {k: acc["by_kind"].get(k, 0) for k in DuplicateKind.ALL}
    components_record = acc["components"] or {"mode": None, "edges": 0, "requested": config.components,
                                              "max_rounds": plan.max_rounds, "reason": None}
    rounds = None
    if components_record["mode"] == "distributed":
        checksums = [acc["rounds"].get(r, (0, 0)) for r in range(plan.max_rounds + 1)]
        rounds = components.rounds_to_converge(checksums)
        if rounds is None:
            _counter("dedup_components_not_converged")
    top = []
    for summary in top_clusters:
        entry = {k: v for k, v in summary.items() if k != "representative_shard"}
        entry["excerpt"] = acc["excerpts"].get(summary["cluster_id"], "")
        top.append(entry)
    return {
        "enabled": True,
        "documents": {"input": acc["input"], "kept": acc["kept"], "duplicates": sum(by_kind.values())},
        "duplicates_by_kind": by_kind,
        "clusters": {
            "count": acc["clusters"],
            "size_histogram": {str(s): acc["sizes"][s] for s in sorted(acc["sizes"])},
        },
        "top_clusters": top,
        "candidates": {"unique_pairs_checked": acc["unique_pairs"], "verified": acc["verified"],
                       "rejected": acc["unique_pairs"] - acc["verified"]},
        "verification": plan.verify,
        "keep": config.keep,
        "lsh": ({"bands": plan.bands, "rows": plan.rows, "threshold": config.threshold,
                 "num_perm": config.num_perm, "ngram": config.ngram, "seed": config.seed,
                 "scheme": config.scheme} if config.near else None),
        "components": {
            "mode": components_record["mode"],
            "requested": config.components,
            "reason": components_record["reason"],
            "edges": components_record["edges"],
            "single_worker_max_edges": config.single_worker_max_edges,
            "max_rounds": plan.max_rounds,
            "rounds_to_converge": rounds,
            "converged": components_record["mode"] != "distributed" or rounds is not None,
        },
    }


class Deduplicate(beam.PTransform):
    """Removes exact and near duplicates, keeping one document per cluster.

    Input: ``(shard: int, pyarrow.Table)`` with the columns of
    ``DOCUMENT_BATCH_SCHEMA``, one element per shard, ids unique, every row's
    id hashing to its shard (``shards.shard_of``).

    Output: a dict of PCollections:
      - ``docs``: ``(shard, pyarrow.Table)``, the kept rows of every input
        shard (same key, same columns; possibly empty), ready for ``WriteShards``;
      - ``duplicates``: ``pyarrow.RecordBatch`` of ``DUPLICATE_SCHEMA``, one row
        per removed document;
      - ``stats``: exactly one dict, the manifest's dedup section (see ``build_stats``).

    Args:
        config: The dedup section of the job.
        num_shards: Shards of the input; also the partition count of the
            shuffles inside the stage.
        max_rounds: Large-star / small-star rounds unrolled for distributed
            connected components.
        single_partition: The input is known to fit one partition (the job
            planned a single shard): ``components = auto`` then resolves to
            the single-worker union-find when the pipeline is built, and the
            distributed rounds are left out of the graph. The stats record
            the mode and the reason.
    """

    def __init__(self, config: DedupConfig, num_shards: int, max_rounds: int = DEFAULT_MAX_ROUNDS,
                 single_partition: bool = False):
        super().__init__()
        self._config = config
        self._plan = DedupPlan.from_config(config, num_shards, max_rounds)
        self._single_partition = single_partition

    def expand(self, shards):
        plan, config = self._plan, self._config
        if not (config.enabled and (config.exact or config.near)):
            return {
                "docs": shards,
                "duplicates": shards.pipeline | "NoDuplicates" >> beam.Create([]),
                "stats": shards.pipeline | "DedupDisabled" >> beam.Create([{"enabled": False}]),
            }
        features = shards | "ComputeDedupFeatures" >> beam.ParDo(_ComputeFeaturesDoFn(plan)).with_outputs(
            "buckets", "shingle_sets", main="features")
        stars = (
            features.buckets
            | "GroupBuckets" >> beam.GroupByKey()
            | "BucketStars" >> beam.ParDo(_BucketStarsDoFn(plan)).with_outputs(
                "exact", "near", "candidates")
        )
        edge_sets = [stars.exact, stars.near]
        stats = []
        if config.near and config.verify != "none":
            requests = stars.candidates | "PayloadRequests" >> beam.FlatMap(_payload_requests)
            if config.verify == "exact":
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
            verified = (
                {"edges": stars.candidates, "payload": payload}
                | "JoinCandidatesWithPayload" >> beam.CoGroupByKey()
                | "VerifyCandidates" >> beam.ParDo(_VerifyDoFn(plan)).with_outputs("stats", main="edges")
            )
            edge_sets.append(verified.edges)
            stats.append(verified.stats)
        edges = tuple(edge_sets) | "AllDuplicateEdges" >> beam.Flatten()
        clusters = edges | "ConnectedComponents" >> ConnectedComponents(
            config.components, config.single_worker_max_edges, plan.num_partitions, plan.max_rounds,
            single_partition=self._single_partition)
        stats.append(clusters["stats"])
        resolved = (
            {"labels": clusters["labels"], "features": features.features}
            | "JoinLabelsWithFeatures" >> beam.CoGroupByKey()
            | "AttachFeatures" >> beam.ParDo(_AttachFeaturesDoFn(plan))
            | "GroupClusters" >> beam.GroupByKey()
            | "ResolveClusters" >> beam.ParDo(_ResolveClustersDoFn(plan)).with_outputs(
                "duplicates", "stats", "clusters", main="drops")
        )
        stats.append(resolved.stats)
        top_clusters = resolved.clusters | "TopClusters" >> beam.CombineGlobally(
            _TopClustersFn(config.report_top_clusters))
        kept = (
            {"docs": shards | "DocsAsArrowIpcPieces" >> beam.FlatMap(_docs_as_ipc), "drops": resolved.drops}
            | "JoinDropsWithDocs" >> beam.CoGroupByKey()
            | "DropDuplicates" >> beam.ParDo(
                _DropDuplicatesDoFn(), beam.pvalue.AsSingleton(top_clusters)).with_outputs(
                "stats", "counts", main="docs")
        )
        stats.extend([kept.stats, kept.counts])
        summary = (
            tuple(stats)
            | "AllDedupStats" >> beam.Flatten()
            | "MergeDedupStats" >> beam.CombineGlobally(_MergeStatsFn())
            | "BuildDedupStats" >> beam.Map(build_stats, beam.pvalue.AsSingleton(top_clusters), plan)
        )
        return {"docs": kept.docs, "duplicates": resolved.duplicates, "stats": summary}
