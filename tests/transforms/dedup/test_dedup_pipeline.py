"""Deduplicate on the FnApiRunner over the bundled sample (Linux docs of kernels 6.1 and 6.12).

The sample has 1,337 paths in both versions: 836 with identical texts (exact
duplicates) and 501 that differ (mostly near duplicates).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import pickle
import tempfile
import uuid
from collections import defaultdict
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that

from corpusmill.schemas.config import DedupConfig
from corpusmill.schemas.documents import DOCUMENT_BATCH_SCHEMA, DUPLICATE_SCHEMA
from corpusmill.transforms.common import shard_of
from corpusmill.transforms.dedup.beam import Deduplicate
from corpusmill.transforms.dedup.normalize import normalize_text
from corpusmill.transforms.io.shard_files import ParquetOptions
from corpusmill.transforms.stage import StageContext

NUM_SHARDS = 4
SAMPLE = Path(__file__).resolve().parents[3] / "jobs" / "sample" / "linux-doc-sample.jsonl.zst"


# The stage writes index/ into the staging folder: a temporary one, removed when the tests end.
_STAGING = tempfile.TemporaryDirectory(prefix="corpusmill-dedup-test-")


def context(num_shards: int, single_partition: bool = False) -> StageContext:
    return StageContext(num_shards, single_partition, staging_dir=_STAGING.name, parquet=ParquetOptions())


def sample_records() -> list[dict]:
    with zstandard.ZstdDecompressor().stream_reader(SAMPLE.open("rb")) as reader:
        return [json.loads(line) for line in io.TextIOWrapper(reader, encoding="utf-8")]


@pytest.fixture(scope="module")
def sample_shards(tmp_path_factory) -> dict:
    """The sample as DOCUMENT_BATCH_SCHEMA tables, one Parquet file per shard."""
    records = sample_records()
    table = pa.Table.from_pydict({
        "id": [r["id"] for r in records],
        "text": [r["text"] for r in records],
        "source": [r["source"] for r in records],
        "url": [None] * len(records),
        "timestamp": [dt.datetime.fromisoformat(r["timestamp"]) for r in records],
        "meta": [None] * len(records),
        "_origin_file": ["linux-doc-sample.jsonl.zst"] * len(records),
        "_origin_index": list(range(len(records))),
    }, schema=DOCUMENT_BATCH_SCHEMA)
    return write_shards(table, tmp_path_factory.mktemp("shards"))


def write_shards(table: pa.Table, root: Path) -> dict:
    shards = shard_of(table.column("id"), NUM_SHARDS)
    for shard in range(NUM_SHARDS):
        pq.write_table(table.filter(pa.array(shards == shard)), root / f"{shard}.parquet")
    docs = {r["id"]: r for r in table.select(["id", "text", "source", "timestamp"]).to_pylist()}
    return {"root": root, "docs": docs}


@pytest.fixture(scope="module")
def doubled_shards(sample_shards, tmp_path_factory) -> dict:
    """The sample and a copy of every document under a fresh id (``copy/`` + id)."""
    table = pa.concat_tables([pq.read_table(sample_shards["root"] / f"{s}.parquet").cast(DOCUMENT_BATCH_SCHEMA)
                              for s in range(NUM_SHARDS)])
    copy = table.set_column(0, DOCUMENT_BATCH_SCHEMA.field("id"),
                            pa.array(["copy/" + i for i in table.column("id").to_pylist()], pa.string()))
    return write_shards(pa.concat_tables([table, copy]).cast(DOCUMENT_BATCH_SCHEMA),
                        tmp_path_factory.mktemp("doubled"))


def _load_shard(shard: int, root: str):
    # Tables are read inside the pipeline: a 24 MB beam.Create would be pickled
    # and compressed into the pipeline proto several times.
    return shard, pq.read_table(f"{root}/{shard}.parquet").cast(DOCUMENT_BATCH_SCHEMA)


def _dump(value, folder: str, name: str):
    with open(f"{folder}/{name}-{uuid.uuid4().hex}.pkl", "wb") as handle:
        pickle.dump(value, handle)


def _balanced(stats_list):
    (stats,) = stats_list
    documents = stats["documents"]
    assert documents["input"] == documents["kept"] + documents["duplicates"], documents


def run_dedup(sample_shards, tmp_path: Path, single_partition: bool = False, **config) -> dict:
    """Runs Deduplicate and returns its collected outputs."""
    out = tmp_path / uuid.uuid4().hex
    out.mkdir()
    with test_pipeline.TestPipeline(runner="FnApiRunner") as pipeline:
        shards = (
            pipeline
            | "Shards" >> beam.Create(list(range(NUM_SHARDS)), reshuffle=False)
            | "LoadShards" >> beam.Map(_load_shard, str(sample_shards["root"]))
        )
        result = shards | "Dedup" >> Deduplicate(DedupConfig(**config), context(NUM_SHARDS, single_partition),
                                                 max_rounds=6)
        assert_that(result.stats, _balanced, label="StatsBalance")
        for name in ("docs", "duplicates", "stats"):
            _ = getattr(result, name) | f"Collect{name.title()}" >> beam.Map(_dump, str(out), name)
    collected = defaultdict(list)
    for path in out.glob("*.pkl"):
        collected[path.name.split("-")[0]].append(pickle.loads(path.read_bytes()))
    (stats,) = collected["stats"]
    duplicates = pa.Table.from_batches(collected["duplicates"], schema=DUPLICATE_SCHEMA).to_pylist()
    kept = [doc_id for _, table in collected["docs"] for doc_id in table.column("id").to_pylist()]
    assert sorted(shard for shard, _ in collected["docs"]) == list(range(NUM_SHARDS))
    return {"stats": stats, "duplicates": duplicates, "kept": kept}


def _path(doc_id: str) -> str:
    return doc_id.split("/Documentation/", 1)[1]


def clusters_of(result) -> dict[str, frozenset]:
    clusters = defaultdict(set)
    for row in result["duplicates"]:
        clusters[row["cluster_id"]].update((row["id"], row["representative_id"]))
    return {cluster_id: frozenset(members) for cluster_id, members in clusters.items()}


def check_accounting(result, docs):
    kept, dup_ids = result["kept"], [row["id"] for row in result["duplicates"]]
    assert len(kept) == len(set(kept)) and len(dup_ids) == len(set(dup_ids))
    assert set(kept).isdisjoint(dup_ids)
    assert set(kept) | set(dup_ids) == set(docs)
    assert {row["representative_id"] for row in result["duplicates"]} <= set(kept)
    stats = result["stats"]
    assert stats["documents"] == {"input": len(docs), "kept": len(kept), "duplicates": len(dup_ids)}


def expected_representative(members, docs, policy):
    def preference(doc_id):
        doc = docs[doc_id]
        key = {
            "longest": (-len(doc["text"]),),
            "newest": (-doc["timestamp"].timestamp(),),
            "source_priority": (0 if doc["source"] == "linux-doc-6.12" else 1,),
            "smallest_id": (),
        }[policy]
        return key + (doc_id,)

    return min(members, key=preference)


def check_keep_policy(result, docs, policy):
    for cluster_id, members in clusters_of(result).items():
        assert cluster_id == min(members)
        representatives = {row["representative_id"] for row in result["duplicates"] if row["id"] in members}
        assert representatives == {expected_representative(members, docs, policy)}, (policy, members)


@pytest.fixture(scope="module")
def default_run(sample_shards, tmp_path_factory):
    """Default config: exact + near, exact verification, keep longest, components auto."""
    return run_dedup(sample_shards, tmp_path_factory.mktemp("default"))


def test_finds_exact_and_near_duplicates_and_accounts_for_every_document(default_run, sample_shards):
    docs = sample_shards["docs"]
    stats, duplicates = default_run["stats"], default_run["duplicates"]
    check_accounting(default_run, docs)
    by_kind = stats["duplicates_by_kind"]
    # 836 same-path identical texts plus 44 identical arm/ -> arch/arm/ moves.
    assert by_kind["exact"] >= 880
    assert 200 <= by_kind["near"] <= 516
    for row in duplicates:
        if row["kind"] == "exact":
            assert row["similarity"] == 1.0
        else:
            assert 0.5 <= row["similarity"] <= 1.0  # the estimate may reach 1.0 for a tiny edit
    exact_pairs = [r for r in duplicates if r["kind"] == "exact"]
    assert all(normalize_text(docs[r["id"]]["text"]) == normalize_text(docs[r["representative_id"]]["text"])
               for r in exact_pairs)
    # Files moved from arm/ to arch/arm/ are found by content alone: their ids share nothing.
    moved = [r for r in duplicates if _path(r["id"]) != _path(r["representative_id"])]
    assert any("arm/" in _path(r["id"]) for r in moved)
    assert stats["verification"] == "exact" and stats["candidates"]["rejected"] >= 0
    assert stats["components"]["mode"] == "single" and stats["components"]["requested"] == "auto"
    assert stats["components"]["reason"].startswith("auto: ") and "<=" in stats["components"]["reason"]
    assert stats["clusters"]["count"] == len(clusters_of(default_run))
    assert sum(int(size) * count for size, count in stats["clusters"]["size_histogram"].items()) \
        == stats["documents"]["duplicates"] + stats["clusters"]["count"]
    top = stats["top_clusters"]
    assert len(top) == 20 and top[0]["size"] >= top[-1]["size"]
    assert all(0 < len(c["excerpt"]) <= 200 for c in top)
    check_keep_policy(default_run, docs, "longest")


def test_manifest_records_the_banding_and_the_candidates_verified(default_run):
    stats = default_run["stats"]
    lsh = stats["lsh"]
    assert (lsh["banding"], lsh["banding_requested"], lsh["bands"], lsh["rows"]) == ("recall", "auto", 16, 6)
    assert lsh["max_miss_rate"] == 0.01 and lsh["expected_recall_at_threshold"] >= 1 - lsh["max_miss_rate"]
    candidates = stats["candidates"]
    assert candidates["pairs_verified"] == candidates["passed"] + candidates["rejected"]
    assert candidates["passed"] > 0 and stats["duplicates_by_kind"]["near"] > 0


def test_distributed_components_give_the_same_clusters(default_run, sample_shards, tmp_path):
    # Cluster membership does not depend on the keep policy, so this run also
    # checks smallest_id.
    result = run_dedup(sample_shards, tmp_path, components="distributed", keep="smallest_id")
    assert clusters_of(result) == clusters_of(default_run)
    components = result["stats"]["components"]
    assert components["mode"] == "distributed" and components["converged"]
    assert components["rounds_to_converge"] is not None
    check_accounting(result, sample_shards["docs"])
    check_keep_policy(result, sample_shards["docs"], "smallest_id")


def test_forced_single_worker_components(default_run, sample_shards, tmp_path):
    result = run_dedup(sample_shards, tmp_path, components="single", keep="newest", verify="signature")
    assert result["stats"]["components"]["mode"] == "single"
    assert result["stats"]["verification"] == "signature"
    check_accounting(result, sample_shards["docs"])
    # The 6.1 package is two days newer than the 6.12 one in this sample.
    check_keep_policy(result, sample_shards["docs"], "newest")
    assert all(row["representative_id"].startswith("linux-6.1/") for row in result["duplicates"]
               if not row["id"].startswith("linux-6.1/"))


def test_source_priority_keeps_the_preferred_source(sample_shards, tmp_path):
    result = run_dedup(sample_shards, tmp_path, keep="source_priority", source_priority=("*-6.12", "linux-doc-*"),
                       near=False)
    check_accounting(result, sample_shards["docs"])
    check_keep_policy(result, sample_shards["docs"], "source_priority")
    assert {row["kind"] for row in result["duplicates"]} == {"exact"}
    assert result["stats"]["verification"] == "not_run"


def transform_labels(transform: beam.PTransform) -> list[str]:
    """Full labels of every step a transform expands to (the pipeline is built, not run)."""
    pipeline = beam.Pipeline()
    _ = pipeline | "NoShards" >> beam.Create([]) | "Dedup" >> transform
    labels = []

    class Labels(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node):
            labels.append(node.full_label)

        def enter_composite_transform(self, node):
            labels.append(node.full_label)

    pipeline.visit(Labels())
    return labels


def test_single_partition_resolves_auto_components_when_built(default_run, sample_shards, tmp_path):
    def distributed_steps(labels):
        return [label for label in labels if "Round" in label or "RouteEdges" in label or "FinalStars" in label]

    assert distributed_steps(transform_labels(Deduplicate(DedupConfig(), context(1), max_rounds=6)))
    assert distributed_steps(transform_labels(Deduplicate(DedupConfig(), context(1, True), max_rounds=6))) == []
    result = run_dedup(sample_shards, tmp_path, single_partition=True)
    assert clusters_of(result) == clusters_of(default_run)
    components = result["stats"]["components"]
    assert (components["mode"], components["requested"]) == ("single", "auto")
    assert "single-partition" in components["reason"]
    check_accounting(result, sample_shards["docs"])


def _without_copies(clusters: dict[str, frozenset]) -> set[frozenset]:
    """Clusters with each copy named as its original; a document and its copy alone drop out."""
    named = (frozenset(i.removeprefix("copy/") for i in members) for members in clusters.values())
    return {members for members in named if len(members) > 1}


def test_copies_do_not_add_near_duplicate_candidates(default_run, doubled_shards, tmp_path):
    result = run_dedup(doubled_shards, tmp_path)
    check_accounting(result, doubled_shards["docs"])
    # Every copy joins its original's cluster, and the clusters are the sample's own.
    assert _without_copies(clusters_of(result)) == _without_copies(clusters_of(default_run))
    assert len(result["kept"]) == len(default_run["kept"])
    # The exact stage joins the copies; near-duplicate candidates come from the
    # distinct texts only, so twice the documents check about as many pairs.
    # (Without exact dedup every copy is a candidate too: the next test.)
    once = default_run["stats"]["candidates"]["pairs_verified"]
    twice = result["stats"]["candidates"]["pairs_verified"]
    assert 0.8 * once <= twice <= 1.2 * once, (once, twice)


def test_without_exact_dedup_copies_are_near_duplicates(default_run, doubled_shards, tmp_path):
    result = run_dedup(doubled_shards, tmp_path, exact=False)
    check_accounting(result, doubled_shards["docs"])
    cluster_of = {i: c for c, members in clusters_of(result).items() for i in members}
    originals = [i for i in doubled_shards["docs"] if not i.startswith("copy/")]
    assert all(cluster_of.get(i) is not None and cluster_of.get(i) == cluster_of.get("copy/" + i)
               for i in originals)
    # Nothing else joins the copies here, so each is a near-duplicate candidate of its original.
    once = default_run["stats"]["candidates"]["pairs_verified"]
    assert result["stats"]["candidates"]["pairs_verified"] > 1.5 * once


def test_documents_whose_keys_collide_are_kept_and_counted(sample_shards, tmp_path, monkeypatch):
    # Real ids never share 64 bits in a test corpus; 12 low bits make collisions
    # common while every key keeps its shard (key mod 4 = the id's shard).
    from corpusmill.transforms.common import document_keys
    from corpusmill.transforms.dedup import features

    monkeypatch.setattr(features, "document_keys", lambda ids: document_keys(ids) & 0xFFF)
    result = run_dedup(sample_shards, tmp_path)
    check_accounting(result, sample_shards["docs"])
    keys = {}
    for doc_id in sorted(sample_shards["docs"]):
        keys.setdefault(int(document_keys([doc_id])[0] & 0xFFF), []).append(doc_id)
    left_out = {doc_id for ids in keys.values() for doc_id in ids[1:]}
    assert result["stats"]["key_collisions"] == len(left_out) > 100
    # Left out of dedup means kept as they are: never removed, never a representative.
    assert left_out <= set(result["kept"])
    assert left_out.isdisjoint(row["representative_id"] for row in result["duplicates"])
