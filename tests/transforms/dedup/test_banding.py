"""LSH banding (issue 12.1): the recall rule's bound, its config, its manifest fields, and what it finds.

The near-copy test builds real near duplicates just above the threshold from the
bundled sample (Linux 6.12 documentation) and runs the stage's kernels end to
end: features, band buckets, star edges, exact verification, components.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import zstandard
from scipy import integrate

from corpusmill.schemas.config import ConfigError, DedupConfig, NormalizeConfig, load_job
from corpusmill.transforms.dedup import banding, components, lsh, minhash, stats
from corpusmill.transforms.dedup.features import DedupPlan, bucket_arrays, bucket_edges, compute_features
from corpusmill.transforms.dedup.normalize import normalize_texts

SAMPLE = Path(__file__).resolve().parents[3] / "jobs" / "sample" / "linux-doc-sample.jsonl.zst"


# ---------------------------------------------------------------- the rule


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0])
@pytest.mark.parametrize("num_perm", [64, 128, 256])
@pytest.mark.parametrize("max_miss_rate", [0.01, 0.001])
def test_recall_bands_meet_the_miss_rate_bound(threshold, num_perm, max_miss_rate):
    bands, rows = banding.recall_bands(threshold, num_perm, max_miss_rate)
    assert bands * rows <= num_perm
    assert (1 - threshold**rows) ** bands <= max_miss_rate
    # The fewest bands for its row count: one band less would break the bound.
    assert bands == 1 or (1 - threshold**rows) ** (bands - 1) > max_miss_rate


@pytest.mark.parametrize("threshold, num_perm", [(0.8, 128), (0.7, 64), (0.9, 256)])
def test_recall_bands_have_the_fewest_false_candidates_of_all_that_meet_the_bound(threshold, num_perm):
    """Oracle: every (bands, rows) of num_perm values, the area integrated by scipy's adaptive quadrature."""
    def area(b, r):
        return integrate.quad(lambda s: 1 - (1 - s**r) ** b, 0.0, threshold)[0]

    feasible = [(area(b, r), b, r) for r in range(1, num_perm + 1) for b in range(1, num_perm // r + 1)
                if (1 - threshold**r) ** b <= 0.01]
    _, best_bands, best_rows = min(feasible)
    assert banding.recall_bands(threshold, num_perm, 0.01) == (best_bands, best_rows)


def test_default_banding_at_0_8_and_its_promise():
    chosen = banding.choose_banding("recall", 0.8, 128, 0.01)
    assert (chosen.bands, chosen.rows) == (16, 6)
    assert chosen.expected_recall_at_threshold == pytest.approx(0.99228, abs=1e-5)
    assert chosen.candidate_midpoint < 0.8  # the candidate threshold lies below the decision threshold
    datasketch = banding.choose_banding("datasketch", 0.8, 128, 0.01)
    assert (datasketch.bands, datasketch.rows) == minhash.lsh_params(0.8, 128) == (9, 13)
    assert datasketch.expected_recall_at_threshold == pytest.approx(0.3988, abs=1e-4)
    assert banding.choose_banding("explicit", 0.8, 128, 0.01, 16, 8).rule == "explicit"
    with pytest.raises(ValueError, match="no banding"):
        banding.recall_bands(0.05, 8, 0.01)
    with pytest.raises(ValueError, match="allowed"):
        banding.choose_banding("optimal", 0.8, 128, 0.01)


# ---------------------------------------------------------------- config


def test_banding_resolves_from_the_verification():
    assert DedupConfig().banding_rule == "recall"
    assert DedupConfig(verify="signature").banding_rule == "datasketch"
    assert DedupConfig(verify="none").banding_rule == "datasketch"
    assert DedupConfig(verify="none", banding="recall").banding_rule == "recall"
    assert DedupConfig(banding="datasketch").banding_rule == "datasketch"
    assert DedupConfig(bands=20, rows=6).banding_rule == "explicit"


@pytest.mark.parametrize("overrides, key, allowed", [
    (["dedup.banding=optimal"], "dedup.banding", "allowed values: auto, recall, datasketch"),
    (["dedup.banding=recall", "dedup.bands=20", "dedup.rows=6"], "dedup.banding", "allowed: auto"),
    (["dedup.max_miss_rate=0"], "dedup.max_miss_rate", "allowed: 1e-09 .. 0.5"),
    (["dedup.max_miss_rate=0.9"], "dedup.max_miss_rate", "allowed: 1e-09 .. 0.5"),
    (["dedup.threshold=0.05", "dedup.num_perm=16"], "dedup.max_miss_rate", "more permutations"),
])
def test_bad_banding_config_fails_naming_the_key(overrides, key, allowed):
    with pytest.raises(ConfigError) as raised:
        load_job({}, overrides)
    assert raised.value.key == key and allowed in str(raised.value)


def test_datasketch_banding_needs_no_reachable_miss_rate():
    assert load_job({}, ["dedup.threshold=0.05", "dedup.num_perm=16", "dedup.banding=datasketch"]).dedup.num_perm == 16


# ---------------------------------------------------------------- manifest


def test_lsh_section_of_the_manifest():
    section = stats.lsh_section(DedupPlan.from_config(DedupConfig(), 1, 4))
    assert section["banding"] == "recall" and section["banding_requested"] == "auto"
    assert (section["bands"], section["rows"], section["max_miss_rate"]) == (16, 6, 0.01)
    assert section["expected_recall_at_threshold"] == round(1 - (1 - 0.8**6) ** 16, 6)
    section = stats.lsh_section(DedupPlan.from_config(DedupConfig(banding="datasketch"), 1, 4))
    assert (section["banding"], section["bands"], section["rows"], section["max_miss_rate"]) == \
        ("datasketch", 9, 13, None)
    assert section["expected_recall_at_threshold"] == round(1 - (1 - 0.8**13) ** 9, 6)
    assert "pairs_verified" in stats.build_stats(stats.new_accumulator(), [], DedupPlan.from_config(
        DedupConfig(), 1, 4))["candidates"]


# ---------------------------------------------------------------- near copies just above the threshold


def _originals(count: int) -> list[str]:
    """Distinct long real documents of one kernel version (no near duplicates among them)."""
    with zstandard.ZstdDecompressor().stream_reader(SAMPLE.open("rb")) as reader:
        records = [json.loads(line) for line in io.TextIOWrapper(reader, encoding="utf-8")]
    texts = sorted({r["text"] for r in records if r["source"] == "linux-doc-6.12" and len(r["text"].split()) >= 400})
    return texts[:count]


def _jaccard(texts_a: list[str], texts_b: list[str]) -> np.ndarray:
    """Exact Jaccard of the stage's shingle-hash sets, row against row."""
    normalized = normalize_texts(texts_a + texts_b, NormalizeConfig())
    values, offsets = minhash.shingle_sets(normalized, 5)
    n = len(texts_a)
    return lsh.jaccard_pairs(values, offsets, np.arange(n), np.arange(n, 2 * n))


def near_copies(originals: list[str], low: float, high: float, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """A copy of each original with words replaced until its exact Jaccard to it falls in [low, high)."""
    rng = np.random.default_rng(seed)
    words = [text.split() for text in originals]
    # One shuffled order of positions per document; a copy replaces the first k of them.
    orders = [rng.permutation(len(w)) for w in words]
    target = rng.uniform(low, high, len(originals))

    def copies(counts):
        out = []
        for w, order, k in zip(words, orders, counts):
            edited = list(w)
            for position in order[:k]:
                edited[position] = f"edit{position}"
            out.append(" ".join(edited))
        return out

    lo, hi = np.zeros(len(originals), dtype=np.int64), np.array([len(w) for w in words])
    while np.any(hi - lo > 1):  # bisection: lo keeps J >= target
        mid = (lo + hi) // 2
        above = _jaccard(originals, copies(mid)) >= target
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    texts = copies(lo)
    return texts, _jaccard(originals, texts)


def found_pairs(texts: list[str], pairs: list[tuple[int, int]], config: DedupConfig) -> float:
    """Share of ``pairs`` (text indices) that the stage's kernels put into one cluster."""
    plan = DedupPlan.from_config(config, 1, 4)
    ids = [f"doc-{i:04d}" for i in range(len(texts))]
    table = pa.table({"id": ids, "text": texts, "source": ["test"] * len(texts),
                      "timestamp": pa.array([None] * len(texts), pa.timestamp("us"))})
    features = compute_features(table, plan)
    grouped: dict = {}
    for key, arrays in bucket_arrays(features, plan):
        grouped.setdefault(key, []).append(arrays)
    stars = [bucket_edges(parts) for key, parts in grouped.items() if key[0] >= 0]
    left, right = lsh.unique_edges(np.concatenate([s[0] for s in stars]), np.concatenate([s[1] for s in stars]))
    _, passed = lsh.verify_edges("exact", config.threshold, left, right, features["uid"], features["shingle_sets"])
    nodes, labels = components.union_find_components(left[passed], right[passed])
    label_of = dict(zip(nodes.tolist(), labels.tolist()))
    uid_of = dict(zip(features["id"].tolist(), features["uid"].tolist()))
    uids = [uid_of[doc_id] for doc_id in ids]
    together = [label_of.get(uids[a], -1) == label_of.get(uids[b], -2) for a, b in pairs]
    return float(np.mean(together))


def test_near_copies_just_above_the_threshold_are_found_by_the_recall_banding():
    originals = _originals(160)
    copies, similarity = near_copies(originals, 0.80, 0.83)
    assert len(originals) == 160 and np.all((similarity >= 0.80) & (similarity < 0.85))
    texts = originals + copies
    pairs = [(i, len(originals) + i) for i in range(len(originals))]
    recall_default = found_pairs(texts, pairs, DedupConfig())
    recall_datasketch = found_pairs(texts, pairs, DedupConfig(banding="datasketch"))
    # Expected from the banding alone, at J in [0.80, 0.85): >= 99.2% and 40-69%.
    assert recall_default >= 0.97
    assert recall_datasketch <= 0.75
    # Exact verification keeps precision: copies below the threshold stay apart.
    apart, _ = near_copies(originals[:60], 0.70, 0.78, seed=1)
    below = found_pairs(originals[:60] + apart, [(i, 60 + i) for i in range(60)], DedupConfig())
    assert below == 0.0
