"""The dedup stage's numbers: fragments from every step folded into one manifest section (Beam-free).

Steps emit small fragments (``{"type": "documents" | "clusters" |
"candidates" | "round" | "components" | "excerpt" | "features", ...}``);
``add_fragment`` folds them into one accumulator in any order and
``build_stats`` turns it into the manifest's ``dedup`` section.
"""

from __future__ import annotations

from corpusmill.schemas.documents import DuplicateKind
from corpusmill.transforms.dedup import components
from corpusmill.transforms.dedup.features import DedupPlan
from corpusmill.transforms.dedup.index import PUBLISHED_ID


def new_accumulator() -> dict:
    """An empty accumulator (small: counts and histograms)."""
    return {"input": 0, "kept": 0, "clusters": 0, "by_kind": {}, "sizes": {}, "unique_pairs": 0,
            "passed": 0, "rounds": {}, "components": None, "excerpts": {}, "key_collisions": 0,
            "against_previous": {}, "early": {}}


def _add_counts(target: dict, counts: dict) -> None:
    for name, value in counts.items():
        target[name] = target.get(name, 0) + value


def add_fragment(acc: dict, fragment: dict) -> dict:
    """Folds one fragment into the accumulator; returns it."""
    kind = fragment["type"]
    if kind == "documents":
        acc["input"] += fragment["input"]
        acc["kept"] += fragment["kept"]
    elif kind == "features":
        acc["key_collisions"] += fragment["key_collisions"]
    elif kind == "clusters":
        acc["clusters"] += fragment["clusters"]
        _add_counts(acc["by_kind"], fragment["by_kind"])
        _add_counts(acc["sizes"], fragment["sizes"])
        _add_counts(acc["against_previous"], fragment.get("against_previous", {}))
    elif kind == "published_ids":
        _add_counts(acc["early"], fragment["by_kind"])
    elif kind == "candidates":
        acc["unique_pairs"] += fragment["unique_pairs"]
        acc["passed"] += fragment["passed"]
    elif kind == "round":
        count, total = acc["rounds"].get(fragment["round"], (0, 0))
        acc["rounds"][fragment["round"]] = (count + fragment["count"], (total + fragment["sum"]) % (1 << 64))
    elif kind == "components":
        acc["components"] = fragment
    elif kind == "excerpt":
        acc["excerpts"][fragment["cluster_id"]] = fragment["excerpt"]
    return acc


def as_fragments(acc: dict):
    """The fragments an accumulator stands for (merging two accumulators folds one's into the other)."""
    yield {"type": "documents", "input": acc["input"], "kept": acc["kept"]}
    yield {"type": "features", "key_collisions": acc["key_collisions"]}
    yield {"type": "clusters", "clusters": acc["clusters"], "by_kind": acc["by_kind"], "sizes": acc["sizes"],
           "against_previous": acc["against_previous"]}
    yield {"type": "published_ids", "by_kind": acc["early"]}
    yield {"type": "candidates", "unique_pairs": acc["unique_pairs"], "passed": acc["passed"]}
    for round_index, (count, total) in acc["rounds"].items():
        yield {"type": "round", "round": round_index, "count": count, "sum": total}
    if acc["components"] is not None:
        yield acc["components"]
    for cluster_id, text in acc["excerpts"].items():
        yield {"type": "excerpt", "cluster_id": cluster_id, "excerpt": text}


def build_stats(acc: dict, top_clusters: list[dict], plan: DedupPlan) -> dict:
    """The stage's manifest section from the merged fragments."""
    config = plan.config
    # A refresh's new documents with an id already published leave before clustering (early).
    by_kind = {k: acc["by_kind"].get(k, 0) + acc["early"].get(k, 0) for k in DuplicateKind.ALL}
    if acc["early"].get(PUBLISHED_ID):
        by_kind[PUBLISHED_ID] = acc["early"][PUBLISHED_ID]
    components_record = acc["components"] or {"mode": None, "edges": 0, "requested": config.components,
                                              "max_rounds": plan.max_rounds, "reason": None}
    rounds = None
    if components_record["mode"] == "distributed":
        checksums = [acc["rounds"].get(r, (0, 0)) for r in range(plan.max_rounds + 1)]
        rounds = components.rounds_to_converge(checksums)
    top = []
    for summary in top_clusters:
        entry = {k: v for k, v in summary.items() if k != "representative_shard"}
        entry["excerpt"] = acc["excerpts"].get(summary["cluster_id"], "")
        top.append(entry)
    section = {
        "enabled": True,
        "documents": {"input": acc["input"], "kept": acc["kept"],
                      "duplicates": sum(by_kind.values())},
        # Documents left out of dedup (kept as they are): their id's key was taken by a smaller id.
        "key_collisions": acc["key_collisions"],
        "duplicates_by_kind": by_kind,
        "clusters": {
            "count": acc["clusters"],
            "size_histogram": {str(s): acc["sizes"][s] for s in sorted(acc["sizes"])},
        },
        "top_clusters": top,
        # Distinct candidate pairs whose similarity was checked, and how many passed.
        "candidates": {"pairs_verified": acc["unique_pairs"], "passed": acc["passed"],
                       "rejected": acc["unique_pairs"] - acc["passed"]},
        "verification": plan.verify,
        "keep": config.keep,
        "lsh": lsh_section(plan) if config.near else None,
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
    if plan.refresh:
        # New documents removed as duplicates of the previous snapshot's (their representative is
        # published), apart from those removed as duplicates of each other.
        against = {k: acc["against_previous"].get(k, 0) + acc["early"].get(k, 0) for k in DuplicateKind.ALL}
        against[PUBLISHED_ID] = acc["early"].get(PUBLISHED_ID, 0)
        section["refresh"] = {
            "against_previous": against,
            "against_each_other": {k: acc["by_kind"].get(k, 0) - acc["against_previous"].get(k, 0)
                                   for k in DuplicateKind.ALL},
        }
    return section


def lsh_section(plan: DedupPlan) -> dict:
    """The banding a run used and what it promises at the threshold (``banding.py``)."""
    config, banding = plan.config, plan.banding
    return {
        "bands": banding.bands, "rows": banding.rows,
        "banding": banding.rule, "banding_requested": config.banding,
        "max_miss_rate": config.max_miss_rate if banding.rule == "recall" else None,
        # 1 - (1 - t^rows)^bands: the share of pairs at J = threshold that become candidates.
        "expected_recall_at_threshold": round(banding.expected_recall_at_threshold, 6),
        "candidate_midpoint": round(banding.candidate_midpoint, 4),
        "threshold": config.threshold, "num_perm": config.num_perm, "ngram": config.ngram,
        "seed": config.seed, "scheme": config.scheme,
    }
