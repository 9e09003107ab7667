"""Duplicate clusters: one representative each, a row per removed document (Beam-free)."""

from __future__ import annotations

import heapq

import numpy as np
import pyarrow as pa

from corpusmill.schemas.documents import DUPLICATE_SCHEMA, DuplicateKind
from corpusmill.transforms.common import shard_of_keys, split_by
from corpusmill.transforms.dedup import keep_policy, lsh
from corpusmill.transforms.dedup.features import DedupPlan
from corpusmill.transforms.dedup.index import representative_preference

EXCERPT_CHARS = 200
MEMBER_IDS_LISTED = 10


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
    published = members.get("published")
    if published is None:
        published = np.zeros(cluster.shape[0], dtype=bool)
    # Published documents (a refresh's previous snapshot) represent their cluster and are never removed.
    rep = keep_policy.choose_representatives(cluster, ids, config.keep, lengths=members["length"],
                                             timestamps=members["timestamp"], ranks=members["rank"],
                                             first=representative_preference(published))
    # cluster_id: the smallest id of the cluster, independent of the keep policy.
    cluster_id_of = keep_policy.choose_representatives(cluster, ids, "smallest_id")
    dropped = np.flatnonzero((rep != np.arange(rep.size)) & ~published)
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
             in split_by(shard_of_keys(members["uid"][dropped], plan.num_shards), ids[dropped], kinds)}
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
            "representative_shard": int(shard_of_keys(members["uid"][r : r + 1], plan.num_shards)[0]),
            "representative_published": bool(published[r]),
            "member_ids": member_ids[:MEMBER_IDS_LISTED],
            "by_kind": {k: int(np.sum(kind_of[rows] == k)) for k in DuplicateKind.ALL},
        })
    size_values, size_counts = np.unique(sizes, return_counts=True)
    totals = {
        "type": "clusters",
        "clusters": int(reps.size),
        "by_kind": {k: int(np.sum(kinds == k)) for k in DuplicateKind.ALL},
        "sizes": {int(s): int(c) for s, c in zip(size_values, size_counts)},
        # Removed documents whose representative was published by the previous snapshot (a refresh).
        "against_previous": {k: int(np.sum((kinds == k) & published[rep[dropped]])) for k in DuplicateKind.ALL},
    }
    return duplicates, drops, summaries, totals


def largest(summaries, n: int) -> list[dict]:
    """The n largest clusters, ties broken by the smaller cluster id."""
    return heapq.nsmallest(n, summaries, key=lambda s: (-s["size"], s["cluster_id"]))


def excerpt_text(text: str) -> str:
    """At most EXCERPT_CHARS characters of a text, whitespace collapsed for one-line display."""
    return " ".join(text[: EXCERPT_CHARS * 4].split())[:EXCERPT_CHARS]
