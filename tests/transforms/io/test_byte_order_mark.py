"""A leading UTF-8 byte-order mark is stripped by every reader, whichever validation path runs."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corpusmill.schemas.documents import DOCUMENT_BATCH_SCHEMA
from corpusmill.transforms.io.formats import BatchBuilder, FieldMap, read_file
from corpusmill.transforms.io.inputs import InputFile, detect_format

BOM = b"\xef\xbb\xbf"


def _read(path, columnar=True, batch_rows=100):
    fmt, compression = detect_format(str(path))
    file = InputFile(str(path), path.name, path.stat().st_size, fmt, compression)
    builder = BatchBuilder(FieldMap(), 50, batch_rows, columnar=columnar)
    out = list(read_file(file, lambda p: open(p, "rb"), builder)) + list(builder.take(final=True))
    docs = pa.Table.from_batches([b for t, b in out if t == "docs"], schema=DOCUMENT_BATCH_SCHEMA)
    rejected = [r for t, b in out if t == "rejected" for r in b.to_pylist()]
    stats = next(s for t, s in out if t == "stats")
    return docs.to_pylist(), rejected, (stats.records, stats.blank_lines)


def test_the_first_record_of_a_file_with_a_bom_is_kept_whatever_the_other_lines(tmp_path):
    clean = tmp_path / "clean.jsonl"
    clean.write_bytes(BOM + b'{"id":"c0","text":"clean file first doc"}\n{"id":"c1","text":"second"}\n')
    # A list in meta sends the block through the per-line path.
    mixed = tmp_path / "list_meta.jsonl"
    mixed.write_bytes(BOM + b'{"id":"e0","text":"valid first doc"}\n{"id":"e1","text":"other","extra":[1,2]}\n')
    for columnar in (True, False):
        docs, rejected, _ = _read(clean, columnar)
        assert [d["id"] for d in docs] == ["c0", "c1"] and rejected == []
        docs, rejected, _ = _read(mixed, columnar)
        assert [d["id"] for d in docs] == ["e0", "e1"] and rejected == []


def test_bom_in_compressed_jsonl_and_in_text_documents(tmp_path):
    gz = tmp_path / "a.jsonl.gz"
    gz.write_bytes(gzip.compress(BOM + b'{"id":"g0","text":"gzipped"}\n'))
    assert [d["id"] for d in _read(gz)[0]] == ["g0"]
    text = tmp_path / "doc.md.zst"
    text.write_bytes(zstandard.ZstdCompressor().compress(BOM + "caf\u00e9 notes".encode()))
    docs, rejected, _ = _read(text)
    assert [(d["id"], d["text"]) for d in docs] == [("doc.md", "caf\u00e9 notes")] and rejected == []
    only_bom = tmp_path / "bom.jsonl"
    only_bom.write_bytes(BOM)
    assert _read(only_bom) == ([], [], (0, 0))


def test_only_the_leading_bom_is_stripped(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(BOM + b'{"text":"first"}\n' + BOM + b'{"text":"second"}\n')
    docs, rejected, _ = _read(path)
    assert [d["text"] for d in docs] == ["first"]
    assert [(r["reason"], r["record_index"]) for r in rejected] == [("malformed_json", 1)]


_LINES = st.one_of(
    st.fixed_dictionaries({"text": st.text(alphabet="ab\u00e9 ", max_size=6)},
                          optional={"id": st.text(alphabet="xyz", min_size=1, max_size=2),
                                    "extra": st.one_of(st.integers(0, 3), st.lists(st.integers(0, 2), max_size=2))}
                          ).map(json.dumps),
    st.sampled_from(["", "not json", "[1]", '{"text": "tail"} junk']))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_LINES, min_size=1, max_size=8), st.booleans(), st.integers(1, 5))
def test_a_bom_changes_nothing_on_either_path(tmp_path, lines, columnar, batch_rows):
    content = "\n".join(lines).encode()
    (tmp_path / "plain").mkdir(exist_ok=True)
    (tmp_path / "marked").mkdir(exist_ok=True)
    plain, marked = tmp_path / "plain" / "a.jsonl", tmp_path / "marked" / "a.jsonl"
    plain.write_bytes(content)
    marked.write_bytes(BOM + content)
    expected = _read(plain, columnar, batch_rows)
    got = _read(marked, columnar, batch_rows)
    assert got == expected
    assert _read(marked, not columnar, batch_rows) == expected
