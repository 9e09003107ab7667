"""The encoders of a tiktoken spec: bpe-openai gives tiktoken's exact tokens, in and out of the stage."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sys

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing import test_pipeline
from hypothesis import given, settings
from hypothesis import strategies as st

from corpusmill.schemas.config import ConfigError, DecomposeConfig
from corpusmill.transforms.decompose.beam import DecomposeDocuments
from corpusmill.transforms.decompose.bpe_openai_encoder import BpeOpenaiTokenizer, chunk_bounds
from corpusmill.transforms.decompose.stats import ShardDecomposeStats, merge_decompose_stats
from corpusmill.transforms.decompose.tokenizer import (
    TiktokenTokenizer,
    encode_document_batches,
    load_tokenizer,
)
from corpusmill.transforms.io.shard_files import ParquetOptions
from corpusmill.transforms.stage import StageContext

ENCODINGS = ["cl100k_base", "o200k_base"]

# Sentences in several scripts, written for these tests.
MULTILINGUAL = [
    "Der Kernel lädt das Modul erst, wenn das Gerät erkannt wurde; danach läuft es weiter.",
    "Le pilote n'écrit qu'après l'initialisation : « ça marche », dit-elle à l'équipe.",
    "Ядро загружает модуль только после обнаружения устройства. Это нормально?",
    "Η μονάδα φορτώνεται μόνο όταν εντοπιστεί η συσκευή.",
    "لا يتم تحميل الوحدة إلا بعد اكتشاف الجهاز. ١٢٣٤٥٦ ٧٨٩",
    "המודול נטען רק לאחר שהתקן זוהה.",
    "デバイスが検出された後にのみ、カーネルはモジュールを読み込みます。",
    "内核只有在检测到设备后才会加载模块。繁體中文：核心載入模組。",
    "장치가 감지된 후에만 커널이 모듈을 로드합니다.",
    "डिवाइस का पता चलने के बाद ही कर्नेल मॉड्यूल लोड करता है। १२३",
    "เคอร์เนลจะโหลดโมดูลหลังจากตรวจพบอุปกรณ์แล้วเท่านั้น",
    "Emoji 👩‍💻🧑🏽‍🔧 🇫🇷🇯🇵 ❤️‍🔥 and combining marks: e\u0301 a\u0308\u0304 Z̤͔ͧ̑̓ä͖̭̈̇",
    "Whitespace:\u00a0\u2003\u3000\t\x0b\x0c\u2028\u2029\x85 runs" + " " * 300 + "\n\n\r\n\t \n" * 40 + "end",
    "Contractions: it's, IT'S, we'LL, they'Ve, ſ 'ſ K'\u212a’s — and <|endoftext|> <|fim_prefix|> as text.",
    "Long words: " + "a" * 20_000 + " " + "日本語" * 3_000 + " " + "ab1" * 5_000 + " " + "!" * 4_000,
    "Numbers 1234567890 ½ Ⅻ ١٢٣ 𝟘𝟙𝟚 and math 𝑥² + 𝑦² = 𝑧²",
]


def generated_texts(count: int, seed: int = 0) -> list[str]:
    """Texts drawn from many Unicode blocks, whitespace kinds and repeats (no lone surrogates)."""
    rng = random.Random(seed)
    blocks = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF),
              (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x3040, 0x30FF), (0x4E00, 0x9FFF),
              (0xAC00, 0xD7A3), (0x1F300, 0x1FAFF), (0x2000, 0x206F), (0xFE00, 0xFE0F), (0x1D400, 0x1D7FF),
              (0x20000, 0x2A6DF), (0xE000, 0xF8FF)]
    spaces = [" ", "  ", "\t", "\n", "\r\n", "\r", "\x0b", "\x0c", "\x85", "\u00a0", "\u2003", "\u2028",
              "\u3000", "\u200b", "\ufeff", " \n", "\n\n\n"]
    texts = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 40)):
            roll = rng.random()
            if roll < 0.55:
                low, high = rng.choice(blocks)
                parts.append("".join(chr(rng.randint(low, high)) for _ in range(rng.randint(1, 12))))
            elif roll < 0.9:
                parts.append(rng.choice(spaces))
            else:
                parts.append(rng.choice(["'s", "'LL", "'ſ", "'\u212a", "x" * 700, " " * 500, "0" * 90]))
        texts.append("".join(parts))
    return texts


@pytest.fixture(scope="module")
def sample(real_texts) -> list[str]:
    """Real documents, the multilingual sentences and generated edge cases."""
    return real_texts[::3] + MULTILINGUAL + generated_texts(300) + ["", " ", "\n"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_bpe_openai_tokens_equal_tiktoken_encode_ordinary(encoding, sample):
    fast = load_tokenizer(f"tiktoken:{encoding}", encoder="bpe-openai", num_threads=1)
    reference = load_tokenizer(f"tiktoken:{encoding}", encoder="tiktoken", num_threads=2)
    assert (fast.name, fast.eot_id, fast.vocab_size) == (reference.name, reference.eot_id, reference.vocab_size)
    expected = reference.encoding.encode_ordinary_batch(sample, num_threads=2)
    got = fast.encode_batch(sample)
    mismatches = [text[:80] for text, a, b in zip(sample, got, expected) if a.tolist() != b]
    assert not mismatches
    assert all(a.dtype == np.int32 for a in got)
    assert fast.decode(got[len(sample) // 2]) == sample[len(sample) // 2]


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=120))
def test_bpe_openai_equals_tiktoken_on_any_text(text):
    fast = load_tokenizer("tiktoken:cl100k_base", encoder="bpe-openai", num_threads=1)
    reference = load_tokenizer("tiktoken:cl100k_base", encoder="tiktoken")
    # Lone surrogates are replaced by both, as tiktoken's encode_ordinary does.
    assert fast.encode_batch([text])[0].tolist() == reference.encoding.encode_ordinary(text)


def test_auto_picks_bpe_openai_and_tiktoken_can_be_forced():
    auto = load_tokenizer("tiktoken:cl100k_base")
    assert isinstance(auto, BpeOpenaiTokenizer) and auto.encoder.startswith("bpe-openai ")
    forced = load_tokenizer("tiktoken:cl100k_base", encoder="tiktoken")
    assert isinstance(forced, TiktokenTokenizer) and forced.encoder.startswith("tiktoken ")


def test_auto_falls_back_to_tiktoken_without_bpe_openai(monkeypatch):
    # None in sys.modules is how Python marks a package that cannot be imported.
    monkeypatch.setitem(sys.modules, "bpe_openai", None)
    tokenizer = load_tokenizer("tiktoken:cl100k_base")
    assert isinstance(tokenizer, TiktokenTokenizer)
    assert tokenizer.encode_batch(["hello world"])[0].tolist() == [15339, 1917]
    with pytest.raises(ValueError, match="not installed"):
        load_tokenizer("tiktoken:cl100k_base", encoder="bpe-openai")


def test_an_encoder_that_cannot_encode_the_spec_is_refused():
    with pytest.raises(ValueError, match="checked token-identical"):
        load_tokenizer("tiktoken:r50k_base", encoder="bpe-openai")
    with pytest.raises(ValueError, match="unknown encoder"):
        load_tokenizer("tiktoken:cl100k_base", encoder="fastest")
    with pytest.raises(ConfigError, match="decompose.encoder"):
        DecomposeConfig(tokenizer="hf:/x/tokenizer.json", encoder="tiktoken")
    with pytest.raises(ConfigError, match="decompose.encoder"):
        DecomposeDocuments.check(DecomposeConfig(tokenizer="tiktoken:r50k_base", encoder="bpe-openai"))


def test_chunks_are_contiguous_and_balanced():
    assert chunk_bounds([], 4) == []
    assert chunk_bounds([5], 4) == [(0, 1)]
    assert chunk_bounds([10, 10, 10, 10], 2) == [(0, 2), (2, 4)]
    bounds = chunk_bounds([1, 1, 100, 1, 1, 1], 4)
    assert bounds[0][0] == 0 and bounds[-1][1] == 6
    assert all(a < b for a, b in bounds) and all(b == c for (_, b), (c, _) in zip(bounds, bounds[1:]))


def test_worker_processes_give_the_same_tokens_and_survive_a_dead_worker(sample):
    local = load_tokenizer("tiktoken:cl100k_base", encoder="bpe-openai", num_threads=1)
    pooled = BpeOpenaiTokenizer("cl100k_base", "tiktoken:cl100k_base", {"<|endoftext|>": 100257},
                                num_processes=2, min_parallel_chars=0, start_after_chars=0)
    batches = [sample[i:i + 40] for i in range(0, len(sample), 40)]
    expected = [local.encode_batch(batch) for batch in batches]
    try:
        got = list(encode_document_batches(pooled, batches, append_eot=False))
        assert pooled.processes_running
        assert [[a.tolist() for a in batch] for batch in got] == [[a.tolist() for a in batch] for batch in expected]
        # A worker killed mid-run: the batch is encoded here instead, with the same tokens.
        os.kill(pooled._pool.submit(os.getpid).result(), signal.SIGKILL)
        again = pooled.encode_batch(batches[0])
        assert [a.tolist() for a in again] == [a.tolist() for a in expected[0]]
        assert not pooled.processes_running
    finally:
        pooled.close()


def test_a_small_job_never_starts_workers(real_texts):
    tokenizer = load_tokenizer("tiktoken:cl100k_base", encoder="bpe-openai", num_threads=2)
    list(tokenizer.encode_batches([real_texts[:100], real_texts[100:200]]))
    assert not tokenizer.processes_running


def run_stage(elements, config: DecomposeConfig, staging) -> dict:
    """Runs the stage on the FnApiRunner; returns its stats dict and the written files' sha256."""
    stats_path = staging / "_stats.json"
    pipeline = test_pipeline.TestPipeline(runner="FnApiRunner")
    decomposed = pipeline | "CreateShards" >> beam.Create(elements) | "Decompose" >> DecomposeDocuments(
        config, StageContext(1, True, str(staging), ParquetOptions()))
    _ = decomposed.stats | "WriteStats" >> beam.Map(lambda stats: stats_path.write_text(json.dumps(stats)))
    pipeline.run().wait_until_finish()
    files = {path.relative_to(staging).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
             for path in sorted(staging.rglob("*.parquet"))}
    return {"stats": json.loads(stats_path.read_text()), "files": files}


def test_stage_buckets_are_byte_identical_and_the_stats_name_the_encoder(tmp_path, real_texts):
    texts = real_texts[:40] + MULTILINGUAL
    documents = pa.table({"id": [f"doc-{i:03d}" for i in range(len(texts))], "text": texts})
    runs = {}
    for encoder in ("tiktoken", "bpe-openai"):
        config = DecomposeConfig(encoder=encoder, num_threads=1, tokenize_batch_docs=16, min_exp=6, max_exp=10)
        runs[encoder] = run_stage([(0, documents)], config, tmp_path / encoder)
    assert runs["tiktoken"]["files"] and runs["tiktoken"]["files"] == runs["bpe-openai"]["files"]
    assert runs["tiktoken"]["stats"]["encoder"].startswith("tiktoken ")
    assert runs["bpe-openai"]["stats"]["encoder"].startswith("bpe-openai ")
    without_encoder = {k: v for k, v in runs["tiktoken"]["stats"].items() if k != "encoder"}
    assert without_encoder == {k: v for k, v in runs["bpe-openai"]["stats"].items() if k != "encoder"}


def test_merged_stats_list_every_encoder_that_ran():
    config = DecomposeConfig()
    records = [ShardDecomposeStats(shard=shard, config=config, tokenizer=config.tokenizer, encoder=encoder).to_dict()
               for shard, encoder in enumerate(["bpe-openai 0.1.4", "tiktoken 0.14.0", "bpe-openai 0.1.4"])]
    assert merge_decompose_stats(records)["encoder"] == "bpe-openai 0.1.4 + tiktoken 0.14.0"
    assert merge_decompose_stats(records[:1])["encoder"] == "bpe-openai 0.1.4"
    assert merge_decompose_stats([{**records[0], "encoder": None}])["encoder"] is None
