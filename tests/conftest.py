"""Shared fixtures: small corpora made of real text, including every kind of bad record."""

from __future__ import annotations

import glob
import gzip
import io
import json
import sysconfig
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from corpus_files import jsonl_bytes, sample_records

@pytest.fixture(scope="session")
def real_records() -> list[dict]:
    """Sixty real documents from the bundled sample."""
    return sample_records(60)


@pytest.fixture()
def bad_corpus(tmp_path: Path, real_records: list[dict]) -> dict:
    """A folder with one example of every kind of bad input, among good real documents.

    Returns a dict with the folder and what the run must report.
    """
    root = tmp_path / "in"
    root.mkdir()
    good = real_records[:20]
    max_text_bytes = max(len(r["text"].encode("utf-8")) for r in real_records) + 1
    lines = [json.dumps(r, ensure_ascii=False).encode("utf-8") for r in good]
    # Each bad line is inserted between good ones.
    bad_lines = {
        "malformed_json": b'{"id": "broken", "text": "unterminated',
        "missing_text": json.dumps({"id": "no-text", "title": "x"}).encode(),
        "null_text": json.dumps({"id": "null-text", "text": None}).encode(),
        "empty_text": json.dumps({"id": "blank", "text": " \n\t "}).encode(),
        "invalid_utf8": b'{"id": "bad-bytes", "text": "caf\xe9 au lait"}',
        "lone_surrogate": b'{"id": "surrogate", "text": "half a pair \\ud800 here"}',
        "too_long": json.dumps({"id": "huge", "text": "x" * (max_text_bytes + 1)}).encode(),
        "duplicate_id": json.dumps({"id": good[0]["id"], "text": "a second record with the first id"}).encode(),
        "not_object": b'["a", "list"]',
    }
    mixed = lines[:10] + list(bad_lines.values()) + [b""] + lines[10:]
    (root / "mixed.jsonl").write_bytes(b"\n".join(mixed) + b"\n")

    more = real_records[20:40]
    full = gzip.compress(jsonl_bytes(more))
    (root / "truncated.jsonl.gz").write_bytes(full[: len(full) * 2 // 3])
    # Written the way a streaming writer does: a block flushed per record.
    compressor = zstandard.ZstdCompressor().compressobj()
    parts = []
    for record in real_records[40:50]:
        parts.append(compressor.compress(jsonl_bytes([record])))
        parts.append(compressor.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))
    parts.append(compressor.flush())
    zfull = b"".join(parts)
    (root / "truncated.jsonl.zst").write_bytes(zfull[: len(zfull) // 2])
    (root / "garbage.jsonl.gz").write_bytes(b"this is not gzip at all")

    table = pa.Table.from_pylist(real_records[50:60])
    pq.write_table(table, root / "good.parquet", row_group_size=5)
    (root / "corrupt.parquet").write_bytes(b"PAR1" + b"\x00" * 100)

    texts = root / "docs"
    texts.mkdir()
    (texts / "readme.rst").write_text(real_records[0]["text"], encoding="utf-8")
    (texts / "notes.md.gz").write_bytes(gzip.compress(real_records[1]["text"].encode("utf-8")))
    (texts / "latin1.txt").write_bytes("na\xefve caf\xe9".encode("latin-1"))
    return {"root": root, "max_text_bytes": max_text_bytes}


# Real documents and a real tokenizer for the kernel tests.
_LINUX_DOC = "/usr/share/doc/linux-doc-6.1/Documentation/**/*.rst.gz"


def _read_corpus(limit: int) -> list[str]:
    """Real documents: the Linux kernel docs when installed, else Python's stdlib sources."""
    files = sorted(glob.glob(_LINUX_DOC, recursive=True))
    if files:
        # Every k-th file spreads the sample over the whole documentation tree.
        step = max(1, len(files) // limit)
        return [
            gzip.open(path, "rt", encoding="utf-8", errors="replace").read()
            for path in files[::step][:limit]
        ]
    stdlib = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    return [path.read_text(encoding="utf-8", errors="replace") for path in stdlib[:limit]]


@pytest.fixture(scope="session")
def real_texts() -> list[str]:
    """About 300 real documents, from a few hundred to tens of thousands of tokens."""
    return [text for text in _read_corpus(300) if text.strip()]


@pytest.fixture(scope="session")
def cl100k():
    """The real cl100k_base tokenizer, loaded offline."""
    from corpusmill.transforms.decompose.tokenizer import load_tokenizer

    return load_tokenizer("tiktoken:cl100k_base", num_threads=2)


@pytest.fixture(scope="session")
def real_documents(real_texts, cl100k):
    """The real documents tokenized with cl100k_base, end-of-text id appended."""
    from corpusmill.transforms.decompose.tokenizer import encode_documents

    return encode_documents(cl100k, real_texts)
