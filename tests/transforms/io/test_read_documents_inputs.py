"""ReadDocuments on the Beam side over awkward inputs: names that are not UTF-8, a FIFO,
a corrupt gzip file. Every record is accounted for and every string is valid UTF-8."""

from __future__ import annotations

import gzip
import os
import struct

import apache_beam as beam
import pyarrow as pa
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from corpusmill.schemas.config import InputConfig
from corpusmill.transforms.io.beam.files import list_inputs
from corpusmill.transforms.io.beam.read import ReadDocuments
from corpusmill.transforms.io.inputs import plan_read_tasks


def test_read_documents_accounts_for_awkward_inputs(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    raw_root = os.fsencode(root)
    with open(raw_root + b"/r\xe9sum\xe9.txt", "wb") as handle:
        handle.write(b"a document with a latin-1 name")
    (root / "ok.jsonl").write_text('{"text": "ok doc"}\n{"text": "second"}\n')
    os.mkfifo(root / "x.jsonl")
    member = gzip.compress(b'{"text": "one"}\n{"text": "two"}\n{"text": "three"}\n')
    crc = struct.unpack("<I", member[-8:-4])[0]
    (root / "crc.jsonl.gz").write_bytes(member[:-8] + struct.pack("<I", crc ^ 1) + member[-4:])
    (root / "empty.jsonl.zst").write_bytes(b"")

    listed = list_inputs([str(root)])
    tasks = plan_read_tasks(listed.files, 1 << 20)
    with test_pipeline.TestPipeline(runner="FnApiRunner") as pipeline:
        read = pipeline | ReadDocuments(tasks, InputConfig())
        ids = read.docs | "Ids" >> beam.FlatMap(lambda b: b.column("id").to_pylist())
        assert_that(ids, equal_to(["ok.jsonl#0", "ok.jsonl#1", "r\\xe9sum\\xe9.txt"]), label="Kept")
        reasons = read.rejected | "Reasons" >> beam.FlatMap(
            lambda b: list(zip(b.column("reason").to_pylist(), b.column("source").to_pylist())))
        assert_that(reasons, equal_to([("corrupt_file", "crc.jsonl.gz")] * 3 + [
            ("empty_file", "empty.jsonl.zst"), ("not_a_regular_file", "x.jsonl")]), label="Rejected")
        records = read.stats | "Records" >> beam.FlatMap(lambda s: [(f["relpath"], f["records"]) for f in s["files"]])
        assert_that(records, equal_to([("crc.jsonl.gz", 3), ("empty.jsonl.zst", 1), ("ok.jsonl", 2),
                                       ("r\\xe9sum\\xe9.txt", 1), ("x.jsonl", 1)]), label="Counted")
        invalid = read.docs | "Invalid" >> beam.FlatMap(lambda b: pa.Table.from_batches([b]).validate(full=True) or [])
        assert_that(invalid, equal_to([]), label="ValidUtf8")
