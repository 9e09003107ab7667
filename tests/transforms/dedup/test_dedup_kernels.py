"""Tests of the Beam-free dedup kernels: normalisation, LSH stars, verification, components, keep policy."""

from __future__ import annotations

import fnmatch
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import xxhash
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from corpusmill.schemas.config import DedupConfig, NormalizeConfig
from corpusmill.transforms.common import document_keys, shard_of
from corpusmill.transforms.dedup import components, features as features_module, keep_policy, lsh, minhash
from corpusmill.transforms.dedup.clusters import resolve_clusters
from corpusmill.transforms.dedup.features import DedupPlan, bucket_arrays, bucket_edges, compute_features, rows_of
from corpusmill.transforms.dedup.normalize import exact_hashes, normalize_array, normalize_text, normalize_texts

SAMPLE = Path(__file__).resolve().parents[3] / "jobs" / "sample" / "linux-doc-sample.jsonl.zst"


def sample_records() -> list[dict]:
    """The bundled sample corpus (real Linux kernel documentation, two kernel versions)."""
    with zstandard.ZstdDecompressor().stream_reader(SAMPLE.open("rb")) as reader:
        return [json.loads(line) for line in io.TextIOWrapper(reader, encoding="utf-8")]

WORDS = st.sampled_from(["alpha", "beta", "gamma", "delta", "Delta", "ÉPSILON", "ﬁ", "x", "—", "a,b"])
TEXTS = st.lists(WORDS, min_size=0, max_size=30).map(" ".join)

# Every str.split() whitespace character, plus characters where a per-code-point
# (Arrow / utf8proc) implementation would differ from Python's: U+0130 lowercases
# to two code points, a capital sigma lowercases by context (final sigma),
# combining marks compose under NFKC (also across ASCII letters), full-width and
# ligature forms decompose, U+1E9E and U+00DF case, punctuation of every script.
SPLIT_WHITESPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680" + "".join(
    chr(c) for c in range(0x2000, 0x200B)) + "\u2028\u2029\u202f\u205f\u3000"
TRICKY = "İΣσςΑaAzZé\u0301\u0308\u0323ǅﬁＦ㎏ẞß,.!?-_'\"¿«»、。‐\u200b\u00ad"
UNICODE_TEXTS = st.text(st.one_of(
    st.characters(codec="utf-8"),
    st.sampled_from(SPLIT_WHITESPACE),
    st.sampled_from(TRICKY),
    st.characters(min_codepoint=32, max_codepoint=126),
), max_size=60)
CONFIGS = st.builds(NormalizeConfig, nfkc=st.booleans(), lowercase=st.booleans(),
                    collapse_whitespace=st.booleans(), strip_punctuation=st.booleans())


def brute_force_components(nodes, edges) -> dict[int, int]:
    """Oracle: label each node with its component's minimum by repeated relaxation."""
    label = {n: n for n in nodes}
    changed = True
    while changed:
        changed = False
        for a, b in edges:
            low = min(label[a], label[b])
            if label[a] != low or label[b] != low:
                label[a] = label[b] = low
                changed = True
    return label


def clusters_of(nodes, labels) -> set[frozenset]:
    groups: dict[int, set] = {}
    for node, label in zip(nodes.tolist(), labels.tolist()):
        groups.setdefault(label, set()).add(node)
    return {frozenset(g) for g in groups.values()}


# ---------------------------------------------------------------- normalisation


def test_normalisation_steps_and_switches():
    text = "  Ｆull-width\u00a0TEXT,\tﬁne\n\nend.  "
    assert normalize_text(text) == "full-width text, fine end."
    assert normalize_text(text, NormalizeConfig(strip_punctuation=True)) == "full width text fine end"
    off = NormalizeConfig(nfkc=False, lowercase=False, collapse_whitespace=False, strip_punctuation=False)
    assert normalize_text(text, off) == text
    assert normalize_texts([text, "A  B"], NormalizeConfig()) == ["full-width text, fine end.", "a b"]


@given(st.lists(TEXTS, max_size=20))
@settings(max_examples=50, deadline=None)
def test_exact_hashes_are_xxh3_128_split_in_two_columns(texts):
    hashes = exact_hashes(texts)
    assert hashes.shape == (len(texts), 2) and hashes.dtype == np.uint64
    for text, (high, low) in zip(texts, hashes.tolist()):
        assert (high << 64) | low == xxhash.xxh3_128_intdigest(text.encode("utf-8"))


@given(st.lists(UNICODE_TEXTS, max_size=12), CONFIGS)
@settings(max_examples=400, deadline=None)
def test_normalize_array_equals_the_python_reference_on_random_unicode(texts, config):
    expected = normalize_texts(texts, config)
    for array in (pa.array(texts, pa.string()), pa.chunked_array([pa.array(texts, pa.large_string())])):
        normalized = normalize_array(array, config)
        assert normalized.type == pa.large_string()
        assert normalized.to_pylist() == expected
    # Hashes read from the Arrow buffer equal hashes of the Python strings.
    assert (exact_hashes(normalized) == exact_hashes(expected)).all()


def test_normalize_array_equals_the_python_reference_on_real_documents(real_texts):
    lines = "\n".join(real_texts[:40]).split("\n")
    # Mixed-script lines next to ASCII lines exercise the line-wise Python pass.
    texts = real_texts[:200] + ["\n".join(["İSTANBUL ΟΔΟΣ", *lines[:50], "ＦＵＬＬ\u00a0ｗｉｄｔｈ"])]
    for config in (NormalizeConfig(), NormalizeConfig(strip_punctuation=True),
                   NormalizeConfig(nfkc=False, lowercase=False)):
        assert normalize_array(pa.array(texts), config).to_pylist() == normalize_texts(texts, config)


def test_case_and_spacing_variants_hash_equal():
    a, b, c = normalize_texts(["Hello   World\n", "hello world", "hello, world"])
    hashes = exact_hashes([a, b, c])
    assert (hashes[0] == hashes[1]).all() and not (hashes[0] == hashes[2]).all()


# ---------------------------------------------------------------- shingle sets


@given(st.lists(TEXTS, max_size=12), st.integers(1, 6))
@settings(max_examples=60, deadline=None)
def test_shingle_sets_equal_the_reference_shingles(texts, ngram):
    values, offsets = minhash.shingle_sets(texts, ngram)
    assert values.dtype == np.uint32 and offsets.shape == (len(texts) + 1,)
    for i, text in enumerate(texts):
        expected = sorted({minhash.shingle_hash(s) for s in minhash.shingles(text, ngram)})
        assert values[offsets[i]:offsets[i + 1]].tolist() == expected


@given(st.lists(st.one_of(TEXTS, UNICODE_TEXTS), max_size=12), st.integers(1, 6),
       st.sampled_from(["legacy", "affine32"]))
@settings(max_examples=60, deadline=None)
def test_signatures_and_shingle_sets_in_one_pass_equal_the_separate_kernels(texts, ngram, scheme):
    params = minhash.MinHashParams(num_perm=16, ngram=ngram, seed=3, scheme=scheme)
    sigs, (values, offsets) = minhash.signatures_and_shingle_sets(texts, params)
    expected_values, expected_offsets = minhash.shingle_sets(texts, ngram)
    assert np.array_equal(sigs, minhash.signatures(texts, params))
    assert np.array_equal(values, expected_values) and np.array_equal(offsets, expected_offsets)


def test_shingle_sets_on_real_documents(real_texts):
    texts = real_texts[:20]
    values, offsets = minhash.shingle_sets(texts, 5)
    for i, text in enumerate(texts):
        expected = sorted({minhash.shingle_hash(s) for s in minhash.shingles(text, 5)})
        assert values[offsets[i]:offsets[i + 1]].tolist() == expected


# ---------------------------------------------------------------- LSH stars and verification


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 40)), max_size=60))
@settings(max_examples=100, deadline=None)
def test_bucket_stars_connect_exactly_each_bucket(rows):
    keys = np.array([[a, b] for a, b, _ in rows], dtype=np.uint64).reshape(-1, 2)
    uids = np.array([u for _, _, u in rows], dtype=np.int64)
    centre, member = lsh.bucket_stars(keys, uids)
    buckets: dict[tuple, set] = {}
    for a, b, u in rows:
        buckets.setdefault((a, b), set()).add(u)
    expected_edges = {(min(g), u) for g in buckets.values() for u in g if u != min(g)}
    assert set(zip(centre.tolist(), member.tolist())) == expected_edges
    # m - 1 edges per bucket, no repeats inside a bucket; two buckets holding the same
    # documents give the same edge twice (verification deduplicates edges later).
    assert len(centre) == sum(len(g) - 1 for g in buckets.values())


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 30)), max_size=60))
@settings(max_examples=100, deadline=None)
def test_collapse_copies_keeps_the_smallest_uid_of_each_text_in_each_bucket(rows):
    keys = np.array([k for k, _, _ in rows], dtype=np.uint64)
    hashes = np.array([[h, 7 * h] for _, h, _ in rows], dtype=np.uint64).reshape(-1, 2)
    uids = np.array([u for _, _, u in rows], dtype=np.int64)
    kept_keys, kept_uids = lsh.collapse_copies(keys, uids, hashes)
    smallest: dict[tuple, int] = {}
    for k, h, u in rows:
        smallest[(k, h)] = min(u, smallest.get((k, h), u))
    assert sorted(zip(kept_keys.tolist(), kept_uids.tolist())) == sorted((k, u) for (k, _), u in smallest.items())


def test_key_ranges_use_the_top_bits():
    keys = np.array([0, 1 << 62, 1 << 63, (1 << 64) - 1], dtype=np.uint64)
    assert lsh.key_ranges(keys, 4).tolist() == [0, 1, 2, 3]
    assert lsh.key_ranges(keys, 1).tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError):
        lsh.key_ranges(keys, 3)


def test_unique_edges_orients_and_drops_repeats_and_loops():
    small, large = lsh.unique_edges(np.array([5, 1, 3, 2]), np.array([1, 5, 3, 9]))
    assert list(zip(small.tolist(), large.tolist())) == [(1, 5), (2, 9)]


@given(st.lists(st.sets(st.integers(0, 30), max_size=15), min_size=1, max_size=8), st.data())
@settings(max_examples=100, deadline=None)
def test_jaccard_pairs_equals_set_jaccard(sets, data):
    values = np.concatenate([np.array(sorted(s), dtype=np.uint32) for s in sets])
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sets])]).astype(np.int64)
    pairs = data.draw(st.lists(st.tuples(st.integers(0, len(sets) - 1), st.integers(0, len(sets) - 1)), max_size=10))
    left = np.array([p[0] for p in pairs], dtype=np.int64)
    right = np.array([p[1] for p in pairs], dtype=np.int64)
    result = lsh.jaccard_pairs(values, offsets, left, right)
    for (a, b), value in zip(pairs, result):
        union = sets[a] | sets[b]
        expected = len(sets[a] & sets[b]) / len(union) if union else 1.0
        assert value == pytest.approx(expected)


def test_verify_edges_by_signature_and_exact_jaccard(real_texts):
    base = real_texts[0]
    words = base.split()
    edited = " ".join(words[: len(words) // 2] + ["inserted"] + words[len(words) // 2:])
    texts = [base, edited, real_texts[1]]
    params = minhash.MinHashParams()
    uids = np.array([10, 20, 30], dtype=np.int64)
    left, right = np.array([10, 10]), np.array([20, 30])
    sims, passed = lsh.verify_edges("exact", 0.8, left, right, uids, minhash.shingle_sets(texts, 5))
    sets = [set(minhash.shingle_hash(s) for s in minhash.shingles(t, 5)) for t in texts]
    assert sims[0] == pytest.approx(len(sets[0] & sets[1]) / len(sets[0] | sets[1]))
    assert passed.tolist() == [True, False]
    sigs = minhash.signatures(texts, params)
    est, passed = lsh.verify_edges("signature", 0.8, left, right, uids, (sigs,))
    assert abs(est[0] - sims[0]) < 0.15 and passed.tolist() == [True, False]
    _, passed = lsh.verify_edges("none", 0.8, left, right, uids, ())
    assert passed.all()
    with pytest.raises(ValueError):
        lsh.verify_edges("exact", 0.8, np.array([11]), np.array([20]), uids, minhash.shingle_sets(texts, 5))


def test_csr_take_and_concat():
    values, offsets = np.array([1, 2, 3, 4, 5], np.uint32), np.array([0, 2, 2, 5])
    taken_values, taken_offsets = lsh.csr_take(values, offsets, np.array([2, 0]))
    assert taken_values.tolist() == [3, 4, 5, 1, 2] and taken_offsets.tolist() == [0, 3, 5]
    joined_values, joined_offsets = lsh.csr_concat([(values, offsets), (taken_values, taken_offsets)])
    assert joined_offsets.tolist() == [0, 2, 2, 5, 8, 10] and joined_values.size == 10


# ---------------------------------------------------------------- connected components

GRAPHS = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), max_size=120)


@given(GRAPHS)
@settings(max_examples=100, deadline=None)
def test_union_find_matches_brute_force(edges):
    left = np.array([a for a, _ in edges], dtype=np.int64)
    right = np.array([b for _, b in edges], dtype=np.int64)
    nodes, labels = components.union_find_components(left, right)
    oracle = brute_force_components({n for e in edges for n in e}, edges)
    assert dict(zip(nodes.tolist(), labels.tolist())) == oracle


@given(GRAPHS, st.integers(1, 7))
@settings(max_examples=100, deadline=None)
def test_distributed_rounds_equal_union_find(edges, partitions):
    # Shift node ids into the (shard << 32 | row) range the stage uses.
    left = np.array([a for a, _ in edges], dtype=np.int64) + (3 << 32)
    right = np.array([b for _, b in edges], dtype=np.int64) + (1 << 32)
    expected = components.union_find_components(left, right)
    nodes, labels, info = components.distributed_components(left, right, partitions, max_rounds=16)
    assert info["rounds_to_converge"] is not None
    assert nodes.tolist() == expected[0].tolist() and labels.tolist() == expected[1].tolist()


def test_long_chain_needs_several_rounds_and_converges():
    rng = np.random.default_rng(7)
    chain = rng.permutation(500).astype(np.int64)
    left, right = chain[:-1], chain[1:]
    nodes, labels, info = components.distributed_components(left, right, 5, max_rounds=20)
    assert set(labels.tolist()) == {0} and nodes.size == 500
    assert 2 <= info["rounds_to_converge"] < 20
    # Too few rounds: reported as not converged, and no wrong merges.
    _, labels, info = components.distributed_components(left, right, 5, max_rounds=1)
    assert info["rounds_to_converge"] is None


@pytest.fixture(scope="module")
def sample_candidate_edges():
    """Unverified LSH star edges of the bundled sample, as the stage computes them (one shard)."""
    records = sample_records()
    table = pa.Table.from_pydict({
        "id": [r["id"] for r in records], "text": [r["text"] for r in records],
        "source": [r["source"] for r in records], "timestamp": pa.array([None] * len(records), pa.timestamp("us")),
    })
    plan = DedupPlan.from_config(DedupConfig(threshold=0.5), 1, 8)
    features = compute_features(table, plan)
    parts = [bucket_edges([arrays]) for _, arrays in bucket_arrays(features, plan)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def test_distributed_rounds_equal_union_find_on_real_candidate_edges(sample_candidate_edges):
    left, right = sample_candidate_edges
    assert left.size > 1000
    expected_nodes, expected_labels = components.union_find_components(left, right)
    # Real clusters, not only pairs (at threshold 0.5 the largest holds 14 documents).
    assert np.unique(expected_labels, return_counts=True)[1].max() > 2
    for partitions in (1, 3, 8):
        nodes, labels, info = components.distributed_components(left, right, partitions, max_rounds=12)
        assert info["rounds_to_converge"] >= 1
        assert clusters_of(nodes, labels) == clusters_of(expected_nodes, expected_labels)
        assert labels.tolist() == expected_labels.tolist()


# ---------------------------------------------------------------- keep policy


MEMBERS = st.lists(
    st.tuples(st.integers(0, 3), st.integers(1, 5), st.one_of(st.none(), st.integers(0, 4)),
              st.sampled_from(["web/a", "web/b", "books", "code"])),
    min_size=1, max_size=25)


@given(MEMBERS, st.sampled_from(keep_policy.KEEP_POLICIES))
@settings(max_examples=150, deadline=None)
def test_keep_policy_matches_the_definition(members, policy):
    ids = [f"doc-{i:03d}" for i in range(len(members))][::-1]  # id order differs from row order
    cluster = np.array([m[0] for m in members])
    lengths = np.array([m[1] for m in members])
    timestamps = np.array([keep_policy.NO_TIMESTAMP if m[2] is None else m[2] for m in members], dtype=np.int64)
    patterns = ["books", "web/*"]
    ranks = keep_policy.source_ranks([m[3] for m in members], patterns)
    rep = keep_policy.choose_representatives(cluster, ids, policy, lengths=lengths, timestamps=timestamps,
                                             ranks=ranks)

    def preference(i):
        length, ts, source = members[i][1], members[i][2], members[i][3]
        rank = next((k for k, p in enumerate(patterns) if fnmatch.fnmatchcase(source, p)), 2)
        key = {"longest": (-length,), "newest": (0 if ts is not None else 1, -(ts or 0)),
               "source_priority": (rank,), "smallest_id": ()}[policy]
        return key + (ids[i],)

    for i in range(len(members)):
        same = [j for j in range(len(members)) if members[j][0] == members[i][0]]
        assert rep[i] == min(same, key=preference)


def test_source_ranks_take_the_first_matching_pattern():
    ranks = keep_policy.source_ranks(["linux-doc-6.1", "linux-doc-6.12", "other"], ["*-6.12", "linux-*"])
    assert ranks.tolist() == [1, 0, 2]


def test_resolve_clusters_labels_kinds_and_similarity():
    params = minhash.MinHashParams()
    base = " ".join(f"word{i}" for i in range(200))
    near = base.replace("word100", "changed")
    texts = [base, base, near, "unrelated text here entirely"]
    sigs = minhash.signatures(texts, params).astype(np.uint32)
    ids = ["b", "a", "c", "z"]
    members = {
        "uid": document_keys(ids),
        "id": np.array(ids, dtype=object),
        "hash": exact_hashes(texts),
        "signature": sigs,
        "length": np.array([10, 10, 12, 3]),
        "timestamp": np.zeros(4, dtype=np.int64),
        "rank": np.zeros(4, dtype=np.int32),
        "cluster": np.array([0, 0, 0, 9], dtype=np.int64),
    }
    plan = DedupPlan.from_config(DedupConfig(keep="smallest_id"), 2, 4)
    duplicates, drops, summaries, totals = resolve_clusters(members, plan)
    rows = {r["id"]: r for r in duplicates.to_pylist()}
    assert set(rows) == {"b", "c"}
    assert rows["b"]["kind"] == "exact" and rows["b"]["similarity"] == 1.0
    assert rows["c"]["kind"] == "near" and 0.8 < rows["c"]["similarity"] < 1.0
    assert {r["representative_id"] for r in rows.values()} == {"a"} and rows["c"]["cluster_id"] == "a"
    # Each removed document goes back to the shard its id hashes to.
    dropped_by_shard = {shard: sorted(ids.tolist()) for shard, (ids, _) in drops.items()}
    expected = {}
    for doc_id, shard in zip(["b", "c"], shard_of(["b", "c"], 2)):
        expected.setdefault(int(shard), []).append(doc_id)
    assert dropped_by_shard == expected
    assert totals["by_kind"] == {"exact": 1, "near": 1} and totals["sizes"] == {1: 1, 3: 1}
    largest = max(summaries, key=lambda s: s["size"])
    assert largest["member_ids"] == ["a", "b", "c"] and largest["representative_shard"] == shard_of(["a"], 2)[0]


def test_lsh_plan_resolves_the_banding_rule():
    plan = DedupPlan.from_config(DedupConfig(), 5, 4)
    # Exact verification (the default) takes the recall banding; the others datasketch's optimum.
    assert (plan.banding.rule, plan.bands, plan.rows) == ("recall", 16, 6)
    assert plan.num_partitions == 5 and plan.num_ranges == 8
    for config in (DedupConfig(verify="signature"), DedupConfig(verify="none"), DedupConfig(banding="datasketch")):
        plan = DedupPlan.from_config(config, 1, 4)
        assert (plan.banding.rule, plan.bands, plan.rows) == ("datasketch", *minhash.lsh_params(0.8, 128))
    assert DedupPlan.from_config(DedupConfig(verify="none", banding="recall"), 1, 4).bands == 16
    explicit = DedupPlan.from_config(DedupConfig(bands=16, rows=8), 1, 4)
    assert (explicit.banding.rule, explicit.bands, explicit.rows) == ("explicit", 16, 8)


# ---------------------------------------------------------------- document keys


def _sample_table(records) -> pa.Table:
    return pa.Table.from_pydict({
        "id": [r["id"] for r in records], "text": [r["text"] for r in records],
        "source": [r["source"] for r in records], "timestamp": pa.array([None] * len(records), pa.timestamp("us")),
    })


def test_features_are_named_by_stable_keys_of_the_ids():
    records = sample_records()[:300]
    plan = DedupPlan.from_config(DedupConfig(), 3, 4)
    features = compute_features(_sample_table(records), plan)
    # The same key in any shard count and any row order: xxh3-64 of the id.
    shuffled = compute_features(_sample_table(records[::-1]), DedupPlan.from_config(DedupConfig(), 17, 4))
    assert np.array_equal(features["uid"], shuffled["uid"]) and features["key_collisions"] == 0
    assert np.all(np.diff(features["uid"]) > 0)
    assert dict(zip(features["id"], features["uid"].tolist())) == dict(
        zip([r["id"] for r in records], document_keys([r["id"] for r in records]).tolist()))
    rows = rows_of(features["uid"], features["uid"][[5, 0, 17]])
    assert features["id"][rows].tolist() == features["id"][[5, 0, 17]].tolist()
    with pytest.raises(LookupError, match="not in the shard"):
        rows_of(features["uid"], np.array([int(features["uid"].max()) + 1]))


def test_colliding_keys_are_counted_and_left_out_never_merged(monkeypatch):
    # No two real ids of a test corpus share 64 bits, so keys are cut to 3 bits here.
    records = sample_records()[:40]
    monkeypatch.setattr(features_module, "document_keys", lambda ids: document_keys(ids) & 7)
    features = compute_features(_sample_table(records), DedupPlan.from_config(DedupConfig(), 1, 4))
    ids = sorted(r["id"] for r in records)
    keys = (document_keys(ids) & 7).tolist()
    first_of_key = {}
    for doc_id, key in zip(ids, keys):
        first_of_key.setdefault(key, doc_id)
    # The smallest id of each key is deduplicated; every other id is counted and kept out.
    assert sorted(features["id"].tolist()) == sorted(first_of_key.values())
    assert features["key_collisions"] == len(records) - len(first_of_key) > 0
    assert len(set(features["uid"].tolist())) == features["uid"].size


# ---------------------------------------------------------------- shuffle pieces


def test_shingle_sets_cross_the_shuffle_in_pieces(real_texts):
    values, offsets = minhash.shingle_sets(real_texts[:60] + ["", "one"], 5)
    pieces = list(lsh.csr_pieces(values, offsets, piece_bytes=20_000))
    assert len(pieces) > 3 and pieces[0][0] == 0
    assert sum(p[2].shape[0] - 1 for p in pieces) == offsets.shape[0] - 1
    pieces.sort(key=lambda piece: piece[0])
    rebuilt_values, rebuilt_offsets = lsh.csr_concat([(v, o) for _, v, o in pieces])
    assert np.array_equal(rebuilt_values, values) and np.array_equal(rebuilt_offsets, offsets)
    assert list(lsh.csr_pieces(np.empty(0, np.uint32), np.zeros(1, np.int64))) == []
