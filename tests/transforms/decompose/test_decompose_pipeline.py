"""DecomposeDocuments on the real FnApiRunner, real sample documents and the real cl100k tokenizer."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from corpusmill.schemas.config import CurriculumSectionConfig, DecomposeConfig
from corpusmill.transforms.common import METRICS_NAMESPACE, shard_of, sort_table
from corpusmill.transforms.decompose.beam import DecomposeDocuments
from corpusmill.transforms.decompose.beam.decompose_documents import BUCKET_SCHEMA, bucket_output
from corpusmill.transforms.decompose.decomposition import decompose_documents, decomposition_summary
from corpusmill.transforms.decompose.stats import (
    ShardDecomposeStats,
    curriculum_config,
    curriculum_spec,
    merge_decompose_stats,
)
from corpusmill.transforms.decompose.tokenizer import encode_documents, load_tokenizer
from corpusmill.transforms.io.shard_files import ParquetOptions
from corpusmill.transforms.stage import StageContext

NUM_SHARDS = 3
NUM_DOCS = 300
SAMPLE = Path(__file__).resolve().parents[3] / "jobs" / "sample" / "linux-doc-sample.jsonl.zst"


def sample_records(limit: int) -> list[dict]:
    """The first records of the bundled sample (real Linux kernel documentation)."""
    records = []
    with zstandard.ZstdDecompressor().stream_reader(SAMPLE.open("rb")) as reader:
        for line in io.TextIOWrapper(reader, encoding="utf-8"):
            records.append(json.loads(line))
            if len(records) == limit:
                break
    return records


@pytest.fixture(scope="module")
def documents() -> pa.Table:
    """Real documents of the bundled sample, in the public document columns."""
    records = sample_records(NUM_DOCS)
    return pa.Table.from_pylist(
        [{"id": r["id"], "text": r["text"], "source": r["source"]} for r in records]
    )


def shard_elements(documents: pa.Table, num_shards: int) -> list[tuple[int, pa.Table]]:
    """(shard, documents sorted by id) per non-empty shard, as ResolveDuplicateIds yields them."""
    shards = shard_of(documents.column("id"), num_shards)
    elements = []
    for shard in range(num_shards):
        table = documents.filter(pa.array(shards == shard))
        if table.num_rows:
            elements.append((shard, sort_table(table, ["id"])))
    return elements


def run_stage(elements, config: DecomposeConfig, staging: Path, num_shards: int) -> dict:
    """Runs the stage; returns its shard records, its one stats dict and the counters."""
    results = staging / "_results.json"
    expected_paths = [
        f"{bucket_output(k)}/part-{shard:05d}-of-{num_shards:05d}.parquet"
        for k in config.exponents
        for shard, _ in elements
    ]
    pipeline = test_pipeline.TestPipeline(runner="FnApiRunner")
    context = StageContext(num_shards, num_shards == 1, str(staging), ParquetOptions())
    decomposed = (
        pipeline
        | "CreateShards" >> beam.Create(elements)
        | "Decompose" >> DecomposeDocuments(config, context)
    )
    assert_that(decomposed.docs | "DocIds" >> beam.Map(lambda e: e[1].column("id").to_pylist()),
                equal_to([table.column("id").to_pylist() for _, table in elements]), label="DocsPassThrough")
    assert_that(
        decomposed.shards | "ShardPaths" >> beam.Map(lambda record: record["path"]),
        equal_to(expected_paths),
        label="EveryBucketOfEveryShard",
    )
    _ = (
        (decomposed.shards, decomposed.stats)
        | "AllResults" >> beam.Flatten()
        | "CollectResults" >> beam.combiners.ToList()
        | "WriteResults" >> beam.Map(lambda rows: results.write_text(json.dumps(rows, allow_nan=False)))
    )
    result = pipeline.run()
    result.wait_until_finish()
    counters = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + int(value)
    rows = json.loads(results.read_text())
    (stats,) = [r for r in rows if r.get("kind") != "shard"]
    return {"shards": [r for r in rows if r.get("kind") == "shard"], "stats": stats, "counters": counters}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiktoken:cl100k_base", num_threads=2)


@pytest.fixture(scope="module")
def config() -> DecomposeConfig:
    return DecomposeConfig(num_threads=2, tokenize_batch_docs=64)


@pytest.fixture(scope="module")
def staged(tmp_path_factory, documents, config) -> dict:
    staging = tmp_path_factory.mktemp("staging")
    run = run_stage(shard_elements(documents, NUM_SHARDS), config, staging, NUM_SHARDS)
    return {"dir": staging, **run}


@pytest.fixture(scope="module")
def kernel(documents, tokenizer, config):
    """The kernels run directly on the same documents, in id order."""
    ordered = sort_table(documents, ["id"])
    tokens = encode_documents(tokenizer, ordered.column("text").to_pylist())
    return decompose_documents(tokens, ordered.column("id").to_pylist(), config)


def read_bucket(staging: Path, exponent: int) -> list[tuple[str, int, tuple[int, ...]]]:
    rows = []
    for path in sorted((staging / bucket_output(exponent)).glob("*.parquet")):
        table = pq.read_table(path)
        assert table.schema.equals(BUCKET_SCHEMA)
        rows += zip(
            table.column("doc_id").to_pylist(),
            table.column("offset").to_pylist(),
            map(tuple, table.column("tokens").to_pylist()),
        )
    return rows


def test_bucket_files_hold_exactly_the_kernel_decomposition(staged, kernel, config):
    for exponent in config.exponents:
        pieces = kernel.buckets[exponent]
        expected = sorted(
            zip(pieces.doc_ids.tolist(), pieces.offsets.tolist(), map(tuple, pieces.tokens.tolist()))
        )
        written = read_bucket(staged["dir"], exponent)
        assert sorted(written) == expected, exponent
        assert all(len(tokens) == config.piece_length(exponent) for _, _, tokens in written)


def test_files_are_sorted_and_hold_only_their_shards_documents(staged):
    for record in staged["shards"]:
        path = staged["dir"] / record["path"]
        data = path.read_bytes()
        assert record["rows"] == pq.read_metadata(path).num_rows
        assert record["bytes"] == len(data)
        assert record["sha256"] == hashlib.sha256(data).hexdigest()
        table = pq.read_table(path)
        keys = list(zip(table.column("doc_id").to_pylist(), table.column("offset").to_pylist()))
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        assert set(shard_of(table.column("doc_id"), NUM_SHARDS).tolist()) <= {record["shard"]}


def test_token_accounting(staged, kernel):
    merged = staged["stats"]
    written_tokens = sum(
        record["rows"] * merged["buckets"][str(int(record["output"][-5:]).bit_length() - 1)]["tokens_per_sequence"]
        for record in staged["shards"]
    )
    assert merged["documents"] == NUM_DOCS
    assert merged["input_tokens"] == kernel.total_tokens
    assert merged["kept_tokens"] + merged["dropped_tokens"] == merged["input_tokens"]
    assert merged["kept_tokens"] == kernel.kept_tokens == written_tokens
    assert 0.5 < merged["token_retention"] < 1.0
    counters = staged["counters"]
    assert counters["decompose_documents"] == NUM_DOCS
    assert counters["decompose_tokens_in"] == merged["input_tokens"]
    assert counters["decompose_tokens_kept"] + counters["decompose_tokens_dropped"] == counters["decompose_tokens_in"]
    assert counters["decompose_documents_too_short"] == merged["documents_without_pieces"] > 0
    for exponent, bucket in merged["buckets"].items():
        assert counters[f"decompose_sequences_{bucket['dir']}"] == bucket["sequences"]


def test_merged_stats_sum_the_shards(staged, kernel):
    merged = staged["stats"]
    assert merged["shards"] == NUM_SHARDS and "timings_ms" not in merged
    # The shards record the curriculum, so merging needs no second argument.
    assert merged["curriculum"]["odds"] == "grow_p2"
    assert [b["sequences"] for b in merged["curriculum"]["buckets"]] == [
        len(kernel.buckets[k]) for k in range(8, 14)]
    json.dumps(merged, allow_nan=False)
    summary = decomposition_summary(kernel)
    for key in ("pieces_per_bucket", "tokens_per_bucket", "document_length_histogram"):
        assert merged[key] == summary[key], key
    for key in ("average_context_length", "attention_cost", "baseline_attention_cost",
                "baseline_average_context_length", "attention_cost_ratio"):
        assert merged[key] == pytest.approx(summary[key], rel=1e-12), key
    # Each shard is chunked on its own, so the fraction differs from one global
    # concatenation only at shard ends.
    assert merged["baseline_cross_document_attention_fraction"] == pytest.approx(
        summary["baseline_cross_document_attention_fraction"], abs=0.02)


def test_one_shard_reproduces_the_kernel_summary_and_is_byte_identical_across_runs(
    tmp_path, documents, tokenizer
):
    config = DecomposeConfig(
        mode="cap", num_threads=2, tokenize_batch_docs=100, max_exp=12,
        curriculum=CurriculumSectionConfig(odds="custom", custom_odds=(1, 2, 3, 4, 5), tokens_per_step=8192),
    )
    elements = shard_elements(documents, 1)
    first = run_stage(elements, config, tmp_path / "first", 1)
    second = run_stage(elements, config, tmp_path / "second", 1)

    files = sorted(p.relative_to(tmp_path / "first") for p in (tmp_path / "first").rglob("*.parquet"))
    assert len(files) == 5
    for relative in files:
        assert (tmp_path / "first" / relative).read_bytes() == (tmp_path / "second" / relative).read_bytes()
    assert sorted(r["sha256"] for r in first["shards"]) == sorted(r["sha256"] for r in second["shards"])

    merged = first["stats"]
    ordered = elements[0][1]
    kernel = decompose_documents(
        encode_documents(tokenizer, ordered.column("text").to_pylist()), ordered.column("id").to_pylist(), config)
    summary = decomposition_summary(kernel)
    for key, value in summary.items():
        if isinstance(value, float):
            assert merged[key] == pytest.approx(value, rel=1e-12), key
        else:
            assert merged[key] == value, key
    spec = merged["curriculum"]
    assert spec["odds"] == [1, 2, 3, 4, 5] and spec["tokens_per_step"] == 8192
    assert spec == curriculum_spec(config, merged["pieces_per_bucket"], curriculum_config(config))
    assert [b["sequences"] for b in spec["buckets"]] == [len(kernel.buckets[k]) for k in range(8, 13)]


def test_merge_rejects_mixed_configs(staged, config):
    records = [ShardDecomposeStats(shard=i, config=config, tokenizer=config.tokenizer).to_dict() for i in range(2)]
    other = ShardDecomposeStats(shard=99, config=DecomposeConfig(seed=7), tokenizer=config.tokenizer).to_dict()
    assert merge_decompose_stats(records)["shards"] == 2
    with pytest.raises(ValueError, match="shard 99"):
        merge_decompose_stats([*records, other])
    with pytest.raises(ValueError, match="no 'decompose_stats'"):
        merge_decompose_stats(staged["shards"])


def test_pieces_keep_the_order_documents_arrive_in(tmp_path, documents, tokenizer):
    # An ordered stage upstream hands documents in its own order; buckets keep it.
    config = DecomposeConfig(num_threads=2, tokenize_batch_docs=50, mode="cap")
    (shard, table), = shard_elements(documents, 1)
    reversed_table = table.take(pa.array(range(table.num_rows - 1, -1, -1)))
    run_stage([(shard, reversed_table)], config, tmp_path, 1)
    arrival = {doc_id: i for i, doc_id in enumerate(reversed_table.column("id").to_pylist())}
    for exponent in config.exponents:
        keys = [(arrival[doc_id], offset) for doc_id, offset, _ in read_bucket(tmp_path, exponent)]
        assert keys == sorted(keys) and len(keys) > 0
