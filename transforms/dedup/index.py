"""The dedup index a snapshot publishes and a refresh joins against (Beam-free).

Every snapshot made with dedup on writes ``index/``: one row per kept document
with what a later run needs to deduplicate new documents against it without
reading the documents again:

* ``key``: the document's stable key (``common.document_keys``), which also
  decides its shard (``key`` modulo the shard count), so a refresh with any
  shard count regroups the index by key inside the pipeline;
* ``id``; ``exact_hash``: the 128-bit hash of the normalised text (exact dedup);
* ``signature``: the MinHash signature (near dedup; band keys are recomputed
  from it, so a refresh may choose another bands x rows);
* ``shingles``: the distinct shingle hashes that exact verification compares
  (null when the snapshot verified by signature or not at all);
* ``length`` and ``timestamp``: what the keep policy reads when two published
  documents meet in one cluster.

A refresh's index holds the previous index's rows and its newly kept
documents, so the newest snapshot's index covers the whole chain.

Inside the dedup stage a published document is a member like any other, with
``published`` set: it takes part in buckets, verification and clusters, it is
always its cluster's representative (published data is not taken back), and it
is never dropped or written to ``docs/`` again.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from corpusmill.schemas.documents import DUPLICATE_SCHEMA
from corpusmill.transforms.dedup import lsh, minhash
from corpusmill.transforms.io.shard_files import OutputSpec

INDEX_SCHEMA = pa.schema([
    pa.field("key", pa.int64(), nullable=False),
    pa.field("id", pa.string(), nullable=False),
    pa.field("exact_hash", pa.binary(16), nullable=False),
    pa.field("signature", pa.list_(pa.uint32())),
    pa.field("shingles", pa.large_list(pa.uint32())),
    pa.field("length", pa.int64(), nullable=False),
    pa.field("timestamp", pa.int64(), nullable=False),
])
INDEX = OutputSpec("index", INDEX_SCHEMA, sort_keys=("key",))

#: A new document whose id is already published with another text: it does not enter the snapshot.
PUBLISHED_ID = "published_id"

#: Dedup settings that must match the previous snapshot's for its index to be joined against.
COMPATIBLE_KEYS = ("exact", "near", "normalize", "num_perm", "ngram", "seed", "scheme")


def _hash_column(hashes: np.ndarray) -> pa.Array:
    data = np.ascontiguousarray(hashes, dtype=np.uint64)
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), data.shape[0], [None, pa.py_buffer(data.tobytes())])


def _hashes_of(column: pa.Array) -> np.ndarray:
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(column) == 0:
        return np.empty((0, 2), dtype=np.uint64)
    buffer = column.buffers()[1]
    raw = np.frombuffer(buffer, dtype=np.uint64, count=2 * (column.offset + len(column)))
    return raw[2 * column.offset :].reshape(-1, 2).copy()


def index_table(features: dict, shingle_sets: tuple[np.ndarray, np.ndarray] | None,
                keep: np.ndarray) -> pa.Table:
    """Index rows of the kept members of one shard's features (sorted by key).

    Args:
        features: One shard's features (``features.compute_features``, merged
            with published rows by ``merge_published``), rows sorted by ``uid``.
        shingle_sets: Their ``(values, offsets)`` shingle sets, row-aligned, or
            None when the run does not verify exactly.
        keep: Mask of the rows that are in the snapshot after dedup (published
            rows and kept new documents).
    """
    rows = np.flatnonzero(keep)
    n = rows.size
    if features["signature"] is not None:
        signature = features["signature"][rows].astype(np.uint32)
        num_perm = signature.shape[1]
        signature = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * num_perm),
                                             pa.array(signature.reshape(-1), pa.uint32()))
    else:
        signature = pa.nulls(n, pa.list_(pa.uint32()))
    if shingle_sets is not None:
        values, offsets = lsh.csr_take(*shingle_sets, rows)
        shingles = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), pa.array(values, pa.uint32()))
    else:
        shingles = pa.nulls(n, pa.large_list(pa.uint32()))
    return pa.Table.from_arrays([
        pa.array(features["uid"][rows], pa.int64()),
        pa.array(features["id"][rows].tolist(), pa.string()),
        _hash_column(features["hash"][rows]),
        signature,
        shingles,
        pa.array(features["length"][rows], pa.int64()),
        pa.array(features["timestamp"][rows], pa.int64()),
    ], schema=INDEX_SCHEMA)


def published_features(table: pa.Table, plan) -> tuple[dict, tuple[np.ndarray, np.ndarray] | None]:
    """Features of published documents from index rows, in the form ``compute_features`` gives.

    Args:
        table: Index rows (any order).
        plan: The refresh's ``DedupPlan``: band keys are computed with its bands x rows.

    Returns:
        ``(features, shingle_sets)``, rows sorted by key; shingle sets only when
        the plan verifies exactly.

    Raises:
        ValueError: The index lacks what the plan needs (signatures for near
            dedup, shingle sets for exact verification).
    """
    table = table.take(pc.sort_indices(table.column("key")))
    n = table.num_rows
    config = plan.config
    features = {
        "uid": table.column("key").to_numpy().astype(np.int64),
        "id": np.asarray(table.column("id").to_pylist(), dtype=object),
        "hash": _hashes_of(table.column("exact_hash")),
        "length": table.column("length").to_numpy().astype(np.int64),
        "timestamp": table.column("timestamp").to_numpy().astype(np.int64),
        "rank": np.zeros(n, dtype=np.int32),
        "signature": None, "band_keys": None, "has_shingles": None, "shingle_sets": None,
        "published": np.ones(n, dtype=bool),
        "key_collisions": 0,
    }
    shingle_sets = None
    if config.near:
        signatures = table.column("signature")
        if n and signatures.null_count:
            raise ValueError("the previous snapshot's index has no MinHash signatures (made with dedup.near off)")
        flat = pc.list_flatten(signatures).to_numpy().astype(np.uint32) if n else np.empty(0, np.uint32)
        features["signature"] = flat.reshape(n, config.num_perm)
        features["band_keys"] = minhash.band_hashes(features["signature"].astype(np.uint64), plan.bands, plan.rows)
        features["has_shingles"] = ~np.all(features["signature"] == minhash.EMPTY_HASH_VALUE, axis=1)
        if config.verify == "exact":
            shingles = table.column("shingles")
            if n and shingles.null_count:
                raise ValueError("the previous snapshot's index has no shingle sets (it did not verify exactly)")
            shingles = shingles.combine_chunks() if n else pa.array([], pa.large_list(pa.uint32()))
            values = pc.list_flatten(shingles).to_numpy().astype(np.uint32)
            offsets = np.asarray(shingles.offsets.to_numpy(), dtype=np.int64)
            shingle_sets = (values, offsets - offsets[0])
    return features, shingle_sets


def _take(features: dict, rows: np.ndarray) -> dict:
    return {name: (value[rows] if isinstance(value, np.ndarray) else value) for name, value in features.items()}


def merge_published(new: dict, published: dict, published_sets) -> tuple[dict, pa.RecordBatch]:
    """One shard's features: new documents and published ones, sorted by key.

    A new document whose id is already published cannot enter the snapshot
    beside it: with the same normalised text it is an exact duplicate of the
    published document, otherwise a ``published_id`` duplicate (the id was
    published with another text; published data is not taken back). Either way
    it leaves here, before buckets, and the published row stands for both.

    Args:
        new: ``compute_features`` of the shard's new documents (its
            ``shingle_sets`` included).
        published: ``published_features`` of the shard's index rows.
        published_sets: Their shingle sets, or None.

    Returns:
        ``(features, early)``: merged features, with the ``published`` mask and
        the merged ``shingle_sets``, and the ``DUPLICATE_SCHEMA`` rows of the
        new documents removed here.
    """
    new_sets = new["shingle_sets"]
    new = dict(new, published=np.zeros(new["uid"].shape[0], dtype=bool), shingle_sets=None)
    clash = np.isin(new["uid"], published["uid"])
    early = pa.RecordBatch.from_pylist([], schema=DUPLICATE_SCHEMA)
    if clash.any():
        rows = np.flatnonzero(clash)
        at = np.searchsorted(published["uid"], new["uid"][rows])
        same_id = new["id"][rows] == published["id"][at]
        # A different id with the same 64-bit key: left out of dedup, as features does within a shard.
        collided = rows[~same_id]
        rows, at = rows[same_id], at[same_id]
        exact = np.all(new["hash"][rows] == published["hash"][at], axis=1)
        similarity = np.ones(rows.size, dtype=np.float64)
        if new["signature"] is not None and (~exact).any():
            similarity[~exact] = lsh.estimated_jaccard(new["signature"][rows[~exact]],
                                                       published["signature"][at[~exact]])
        kinds = np.where(exact, "exact", PUBLISHED_ID).astype(object)
        ids = new["id"][rows].tolist()
        early = pa.RecordBatch.from_arrays(
            [pa.array(ids, pa.string()), pa.array(kinds.tolist(), pa.string()), pa.array(ids, pa.string()),
             pa.array(ids, pa.string()), pa.array(similarity, pa.float64())], schema=DUPLICATE_SCHEMA)
        keep = np.flatnonzero(~clash)
        new["key_collisions"] += int(collided.size)
        if new_sets is not None:
            new_sets = lsh.csr_take(*new_sets, keep)
        new = _take(new, keep)
    merged = {}
    for name, value in new.items():
        other = published[name]
        if isinstance(value, np.ndarray):
            merged[name] = np.concatenate([value, other.astype(value.dtype)])
        elif value is None or other is None:
            merged[name] = None
        else:
            merged[name] = value + other
    order = np.argsort(merged["uid"], kind="stable")
    merged = _take(merged, order)
    if new_sets is not None and published_sets is not None:
        merged["shingle_sets"] = lsh.csr_take(*lsh.csr_concat([new_sets, published_sets]), order)
    return merged, early


def representative_preference(published: np.ndarray | None) -> list[np.ndarray]:
    """Keep-policy keys that put published members first (none when nothing is published)."""
    if published is None or not published.any():
        return []
    return [(~published).astype(np.int64)]


def check_compatible(previous: dict | None, current: dict) -> list[str]:
    """What in the previous snapshot's dedup config keeps its index from being joined.

    Args:
        previous: The previous manifest's ``config.dedup`` section.
        current: This run's ``config.dedup`` section.

    Returns:
        One line per setting that differs (empty when compatible).
    """
    if previous is None:
        return ["dedup: the previous snapshot records no dedup config"]
    problems = [f"dedup.{key}: previous {previous.get(key)!r}, now {current.get(key)!r}"
                for key in COMPATIBLE_KEYS if previous.get(key) != current.get(key)]
    if not previous.get("enabled", True):
        problems.insert(0, "dedup.enabled: the previous snapshot ran without dedup, so it has no index")
    if current.get("near") and current.get("verify") == "exact" and previous.get("verify") != "exact":
        problems.append(f"dedup.verify: previous {previous.get('verify')!r} wrote no shingle sets, "
                        "now 'exact' needs them")
    return problems


__all__ = ["INDEX", "INDEX_SCHEMA", "PUBLISHED_ID", "check_compatible", "index_table", "merge_published",
           "published_features", "representative_preference"]
