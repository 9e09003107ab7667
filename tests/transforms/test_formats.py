"""Reader kernels without Beam: damage handling per format and field mapping."""

from __future__ import annotations

import gzip
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq

from corpusmill.transforms.formats import BatchBuilder, FieldMap, read_file
from corpusmill.transforms.inputs import InputFile, detect_format, plan_read_tasks


def _read(path, fmt, compression="none", fields=FieldMap(), max_text_bytes=10**7, batch_rows=1000):
    file = InputFile(str(path), path.name, path.stat().st_size, fmt, compression)
    builder = BatchBuilder(fields, max_text_bytes, batch_rows)
    out = list(read_file(file, lambda p: open(p, "rb"), builder)) + list(builder.take(final=True))
    docs = pa.Table.from_batches([b for t, b in out if t == "docs"]) if any(t == "docs" for t, _ in out) else None
    rejected = [r for t, b in out if t == "rejected" for r in b.to_pylist()]
    stats = next(b for t, b in out if t == "stats")
    return docs, rejected, stats


def _corrupt_first_row_group(path):
    """Overwrites the page header of the first row group's text column chunk."""
    meta = pq.ParquetFile(path).metadata
    column = meta.row_group(0).column(1)
    data = bytearray(path.read_bytes())
    start = column.data_page_offset
    data[start : start + 32] = b"\xde\xad\xbe\xef" * 8
    path.write_bytes(bytes(data))


def test_corrupt_parquet_row_group_is_one_dead_letter_and_other_groups_are_read(tmp_path, real_records):
    path = tmp_path / "docs.parquet"
    records = [{"id": r["id"], "text": r["text"]} for r in real_records[:30]]
    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=10, compression="zstd")
    _corrupt_first_row_group(path)

    docs, rejected, stats = _read(path, "parquet")
    assert [r["reason"] for r in rejected] == ["corrupt_row_group"]
    assert rejected[0]["locator"] == "row group 0 (rows 0..9)"
    assert docs.column("id").to_pylist() == [r["id"] for r in records[10:]]
    assert stats.records == 21 and stats.rows_lost_in_damage == 10


def test_parquet_maps_fields_and_keeps_unknown_columns_in_meta(tmp_path, real_records):
    path = tmp_path / "docs.parquet"
    rows = [{"doc": r["text"], "key": i, "link": f"https://example.org/{i}", "when": r["timestamp"],
             "lang": "en"} for i, r in enumerate(real_records[:3])]
    pq.write_table(pa.Table.from_pylist(rows), path)
    docs, rejected, _ = _read(path, "parquet", fields=FieldMap(text="doc", id="key", url="link", timestamp="when"))
    assert rejected == []
    assert docs.column("id").to_pylist() == ["0", "1", "2"]
    assert docs.column("url").to_pylist()[1] == "https://example.org/1"
    assert json.loads(docs.column("meta")[0].as_py()) == {"lang": "en"}
    assert docs.column("timestamp")[0].as_py().isoformat().startswith(real_records[0]["timestamp"][:19])
    assert docs.column("source").to_pylist() == ["docs.parquet"] * 3


def test_invalid_timestamp_and_id_are_rejected_with_the_record(tmp_path):
    path = tmp_path / "a.jsonl"
    lines = [{"id": "ok", "text": "fine text", "timestamp": "2024-01-02T03:04:05Z"},
             {"id": "bad-ts", "text": "some text", "timestamp": "yesterday"},
             {"id": ["a"], "text": "list id"},
             {"text": "derived id"}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    docs, rejected, stats = _read(path, "jsonl")
    assert docs.column("id").to_pylist() == ["ok", "a.jsonl#3"]
    assert [(r["reason"], r["locator"], r["record_index"]) for r in rejected] == [
        ("invalid_timestamp", "line 2", 1), ("invalid_id", "line 3", 2)]
    assert rejected[0]["id"] == "bad-ts" and "yesterday" in rejected[0]["excerpt"]
    assert stats.records == 4


def test_excerpt_is_at_most_one_kilobyte(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"id": "x", "text": "' + "\u00e9".encode() * 5000 + b'\n')
    _, rejected, _ = _read(path, "jsonl")
    assert rejected[0]["reason"] == "malformed_json"
    assert len(rejected[0]["excerpt"].encode("utf-8")) <= 1024 + 2


def test_text_file_digest_covers_the_whole_file(tmp_path, real_records):
    path = tmp_path / "doc.rst.gz"
    path.write_bytes(gzip.compress(real_records[0]["text"].encode()))
    docs, _, first = _read(path, "text", "gzip")
    assert docs.column("id").to_pylist() == ["doc.rst"]
    path.write_bytes(gzip.compress((real_records[0]["text"] + "\n.").encode()))
    _, _, second = _read(path, "text", "gzip")
    assert first.digest != second.digest and len(first.digest) == 32


def test_format_detection_and_task_planning():
    assert detect_format("a/b.jsonl.zst") == ("jsonl", "zstd")
    assert detect_format("a/b.ndjson.gz") == ("jsonl", "gzip")
    assert detect_format("a/b.parquet") == ("parquet", "none")
    assert detect_format("a/b.rst.gz") == ("text", "gzip")
    assert detect_format("a/b.png") is None
    files = [InputFile(f"/x/{i}.txt", f"{i}.txt", 400, "text", "none") for i in range(10)]
    tasks = plan_read_tasks(files, task_bytes=1000)
    assert [len(t) for t in tasks] == [2, 2, 2, 2, 2]
    assert [f for t in tasks for f in t] == files
