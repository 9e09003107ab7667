"""Tests of corpusmill.transforms.decompose.tokenizer: offline loading, batching, round trips."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import tiktoken
import tiktoken.load
from corpusmill.transforms.decompose import tokenizer as tokenizer_module
from corpusmill.transforms.decompose.bpe_openai_encoder import BpeOpenaiTokenizer
from corpusmill.transforms.decompose.tokenizer import (
    HFTokenizer,
    TiktokenTokenizer,
    Tokenizer,
    encode_documents,
    find_tiktoken_file,
    load_tokenizer,
    read_tiktoken_ranks,
)
from hypothesis import given, settings
from hypothesis import strategies as st


@pytest.mark.parametrize("encoder, kind", [("tiktoken", TiktokenTokenizer), ("bpe-openai", BpeOpenaiTokenizer)])
def test_cl100k_loads_offline_with_known_ids(encoder, kind):
    cl100k = load_tokenizer("tiktoken:cl100k_base", encoder=encoder)
    assert isinstance(cl100k, kind)
    assert isinstance(cl100k, Tokenizer)
    assert cl100k.name == "tiktoken:cl100k_base"
    assert cl100k.encoder.startswith(f"{encoder} ")
    assert cl100k.eot_id == 100257
    assert cl100k.vocab_size == 100277
    # Ids published for cl100k_base; a wrong rank file or regex changes them.
    (ids,) = cl100k.encode_batch(["hello world"])
    assert ids.dtype == np.int32
    assert ids.tolist() == [15339, 1917]


@pytest.mark.parametrize("encoder", ["tiktoken", "bpe-openai"])
def test_o200k_loads_offline_with_known_ids(encoder):
    o200k = load_tokenizer("tiktoken:o200k_base", encoder=encoder)
    assert o200k.eot_id == 199999
    assert o200k.vocab_size == 200019
    assert o200k.encode_batch(["hello world"])[0].tolist() == [24912, 2375]


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
def test_definitions_match_installed_tiktoken(monkeypatch, name):
    """Our regex and special tokens equal tiktoken's own definition of the encoding."""
    import tiktoken_ext.openai_public as openai_public

    # Stop tiktoken's constructor before it downloads the rank file.
    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", lambda *args, **kwargs: {})
    official = getattr(openai_public, name)()
    ours = tokenizer_module._TIKTOKEN_DEFINITIONS[name]
    assert ours.pat_str == official["pat_str"]
    assert ours.special_tokens == official["special_tokens"]


def test_local_rank_file_parses_like_tiktoken(tmp_path, monkeypatch):
    """The gzip reader gives what tiktoken's own loader gives on the plain file."""
    packaged = find_tiktoken_file("cl100k_base")
    assert packaged is not None
    plain = tmp_path / "cl100k_base.tiktoken"
    data = packaged.read_bytes()
    plain.write_bytes(gzip.decompress(data) if packaged.suffix == ".gz" else data)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # no copy into tiktoken's cache
    expected_hash = tokenizer_module._TIKTOKEN_DEFINITIONS["cl100k_base"].sha256
    assert read_tiktoken_ranks(packaged, expected_hash) == tiktoken.load.load_tiktoken_bpe(
        str(plain), expected_hash
    )


def test_env_folder_comes_first_and_hash_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv(tokenizer_module.TIKTOKEN_DIR_ENV, str(tmp_path))
    fake = tmp_path / "cl100k_base.tiktoken"
    fake.write_bytes(b"aGVsbG8= 0\n")
    assert find_tiktoken_file("cl100k_base") == fake
    with pytest.raises(ValueError, match="SHA-256"):
        read_tiktoken_ranks(fake, tokenizer_module._TIKTOKEN_DEFINITIONS["cl100k_base"].sha256)


def test_missing_encoding_error_says_how_to_fix(monkeypatch):
    monkeypatch.setattr(tokenizer_module, "find_tiktoken_file", lambda name: None)

    def offline(name):
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    tokenizer_module._load_tiktoken_encoding.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="bpe-openai"):
            load_tokenizer("tiktoken:cl100k_base", encoder="tiktoken")
    finally:
        tokenizer_module._load_tiktoken_encoding.cache_clear()


def test_round_trip_on_real_documents(cl100k, real_texts):
    texts = real_texts[:60]
    for text, ids in zip(texts, cl100k.encode_batch(texts)):
        assert cl100k.decode(ids) == text


def test_threads_do_not_change_tokens(real_texts):
    cl100k = load_tokenizer("tiktoken:cl100k_base", encoder="tiktoken")
    texts = real_texts[:40]
    single = TiktokenTokenizer(cl100k.encoding, cl100k.name, num_threads=1).encode_batch(texts)
    threaded = TiktokenTokenizer(cl100k.encoding, cl100k.name, num_threads=4).encode_batch(texts)
    assert all(np.array_equal(a, b) for a, b in zip(single, threaded))
    ordinary = cl100k.encoding.encode_ordinary_batch(texts)
    assert all(a.tolist() == b for a, b in zip(threaded, ordinary))


def test_special_token_text_is_ordinary_text(cl100k):
    text = "before <|endoftext|> after"
    (ids,) = cl100k.encode_batch([text])
    assert cl100k.eot_id not in ids.tolist()
    assert cl100k.decode(ids) == text


def test_encode_documents_appends_eot(cl100k):
    with_eot = encode_documents(cl100k, ["one document", ""])
    without = encode_documents(cl100k, ["one document", ""], append_eot=False)
    assert [a[-1] for a in with_eot] == [cl100k.eot_id, cl100k.eot_id]
    assert [len(a) for a in with_eot] == [len(b) + 1 for b in without]
    assert all(a.dtype == np.int32 for a in with_eot)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200))
def test_round_trip_any_text(text):
    tokenizer = load_tokenizer("tiktoken:cl100k_base")
    (ids,) = tokenizer.encode_batch([text])
    # Lone surrogates cannot be encoded as UTF-8; tiktoken replaces them.
    if text.encode("utf-8", "surrogatepass") == text.encode("utf-8", "replace"):
        assert tokenizer.decode(ids) == text


@pytest.mark.parametrize("spec", ["cl100k_base", "tiktoken", "tiktoken:", "spm:/x.model"])
def test_malformed_spec_is_rejected(spec):
    with pytest.raises(ValueError, match="tokenizer spec"):
        load_tokenizer(spec)


# -- Hugging Face tokenizers ------------------------------------------------


@pytest.fixture(scope="module")
def hf_tokenizer_json(tmp_path_factory, real_texts) -> str:
    """A small byte-level BPE trained here on real text (no Hub download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(real_texts[:50], trainer=trainer)
    path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
    tokenizer.save(str(path))
    return str(path)


def test_hf_file_loads_and_round_trips(hf_tokenizer_json, real_texts):
    tokenizer = load_tokenizer(f"hf:{hf_tokenizer_json}")
    assert isinstance(tokenizer, HFTokenizer)
    assert tokenizer.eot_id == 0  # first special token of the trainer
    assert tokenizer.vocab_size == 600
    texts = real_texts[:20]
    encoded = tokenizer.encode_batch(texts)
    assert all(ids.dtype == np.int32 for ids in encoded)
    assert [tokenizer.decode(ids) for ids in encoded] == texts
    documents = encode_documents(tokenizer, texts[:2])
    assert [d[-1] for d in documents] == [0, 0]


def test_hf_folder_spec(hf_tokenizer_json):
    folder = hf_tokenizer_json.rsplit("/", 1)[0]
    assert load_tokenizer(f"hf:{folder}").vocab_size == 600


def test_hf_missing_eot_is_reported(hf_tokenizer_json):
    tokenizer_module._load_hf_tokenizer.cache_clear()
    with pytest.raises(ValueError, match="eot_token"):
        load_tokenizer(f"hf:{hf_tokenizer_json}", eot_token="<not-there>")


def test_hf_missing_file():
    with pytest.raises(FileNotFoundError):
        load_tokenizer("hf:/no/such/tokenizer.json")


def test_hf_hub_name_offline_says_network_is_needed(monkeypatch):
    from tokenizers import Tokenizer

    def offline(name, *args, **kwargs):
        raise OSError("cannot reach the Hub")

    monkeypatch.setattr(Tokenizer, "from_pretrained", staticmethod(offline))
    tokenizer_module._load_hf_tokenizer.cache_clear()
    with pytest.raises(RuntimeError, match="network"):
        load_tokenizer("hf:some-org/some-model")
