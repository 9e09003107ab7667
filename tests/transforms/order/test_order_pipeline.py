"""The order stage on the real FnApiRunner, real sample text, real faiss and the real cl100k tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from corpus_files import jsonl_bytes, sample_records, snapshot_parquet_digests

from corpusmill.pipelines.corpus_job import run_job
from corpusmill.schemas.config import ConfigError, load_job
from corpusmill.transforms.common import document_keys
from corpusmill.transforms.decompose.tokenizer import load_tokenizer
from corpusmill.transforms.order import knn_graph, traversal
from corpusmill.transforms.order.lexical_fit import fit_lexical_embedder

NUM_DOCS = 260
# Non-ASCII and degenerate documents beside the real ones: no word at all, one word, CJK, Cyrillic.
EXTRA = [
    {"id": "extra/empty-words", "text": "... --- !!! ???"},
    {"id": "extra/one-word", "text": "scheduler"},
    {"id": "extra/cjk", "text": "内核调度器在多个处理器之间分配任务。调度器的负载均衡很重要。"},
    {"id": "extra/cyrillic", "text": "Планировщик ядра распределяет задачи между процессорами; балансировка нагрузки."},
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("order-corpus")
    records = [{"id": r["id"], "text": r["text"]} for r in sample_records(NUM_DOCS)] + EXTRA
    (folder / "docs.jsonl").write_bytes(jsonl_bytes(records))
    return folder


def order_job(corpus: Path, out: Path, **sets):
    spec = {"input": {"paths": [str(corpus)]}, "output": {"path": str(out)},
            "dedup": {"enabled": True}, "decompose": {"enabled": False},
            "order": {"enabled": True}}
    overrides = [f"{key.replace('__', '.')}={json.dumps(value)}" for key, value in sets.items()]
    return load_job(spec, overrides)


def read(out: Path, output: str):
    return pq.read_table(out / output)


def digests(out: Path) -> dict[str, str]:
    return snapshot_parquet_digests(out)


@pytest.fixture(scope="module")
def exact_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("exact") / "snapshot"
    manifest = run_job(order_job(corpus, out, output__num_shards=3))
    return out, manifest


def test_every_document_has_one_position_and_shards_are_ranges(exact_run):
    out, manifest = exact_run
    docs = read(out, "docs")
    n = manifest["counts"]["kept"] if "kept" in manifest["counts"] else docs.num_rows
    assert docs.num_rows == n == manifest["order"]["quality"]["documents"]
    assert sorted(docs.column("position").to_pylist()) == list(range(n))
    previous_end = -1
    for part in sorted((out / "docs").glob("*.parquet")):
        positions = pq.read_table(part).column("position").to_numpy()
        assert positions[0] == previous_end + 1 and np.all(np.diff(positions) == 1)
        previous_end = positions[-1]
    assert manifest["order"]["knn"]["mode"] == "exact"


def _embeddings_by_key(out: Path):
    table = read(out, "embeddings")
    ids = table.column("id").to_pylist()
    vectors = np.array(table.column("vector").to_pylist(), dtype=np.float32)
    keys = document_keys(ids)
    by_key = np.argsort(keys, kind="stable")
    return [ids[i] for i in by_key], vectors[by_key]


def test_order_is_the_kernels_traversal_of_the_exact_graph(exact_run):
    out, manifest = exact_run
    ids, vectors = _embeddings_by_key(out)
    neighbors, scores = knn_graph.exact_knn(vectors, 20)
    expected = traversal.traverse(neighbors, scores, vectors, mode="improved").order
    docs = read(out, "docs").sort_by("position")
    assert docs.column("id").to_pylist() == [ids[i] for i in expected]
    # neighbors/ names the same graph by id.
    table = read(out, "neighbors").to_pylist()
    row_of = {doc_id: i for i, doc_id in enumerate(ids)}
    for row in table[:50]:
        i = row_of[row["id"]]
        want = [ids[j] for j in neighbors[i] if j >= 0]
        assert row["neighbor_ids"] == want
        assert np.allclose(row["scores"], scores[i][: len(want)])


def test_embeddings_are_the_kernels_fit_of_the_corpus(exact_run):
    out, manifest = exact_run
    docs = read(out, "docs")
    texts = dict(zip(docs.column("id").to_pylist(), docs.column("text").to_pylist()))
    ids = list(texts)
    embedder = fit_lexical_embedder([texts[i] for i in ids], document_keys(ids))
    assert embedder.projection is not None
    stored = dict(zip(read(out, "embeddings").column("id").to_pylist(),
                      read(out, "embeddings").column("vector").to_pylist()))
    expected = embedder.embed([texts[i] for i in ids])
    assert np.array_equal(np.array([stored[i] for i in ids], dtype=np.float32), expected)
    assert manifest["order"]["embedder"]["fingerprint"] == embedder.fingerprint


def test_quality_beats_natural_and_random_and_stays_under_the_bound(exact_run):
    _, manifest = exact_run
    cosine = manifest["order"]["quality"]["adjacent_cosine"]
    assert cosine["order"] > 1.5 * cosine["natural"] > 0
    assert cosine["order"] > 3 * cosine["random"]
    assert cosine["order"] <= 1.05 * cosine["top1_bound"]
    assert manifest["order"]["quality"]["coverage"]["each_exactly_once"]


def test_contexts_hold_every_document_once_in_order(exact_run):
    out, manifest = exact_run
    contexts = read(out, "contexts").sort_by("context").to_pylist()
    length = 8192
    assert [c["context"] for c in contexts] == list(range(len(contexts)))
    assert all(len(c["tokens"]) == length for c in contexts)
    assert all(c["num_tokens"] == length for c in contexts[:-1])
    pieces: dict[str, list] = {}
    for c in contexts:
        ends = c["piece_starts"][1:] + [c["num_tokens"]]
        for doc_id, offset, start, end in zip(c["doc_ids"], c["doc_offsets"], c["piece_starts"], ends):
            pieces.setdefault(doc_id, []).append((offset, c["tokens"][start:end]))
    docs = read(out, "docs").sort_by("position")
    tokenizer = load_tokenizer("tiktoken:cl100k_base")
    texts = docs.column("text").to_pylist()
    encoded = tokenizer.encode_batch(texts)
    assert list(pieces) == docs.column("id").to_pylist()  # first appearance follows the order
    for doc_id, tokens in zip(docs.column("id").to_pylist(), encoded):
        parts = sorted(pieces[doc_id])
        rebuilt = [t for _, part in parts for t in part]
        assert rebuilt == tokens.tolist() + [tokenizer.eot_id]
    stats = manifest["order"]["contexts"]
    assert stats["each_document_once"] and stats["contexts"] == len(contexts)


def test_partitioned_order_is_deterministic_and_independent_of_shards(corpus, tmp_path):
    runs = {}
    for shards in (1, 4):
        out = tmp_path / f"shards{shards}"
        manifest = run_job(order_job(corpus, out, output__num_shards=shards, order__knn__mode="partitioned",
                                     order__knn__num_partitions=4, order__contexts__enabled=False))
        runs[shards] = (out, manifest)
    orders = {s: read(out, "docs").sort_by("position").column("id").to_pylist() for s, (out, _) in runs.items()}
    assert orders[1] == orders[4]
    knn = runs[4][1]["order"]["knn"]
    assert knn["mode"] == "partitioned" and knn["partitions"] == 4 and knn["recall"]["measured"]
    assert 0.5 < knn["recall"]["recall_at_k"] <= 1.0
    again = tmp_path / "again"
    run_job(order_job(corpus, again, output__num_shards=4, order__knn__mode="partitioned",
                      order__knn__num_partitions=4, order__contexts__enabled=False))
    assert digests(again) == digests(runs[4][0])


def test_paper_traversal_on_the_pipeline_matches_algorithm_1(corpus, tmp_path):
    out = tmp_path / "paper"
    manifest = run_job(order_job(corpus, out, order__traversal="paper", order__contexts__enabled=False))
    ids, vectors = _embeddings_by_key(out)
    neighbors, scores = knn_graph.exact_knn(vectors, 20)
    expected = traversal.paper_order(neighbors, scores).order
    assert read(out, "docs").sort_by("position").column("id").to_pylist() == [ids[i] for i in expected]
    assert manifest["order"]["traversal"] == "paper"


def test_one_document_and_bad_config(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "one.jsonl").write_bytes(jsonl_bytes([{"id": "only", "text": "a single document"}]))
    out = tmp_path / "out"
    manifest = run_job(order_job(tmp_path / "in", out))
    assert read(out, "docs").column("position").to_pylist() == [0]
    assert manifest["order"]["contexts"]["contexts"] == 1
    with pytest.raises(ConfigError, match="order.embed.model"):
        order_job(tmp_path / "in", out, order__embed__model="minilm")
    with pytest.raises(ConfigError, match="decompose.over"):
        load_job({"decompose": {"over": "order"}})


def test_decompose_over_order_cuts_pieces_from_the_ordered_stream(corpus, tmp_path):
    out = tmp_path / "over-order"
    manifest = run_job(order_job(corpus, out, decompose__enabled=True, decompose__over="order",
                                 order__contexts__enabled=False, output__num_shards=2))
    docs = read(out, "docs").sort_by("position")
    tokenizer = load_tokenizer("tiktoken:cl100k_base")
    encoded = [t.tolist() + [tokenizer.eot_id] for t in tokenizer.encode_batch(docs.column("text").to_pylist())]
    stream = [t for doc in encoded for t in doc]
    start_of = dict(zip(docs.column("id").to_pylist(), np.cumsum([0] + [len(d) for d in encoded[:-1]])))
    length_of = {doc_id: len(d) for doc_id, d in zip(docs.column("id").to_pylist(), encoded)}
    spanning = 0
    for part in sorted((out / "buckets").rglob("*.parquet")):
        for piece in pq.read_table(part).to_pylist():
            begin = start_of[piece["doc_id"]] + piece["offset"]
            assert piece["tokens"] == stream[begin:begin + len(piece["tokens"])]
            spanning += piece["offset"] + len(piece["tokens"]) > length_of[piece["doc_id"]]
    assert spanning > 0  # related documents share a sequence
    assert manifest["decompose"]["over"] == "order"
    assert manifest["decompose"]["documents"] < docs.num_rows  # paths, not documents


def test_semantic_dedup_removes_copies_through_clusters_and_keep_policy(tmp_path):
    records = [{"id": r["id"], "text": r["text"]} for r in sample_records(120)]
    # Copies under other ids (one with different spacing), which only the order embedding sees when dedup is off.
    copies = [{"id": f"copy/{i}", "text": records[i]["text"]} for i in range(0, 30, 3)]
    copies.append({"id": "copy/spaced", "text": "  " + records[40]["text"].replace(" ", "  ") + "\n"})
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "docs.jsonl").write_bytes(jsonl_bytes(records + copies))
    out = tmp_path / "out"
    manifest = run_job(order_job(tmp_path / "in", out, dedup__enabled=False, output__num_shards=3,
                                 order__semantic_dedup__enabled=True, order__semantic_dedup__keep="smallest_id",
                                 order__semantic_dedup__threshold=0.99))
    duplicates = read(out, "duplicates").to_pylist()
    by_id = {d["id"]: d for d in duplicates}
    assert {d["kind"] for d in duplicates} == {"semantic"}
    # smallest_id keeps "copy/…" over "linux-…": the originals of the copies are the ones removed.
    for copy in copies:
        original = next(r["id"] for r in records if r["text"].split() == copy["text"].split())
        assert by_id[original]["representative_id"] == copy["id"]
        assert by_id[original]["similarity"] > 0.99
    semantic = manifest["order"]["semantic_dedup"]
    assert semantic["duplicates"] == len(duplicates) >= len(copies)
    docs = read(out, "docs")
    assert docs.num_rows + len(duplicates) == len(records) + len(copies)
    assert sorted(docs.column("position").to_pylist()) == list(range(docs.num_rows))
    assert not set(by_id) & set(docs.column("id").to_pylist())
    assert manifest["order"]["contexts"]["each_document_once"]
    assert manifest["counts"]["balanced"]


def test_embeddings_are_reused_where_id_and_text_match(corpus, tmp_path, exact_run):
    first, _ = exact_run
    records = [{"id": r["id"], "text": r["text"]} for r in sample_records(NUM_DOCS)] + EXTRA
    records[5] = {**records[5], "text": records[5]["text"] + "\nA changed paragraph."}
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "docs.jsonl").write_bytes(jsonl_bytes(records))
    out = tmp_path / "again"
    manifest = run_job(order_job(tmp_path / "in", out, output__num_shards=2, order__embed__reuse=str(first)))
    embedder = manifest["order"]["embedder"]
    assert embedder["documents_embedded"] >= 1 and embedder["documents_reused"] >= 100
    assert embedder["documents_reused"] + embedder["documents_embedded"] == read(out, "embeddings").num_rows
    old = dict(zip(read(first, "embeddings").column("id").to_pylist(), read(first, "embeddings").column("vector").to_pylist()))
    new = read(out, "embeddings").to_pylist()
    same = sum(row["vector"] == old.get(row["id"]) for row in new)
    assert same == embedder["documents_reused"]
    with pytest.raises(ConfigError, match="order.embed.reuse"):
        run_job(order_job(tmp_path / "in", tmp_path / "x", order__embed__reuse=str(tmp_path / "in")))
