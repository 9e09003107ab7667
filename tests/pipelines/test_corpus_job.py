"""Pipeline tests: the real FnApiRunner over real documents and every kind of bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from corpusmill.pipelines.corpus_job import plan_job, run_job
from corpusmill.schemas.config import load_job
from corpusmill.schemas.manifest import stable_view
from corpusmill.transforms.io.beam.read import ReadDocuments
from corpusmill.transforms.common import shard_of
from corpusmill.transforms.io.beam.shards import ShardBatches
from corpus_files import SAMPLE, jsonl_bytes, sample_records, snapshot_parquet_digests


def _config(inputs, out, **sections):
    spec = {"input": {"paths": [str(p) for p in inputs]}, "output": {"path": str(out)}}
    for key, value in sections.items():
        section, name = key.split("__")
        spec.setdefault(section, {})[name] = value
    return load_job(spec)


def _read_output(out: Path, name: str):
    tables = [pq.read_table(p) for p in sorted((out / name).glob("*.parquet"))]
    return [row for t in tables for row in t.to_pylist()]


def test_every_bad_input_becomes_a_counted_dead_letter(bad_corpus, tmp_path):
    out = tmp_path / "out"
    # Dedup off: the fixture reuses real texts, and this test is about the readers.
    manifest = run_job(_config([bad_corpus["root"]], out, input__max_text_bytes=bad_corpus["max_text_bytes"],
                               dedup__enabled=False))

    counts = manifest["counts"]
    assert counts["rejected_by_reason"] == {
        "duplicate_id": 1,
        "empty_text": 1,
        "invalid_utf8": 3,  # raw bad byte, lone surrogate escape, latin-1 text file
        "malformed_json": 1,
        "missing_text": 2,  # absent field and null
        "not_an_object": 1,
        "text_too_long": 1,
        "truncated_file": 2,  # gzip and zstd cut short
        "unreadable_file": 2,  # not gzip at all, Parquet with no footer
    }
    assert counts["balanced"] and counts["input_records"] == counts["kept"] + counts["rejected"]
    assert manifest["input"]["blank_lines_skipped"] == 1
    assert (out / "_SUCCESS").exists()

    docs = _read_output(out, "docs")
    rejected = _read_output(out, "rejected")
    assert len(docs) == counts["kept"] and len(rejected) == counts["rejected"]
    truncated = [r for r in rejected if r["reason"] == "truncated_file"]
    assert {r["source"] for r in truncated} == {"truncated.jsonl.gz", "truncated.jsonl.zst"}
    assert set(docs[0]) == {"id", "text", "source", "url", "timestamp", "meta"}
    ids = [d["id"] for d in docs]
    assert len(ids) == len(set(ids))
    assert "docs/readme.rst" in ids and "docs/notes.md" in ids
    for row in rejected:
        assert row["reason"] and row["source"] and row["locator"] and row["detail"]
        assert len(row["excerpt"].encode("utf-8")) <= 1024 + 3  # one replacement char may widen a cut byte
    dup = next(r for r in rejected if r["reason"] == "duplicate_id")
    assert dup["source"] == "mixed.jsonl" and "first seen in mixed.jsonl record 0" in dup["detail"]


def test_truncated_files_keep_the_records_before_the_damage(bad_corpus, tmp_path, real_records):
    out = tmp_path / "out"
    run_job(_config([bad_corpus["root"] / "truncated.jsonl.gz", bad_corpus["root"] / "truncated.jsonl.zst"], out,
                    dedup__enabled=False))
    kept = {d["id"] for d in _read_output(out, "docs")}
    gz_ids = [r["id"] for r in real_records[20:40]]
    zst_ids = [r["id"] for r in real_records[40:50]]
    kept_gz = [i for i in gz_ids if i in kept]
    kept_zst = [i for i in zst_ids if i in kept]
    # A prefix of each file survives, never a record after the damage.
    assert 0 < len(kept_gz) < len(gz_ids) and kept_gz == gz_ids[: len(kept_gz)]
    assert 0 < len(kept_zst) < len(zst_ids) and kept_zst == zst_ids[: len(kept_zst)]


def _file_digests(out: Path) -> dict[str, str]:
    return snapshot_parquet_digests(out)


def test_same_input_and_config_give_byte_identical_snapshots(tmp_path):
    out = tmp_path / "out"
    config = _config([SAMPLE], out, output__num_shards=3, output__overwrite=True, input__batch_rows=300)
    first = run_job(config)
    first_files = _file_digests(out)
    second = run_job(config)
    assert _file_digests(out) == first_files
    assert stable_view(second) == stable_view(first)
    assert json.loads((out / "manifest.json").read_text()) == second
    # docs, duplicates, rejected, index, 6 buckets
    assert len(first_files) == 3 * (4 + 6) and not list(out.glob("_staging-*"))

    # Every row sits in the shard its id hashes to, sorted, and the manifest lists true hashes.
    for shard in first["outputs"]["docs"]["shards"]:
        table = pq.read_table(out / shard["path"])
        ids = table.column("id").to_pylist()
        assert ids == sorted(ids)
        number = int(shard["path"].split("part-")[1][:5])
        assert set(shard_of(ids, 3).tolist()) <= {number}
        assert hashlib.sha256((out / shard["path"]).read_bytes()).hexdigest() == shard["sha256"]
        assert table.num_rows == shard["rows"]


def test_shard_bytes_do_not_depend_on_input_format_batching_or_read_path(tmp_path):
    # The same 400 real documents as one JSONL file (columnar block parsing,
    # one task and one shard: no shuffle), as Parquet in small row groups, and
    # as JSONL again in tiny batches: the Arrow chunks reaching the writer
    # differ every time, the docs shard's bytes must not.
    # Sorted by id, as many corpora are: the writer then has no sort to do, and
    # the chunks of the read reach it unchanged.
    records = sorted(sample_records(400), key=lambda r: r["id"])
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_bytes(jsonl_bytes(records))
    parquet = tmp_path / "docs.parquet"
    pq.write_table(pa.Table.from_pylist(records), parquet, row_group_size=37)
    digests = []
    for name, source, batch_rows in (("a", jsonl, 256), ("b", parquet, 256), ("c", jsonl, 7)):
        manifest = run_job(_config([source], tmp_path / name, input__batch_rows=batch_rows,
                                   output__row_group_rows=150, dedup__enabled=False, decompose__enabled=False))
        assert manifest["counts"]["kept"] == 400
        digests.append([s["sha256"] for s in manifest["outputs"]["docs"]["shards"]])
    assert digests[0] == digests[1] == digests[2]


def test_single_partition_shortcut_and_sharded_run_keep_the_same_documents(tmp_path):
    single = run_job(_config([SAMPLE], tmp_path / "one"))
    sharded = run_job(_config([SAMPLE], tmp_path / "many", output__num_shards=4))
    assert single["execution"]["partitioning"]["mode"] == "single"
    assert sharded["execution"]["partitioning"]["mode"] == "sharded"
    one = sorted((d["id"], d["text"]) for d in _read_output(tmp_path / "one", "docs"))
    many = sorted((d["id"], d["text"]) for d in _read_output(tmp_path / "many", "docs"))
    assert one == many and len(one) == single["counts"]["kept"] > 1000
    # Dedup decisions do not depend on how the corpus was sharded.
    assert single["counts"]["duplicates_by_kind"] == sharded["counts"]["duplicates_by_kind"]
    assert single["counts"]["duplicates"] > 0


def test_existing_snapshot_is_not_overwritten_without_asking(tmp_path, real_records):
    source = tmp_path / "in.jsonl"
    source.write_bytes(jsonl_bytes(real_records[:5]))
    out = tmp_path / "out"
    run_job(_config([source], out))
    from corpusmill.transforms.io.beam.snapshot import OutputExistsError

    with pytest.raises(OutputExistsError, match="overwrite"):
        run_job(_config([source], out))


def test_read_and_shard_transforms_on_test_pipeline(tmp_path, real_records):
    source = tmp_path / "docs.jsonl"
    records = real_records[:30]
    source.write_bytes(jsonl_bytes(records))
    plan = plan_job(_config([source], tmp_path / "unused", input__batch_rows=7))
    with test_pipeline.TestPipeline(runner="FnApiRunner") as pipeline:
        read = pipeline | ReadDocuments(plan.tasks, plan.config.input)
        batch_sizes = read.docs | "BatchSizes" >> beam.Map(lambda b: b.num_rows)
        assert_that(batch_sizes, equal_to([7, 7, 7, 7, 2]), label="BatchesNotDocuments")
        shards = read.docs | ShardBatches("id", 4)
        shard_ids = shards | "ShardIds" >> beam.FlatMap(
            lambda kv: [(kv[0], i) for i in kv[1].column("id").to_pylist()])
        expected = [(int(s), r["id"]) for s, r in zip(shard_of([r["id"] for r in records], 4), records)]
        assert_that(shard_ids, equal_to(expected), label="EveryIdInItsShard")
