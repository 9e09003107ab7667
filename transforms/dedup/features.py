"""Per-document dedup features and LSH buckets of one shard (Beam-free).

Documents are named inside the dedup stage by their stable key
(``common.document_keys``: xxh3-64 of the id), the same number in every run
and every shard count, so that a later run can join against it. A shard's
features are sorted by key; ``rows_of`` finds a document's row from its key.
Two distinct ids of one shard with the same key (about ``n² / 2^65`` pairs
for ``n`` documents) cannot both be named: the later id in id order is left
out of deduplication (kept as it is) and counted, never merged with the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from corpusmill.schemas.config import DedupConfig
from corpusmill.transforms.common import document_keys, key_collisions, split_by
from corpusmill.transforms.dedup import keep_policy, lsh, minhash
from corpusmill.transforms.dedup.banding import Banding, choose_banding
from corpusmill.transforms.dedup.normalize import exact_hashes, normalize_array

EXACT_BAND = -1
# Feature columns that travel from the features step to cluster resolution.
MEMBER_COLUMNS = ("uid", "id", "hash", "signature", "length", "timestamp", "rank", "published")


@dataclass(frozen=True)
class DedupPlan:
    """What the stage derives from its config before the pipeline is built."""

    config: DedupConfig
    params: minhash.MinHashParams
    banding: Banding
    num_shards: int
    num_ranges: int
    max_rounds: int
    previous_index: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: DedupConfig, num_shards: int, max_rounds: int,
                    previous_index: tuple[str, ...] = ()) -> "DedupPlan":
        """Resolves the LSH banding (``config.banding_rule``) and partition counts.

        ``previous_index`` lists the index files of the snapshot a refresh
        deduplicates against (``corpusmill.transforms.dedup.index``).
        """
        params = minhash.MinHashParams(config.num_perm, config.ngram, config.seed, config.scheme)
        banding = choose_banding(config.banding_rule, config.threshold, config.num_perm, config.max_miss_rate,
                                 config.bands, config.rows)
        shards = max(1, num_shards)
        ranges = 1 << (shards - 1).bit_length()
        return cls(config, params, banding, shards, ranges, max_rounds, tuple(previous_index))

    @property
    def refresh(self) -> bool:
        """The run deduplicates against a previous snapshot's index."""
        return bool(self.previous_index)

    @property
    def bands(self) -> int:
        """LSH bands."""
        return self.banding.bands

    @property
    def rows(self) -> int:
        """Signature values per LSH band."""
        return self.banding.rows

    @property
    def num_partitions(self) -> int:
        """Partitions of the shuffles inside the stage: one per shard."""
        return self.num_shards

    @property
    def verify(self) -> str:
        """Verification that actually runs (near duplicates only)."""
        return self.config.verify if self.config.near else "not_run"


def rows_of(sorted_uids: np.ndarray, uids: np.ndarray) -> np.ndarray:
    """Rows of ``uids`` in a shard whose features are sorted by uid.

    Raises:
        LookupError: A uid is not in the shard (a runner lost or misrouted data).
    """
    uids = np.asarray(uids, dtype=np.int64)
    rows = np.searchsorted(sorted_uids, uids)
    found = rows < sorted_uids.shape[0]
    found[found] = sorted_uids[rows[found]] == uids[found]
    if not found.all():
        raise LookupError(f"{int((~found).sum())} document key(s) are not in the shard they hash to, "
                          f"e.g. {int(uids[~found][0])}")
    return rows


def compute_features(table: pa.Table, plan: DedupPlan) -> dict:
    """Per-document dedup features of one shard, sorted by uid.

    Returns:
        A dict of aligned arrays: ``uid`` (int64 document keys, ascending),
        ``id`` (object), ``hash`` (n x 2 uint64), ``signature`` (n x num_perm
        uint32, or None when near dedup is off), ``band_keys`` (n x bands
        uint64, or None), ``has_shingles``, ``length``, ``timestamp`` (µs,
        ``NO_TIMESTAMP`` when null), ``rank``, ``shingle_sets`` (``(values,
        offsets)`` CSR of uint32 shingle hashes when near dedup verifies
        exactly, else None); and ``key_collisions``, the number of documents
        left out because their key was taken by a smaller id.
    """
    ids = table.column("id")
    keys = document_keys(ids)
    by_id = pc.sort_indices(ids).to_numpy()
    collided = np.zeros(keys.shape[0], dtype=bool)
    collided[by_id] = key_collisions(keys[by_id])
    usable = np.flatnonzero(~collided)
    order = usable[np.argsort(keys[usable], kind="stable")]
    ordered = table.take(pa.array(order, type=pa.int64()))
    normalized = normalize_array(ordered.column("text"), plan.config.normalize)
    features = {
        "uid": keys[order],
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
        "published": np.zeros(ordered.num_rows, dtype=bool),
        "key_collisions": int(collided.sum()),
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
    """Yields ``((band, range), arrays)`` bucket arrays of one shard.

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
    """Star edges ``(centre, member)`` of one (band, range)'s bucket arrays from all shards."""
    parts = list(parts)
    keys = np.concatenate([p[0] for p in parts])
    uids = np.concatenate([p[1] for p in parts])
    if len(parts[0]) > 2:
        keys, uids = lsh.collapse_copies(keys, uids, np.concatenate([p[2] for p in parts]))
    return lsh.bucket_stars(keys, uids)


def shingle_set_pieces(features: dict):
    """Yields ``(uids, values, offsets)`` runs of whole shingle sets, about ``PIECE_BYTES`` each."""
    uids = features["uid"]
    for first, values, offsets in lsh.csr_pieces(*features["shingle_sets"]):
        yield uids[first : first + offsets.shape[0] - 1], values, offsets


def members_of(features: dict, nodes: np.ndarray, labels: np.ndarray) -> dict:
    """The features of the labelled documents of one shard, with their ``cluster`` label."""
    rows = rows_of(features["uid"], nodes)
    members = {name: (None if features[name] is None else features[name][rows]) for name in MEMBER_COLUMNS}
    members["cluster"] = labels
    return members
