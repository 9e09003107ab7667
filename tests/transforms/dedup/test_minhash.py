"""Tests of the MinHash signature kernel against datasketch, the oracle."""

from __future__ import annotations

import glob
import gzip
import inspect

import datasketch
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corpusmill.transforms.dedup import minhash

SCHEMES = ["legacy", "affine32"]
# Only datasketch >= 2.0 knows schemes; before that "legacy" is the only one.
DATASKETCH_HAS_SCHEMES = "scheme" in inspect.signature(datasketch.MinHash).parameters
LINUX_DOC_GLOB = "/usr/share/doc/linux-doc-6.1/Documentation/**/*.rst.gz"

# Every character str.split() treats as whitespace, so the kernel's byte-level
# tokenizer is checked on each of them.
UNICODE_WHITESPACE = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())


def oracle_row(text: str, params: minhash.MinHashParams) -> np.ndarray:
    """datasketch's hash values for a text, fed by the reference shingling."""
    if params.scheme != "legacy" and not DATASKETCH_HAS_SCHEMES:
        pytest.skip("datasketch < 2.0 has no affine32 scheme")
    kwargs = {"scheme": params.scheme} if DATASKETCH_HAS_SCHEMES else {}
    sketch = datasketch.MinHash(num_perm=params.num_perm, seed=params.seed, hashfunc=minhash.shingle_hash, **kwargs)
    sketch.update_batch(minhash.shingles(text, params.ngram))
    return sketch.hashvalues


def assert_rows_equal_oracle(texts: list[str], params: minhash.MinHashParams) -> None:
    result = minhash.signatures(texts, params)
    assert result.dtype == np.uint64
    assert result.shape == (len(texts), params.num_perm)
    for text, row in zip(texts, result):
        np.testing.assert_array_equal(row, oracle_row(text, params), err_msg=repr(text[:200]))


# Words from a small vocabulary (so shingles repeat) mixed with arbitrary
# unicode words, separated by runs of any whitespace character.
_VOCABULARY = ["the", "kernel", "é", "日本語", "🙂", "a", "x_y", "—", "“quoted”", "\x00"]
_words = st.one_of(
    st.sampled_from(_VOCABULARY),
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters=UNICODE_WHITESPACE),
        min_size=1,
        max_size=8,
    ),
)
_separators = st.text(alphabet=st.sampled_from(UNICODE_WHITESPACE), min_size=1, max_size=3)
_structured_texts = st.builds(
    lambda words, seps, lead, trail: lead + "".join(w + s for w, s in zip(words, seps)) + trail,
    st.lists(_words, max_size=30),
    st.lists(_separators, min_size=30, max_size=30),
    st.sampled_from(["", " ", "\u3000\n"]),
    st.sampled_from(["", "\t", "\u2029"]),
)
_raw_texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
_texts = st.one_of(_structured_texts, _raw_texts)


@settings(max_examples=150, deadline=None)
@given(
    texts=st.lists(_texts, min_size=1, max_size=6),
    scheme=st.sampled_from(SCHEMES),
    ngram=st.integers(min_value=1, max_value=6),
    num_perm=st.sampled_from([1, 7, 128]),
    seed=st.sampled_from([0, 1, 42, 2**32 - 1]),
)
def test_rows_equal_datasketch_on_random_texts(texts, scheme, ngram, num_perm, seed):
    params = minhash.MinHashParams(num_perm=num_perm, ngram=ngram, seed=seed, scheme=scheme)
    assert_rows_equal_oracle(texts, params)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_edge_case_docs_equal_datasketch(scheme):
    texts = [
        "",
        " \t\n\u00a0\u3000",
        "one",
        "two words",
        "repeated " * 40,
        "a b a b a b a b a b a b",
        "mixed\u2028separators\x1cand\u0085more\u205fwords\u202fhere",
        "caf\u00e9 na\u00efve \u65e5\u672c \U0001f600 \u2014 end",
    ]
    assert_rows_equal_oracle(texts, minhash.MinHashParams(scheme=scheme))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_linux_doc_texts_equal_datasketch(scheme):
    paths = sorted(glob.glob(LINUX_DOC_GLOB, recursive=True))[::400][:6]
    if not paths:
        pytest.skip("linux-doc is not installed")
    texts = [gzip.open(path).read().decode("utf-8", errors="replace") for path in paths]
    assert_rows_equal_oracle(texts, minhash.MinHashParams(scheme=scheme))


def test_docs_without_words_get_the_empty_signature():
    result = minhash.signatures(["", "   ", "\u3000"], minhash.MinHashParams(num_perm=16))
    assert (result == minhash.EMPTY_HASH_VALUE).all()


def test_shingles_reference():
    assert minhash.shingles("", 5) == []
    assert minhash.shingles(" \u00a0 ", 5) == []
    assert minhash.shingles("b  c\u3000d", 5) == [b"b c d"]
    assert minhash.shingles("a b c d", 2) == [b"a b", b"b c", b"c d"]
    assert minhash.shingles("\u00e9t\u00e9", 1) == ["\u00e9t\u00e9".encode()]


def test_shingle_hash_is_32_bit_and_order_sensitive():
    values = {minhash.shingle_hash(s) for s in [b"a b", b"b a", b"ab", b"a", b""]}
    assert len(values) == 5
    assert all(0 <= v < 2**32 for v in values)


def test_permutations_equal_datasketch():
    for scheme in SCHEMES if DATASKETCH_HAS_SCHEMES else ["legacy"]:
        kwargs = {"scheme": scheme} if DATASKETCH_HAS_SCHEMES else {}
        a, b = minhash.permutations(minhash.MinHashParams(num_perm=32, seed=7, scheme=scheme))
        expected_a, expected_b = datasketch.MinHash(num_perm=32, seed=7, **kwargs).permutations
        np.testing.assert_array_equal(a, expected_a)
        np.testing.assert_array_equal(b, expected_b)


def test_arrow_inputs_match_python_list():
    texts = ["alpha beta gamma delta epsilon zeta", "", "\u65e5\u672c \u8a9e", "one two"] * 3
    params = minhash.MinHashParams(num_perm=32, ngram=3)
    expected = minhash.signatures(texts, params)
    np.testing.assert_array_equal(minhash.signatures(pa.array(texts, type=pa.string()), params), expected)
    np.testing.assert_array_equal(minhash.signatures(pa.array(texts, type=pa.large_string()), params), expected)
    # A slice keeps the parent's buffers and a non-zero offset.
    np.testing.assert_array_equal(minhash.signatures(pa.array(texts).slice(2, 5), params), expected[2:7])
    chunked = pa.chunked_array([pa.array(texts[:5]), pa.array(texts[5:])])
    np.testing.assert_array_equal(minhash.signatures(chunked, params), expected)
    assert minhash.signatures([], params).shape == (0, 32)
    assert minhash.signatures(pa.chunked_array([], type=pa.string()), params).shape == (0, 32)


def test_single_thread_equals_default_threads():
    texts = [f"document {i} " + "shared words across every document " * (i % 7) for i in range(200)]
    params = minhash.MinHashParams(num_perm=64)
    np.testing.assert_array_equal(
        minhash.signatures(texts, params, num_threads=1), minhash.signatures(texts, params)
    )


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="null"):
        minhash.signatures(pa.array(["a", None]))
    with pytest.raises(TypeError, match="string"):
        minhash.signatures(pa.array([1, 2]))


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"num_perm": 0}, ValueError),
        ({"ngram": 0}, ValueError),
        ({"seed": -1}, ValueError),
        ({"seed": 2**32}, ValueError),
        ({"scheme": "affine64"}, ValueError),
        ({"num_perm": 12.0}, TypeError),
        ({"ngram": True}, TypeError),
    ],
)
def test_params_are_validated(kwargs, error):
    with pytest.raises(error, match="MinHashParams"):
        minhash.MinHashParams(**kwargs)


@pytest.mark.parametrize("threshold, num_perm", [(0.5, 128), (0.8, 128), (0.9, 256)])
def test_lsh_params_match_datasketch(threshold, num_perm):
    lsh = datasketch.MinHashLSH(threshold=threshold, num_perm=num_perm)
    assert minhash.lsh_params(threshold, num_perm) == (lsh.b, lsh.r)


def test_lsh_params_are_validated():
    with pytest.raises(ValueError, match="threshold"):
        minhash.lsh_params(1.0, 128)


def test_identical_signatures_give_identical_band_keys():
    texts = ["the quick brown fox jumps over the lazy dog " * 3, "something else entirely, five words or more"]
    params = minhash.MinHashParams(num_perm=128)
    signatures = minhash.signatures(texts + texts[:1], params)
    bands, rows = minhash.lsh_params(0.8, params.num_perm)
    keys = minhash.band_hashes(signatures, bands, rows)
    assert keys.dtype == np.uint64 and keys.shape == (3, bands)
    np.testing.assert_array_equal(keys[0], keys[2])
    assert not np.any(keys[0] == keys[1])


@settings(max_examples=50, deadline=None)
@given(
    base=st.lists(st.integers(0, 2**32 - 1), min_size=24, max_size=24),
    changed_column=st.integers(0, 23),
    delta=st.integers(1, 2**32 - 1),
)
def test_band_keys_change_exactly_in_the_changed_band(base, changed_column, delta):
    bands, rows = 6, 4
    original = np.array([base], dtype=np.uint64)
    changed = original.copy()
    changed[0, changed_column] = (int(changed[0, changed_column]) + delta) % 2**32
    keys = minhash.band_hashes(np.vstack([original, changed, original]), bands, rows)
    np.testing.assert_array_equal(keys[0], keys[2])
    differing = np.flatnonzero(keys[0] != keys[1])
    np.testing.assert_array_equal(differing, [changed_column // rows])


def test_band_keys_differ_across_bands_for_equal_values():
    keys = minhash.band_hashes(np.zeros((1, 8), dtype=np.uint64), bands=4, rows=2)
    assert len(set(keys[0].tolist())) == 4


def test_band_hashes_are_validated():
    with pytest.raises(ValueError, match="bands"):
        minhash.band_hashes(np.zeros((2, 8), dtype=np.uint64), bands=3, rows=3)
    with pytest.raises(ValueError, match="2-D"):
        minhash.band_hashes(np.zeros(8, dtype=np.uint64), bands=2, rows=4)
