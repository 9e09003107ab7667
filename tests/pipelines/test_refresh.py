"""Refresh: a new snapshot of only what is new against a published one (issue 13).

The first snapshot is a slice of the bundled sample's Linux 6.1 documentation, the
refresh the same files of Linux 6.12: unchanged files are exact duplicates of
published ones, edited files near duplicates, new files new. A few records are
added where the versions show none: a published id sent again with its text and
with another text, a near copy (word edits, non-ASCII words) of a published
document and one of a new document. Every result is checked against an
independent brute-force Jaccard check (``corpusmill.transforms.dedup.audit``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from corpus_files import jsonl_bytes, sample_records, snapshot_parquet_digests
from corpusmill.jobs.cli import main
from corpusmill.schemas.config import DedupConfig
from corpusmill.transforms.dedup.audit import check_snapshot_chain
from corpusmill.transforms.io.beam.snapshot import snapshot_problems

CLI = [sys.executable, "-m", "corpusmill.jobs.cli"]
# The order and decompose stages are tested elsewhere; here they would add seconds to every run.
DEDUP_ONLY = ("--set", "order.enabled=false", "--set", "decompose.enabled=false")


def _relative(doc_id: str) -> str:
    return doc_id.split("/", 1)[1]


def _edited(text: str, share: float, seed: int, words: tuple[str, ...]) -> str:
    rng = random.Random(seed)
    tokens = text.split(" ")
    for i in rng.sample(range(len(tokens)), max(1, int(len(tokens) * share))):
        tokens[i] = rng.choice(words)
    return " ".join(tokens)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("refresh-corpora")
    records = sample_records()
    paths = sorted({_relative(r["id"]) for r in records})
    wanted = set(paths[: len(paths) // 12])
    old = [r for r in records if r["source"] == "linux-doc-6.1" and _relative(r["id"]) in wanted]
    new = [r for r in records if r["source"] == "linux-doc-6.12" and _relative(r["id"]) in wanted]
    long_old = max(old, key=lambda r: len(r["text"]))
    long_new = max((r for r in new if r["id"].replace("6.12", "6.1") not in {o["id"] for o in old}),
                   key=lambda r: len(r["text"]), default=new[-1])
    new += [
        dict(old[0]),  # a published id sent again, same text
        dict(old[1], text=old[1]["text"] + "\n\nA paragraph the crawl added since. " * 40),  # same id, other text
        dict(long_old, id="mirror/near-published", text=_edited(long_old["text"], 0.01, 1, ("Grüße", "日本語", "ß"))),
        dict(long_new, id="mirror/near-new", text=_edited(long_new["text"], 0.01, 2, ("Ωmega", "naïve"))),
    ]
    for name, rows in (("old", old), ("new", new)):
        (root / name).mkdir()
        (root / name / "docs.jsonl").write_bytes(jsonl_bytes(rows))
    return {"old": root / "old", "new": root / "new", "old_records": old, "new_records": new}


def in_process(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in this process: no interpreter start or imports (the kill tests need a process of their own)."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli(*args: str, env: dict | None = None, wait: bool = True):
    process = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **(env or {})})
    if not wait:
        return process
    stdout, stderr = process.communicate(timeout=600)
    return process.returncode, stdout, stderr


def rows(out: Path, output: str, columns=None) -> list[dict]:
    return [row for path in sorted((out / output).glob("part-*.parquet"))
            for row in pq.read_table(path, columns=columns).to_pylist()]


@pytest.fixture(scope="module")
def first(corpora, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("first") / "snapshot"
    code, _, stderr = cli("run", "--input", str(corpora["old"]), "--output", str(out), *DEDUP_ONLY)
    assert code == 0, stderr
    return out


@pytest.fixture(scope="module")
def refreshed(corpora, first, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("refreshed") / "snapshot"
    code, stdout, stderr = cli("refresh", "--previous", str(first), "--input", str(corpora["new"]),
                               "--output", str(out), "--set", "output.num_shards=3", *DEDUP_ONLY)
    assert code == 0, stderr
    assert "refresh:  against" in stdout
    return out


def test_a_refresh_keeps_exactly_the_new_documents_that_duplicate_nothing(corpora, first, refreshed):
    texts = {r["id"]: r["text"] for r in corpora["new_records"]}
    texts.update({r["id"]: r["text"] for r in corpora["old_records"]})
    old_kept = [r["id"] for r in rows(first, "docs", ["id"])]
    new_kept = [r["id"] for r in rows(refreshed, "docs", ["id"])]
    removed = rows(refreshed, "duplicates")
    assert new_kept and removed and not set(new_kept) & set(old_kept)
    # Every new record is kept or a duplicate; none is published twice.
    assert len(new_kept) + len(removed) == len(corpora["new_records"])
    # The independent check: no two kept documents of the chain at J >= threshold, and every
    # removed one has a document of either snapshot's input at J >= threshold.
    new_texts = [(r["id"], r["text"]) for r in corpora["new_records"]]
    removed_ids = {r["id"] for r in removed}
    audit = check_snapshot_chain(
        [(i, texts[i]) for i in old_kept] + [(i, t) for i, t in new_texts if i in set(new_kept)],
        [(i, t) for i, t in new_texts if i in removed_ids and i not in set(old_kept)], DedupConfig())
    assert audit["kept_pairs"] == [] and audit["removed_without_duplicate"] == [], audit
    by_id = {r["id"]: r for r in removed}
    published_text, other_text = corpora["new_records"][-4:-2]
    assert by_id[published_text["id"]]["kind"] == "exact"
    assert by_id[other_text["id"]]["kind"] == "published_id"
    assert by_id["mirror/near-published"]["representative_id"] in old_kept
    assert by_id["mirror/near-new"]["representative_id"] in new_kept
    # Published documents represent their clusters; every representative is in the chain.
    assert {r["representative_id"] for r in removed} <= set(old_kept) | set(new_kept)
    manifest = json.loads((refreshed / "manifest.json").read_text())
    refresh = manifest["dedup"]["refresh"]
    assert refresh["against_previous"]["published_id"] == 1
    assert refresh["against_each_other"]["near"] >= 1
    assert sum(refresh["against_previous"].values()) + sum(refresh["against_each_other"].values()) == len(removed)


def test_the_refreshed_index_and_manifest_cover_the_chain(first, refreshed):
    index = rows(refreshed, "index", ["key", "id"])
    old_kept = {r["id"] for r in rows(first, "docs", ["id"])}
    new_kept = {r["id"] for r in rows(refreshed, "docs", ["id"])}
    assert sorted(r["id"] for r in index) == sorted(old_kept | new_kept)
    # Sharded by key for this run's three shards, sorted inside each shard.
    for shard in range(3):
        keys = [r["key"] for r in pq.read_table(refreshed / f"index/part-{shard:05d}-of-00003.parquet").to_pylist()]
        assert keys == sorted(keys) and all((k % (1 << 64)) % 3 == shard for k in keys)
    manifest = json.loads((refreshed / "manifest.json").read_text())
    previous_manifest = (first / "manifest.json").read_bytes()
    assert manifest["previous"]["manifest_sha256"] == hashlib.sha256(previous_manifest).hexdigest()
    assert manifest["previous"]["path"] == str(first)
    (link,) = manifest["lineage"]
    assert link["docs"] == [s["path"] for s in json.loads(previous_manifest)["outputs"]["docs"]["shards"]]
    assert snapshot_problems(str(refreshed)) == []


def test_a_rerun_is_byte_identical_and_a_repeated_refresh_adds_nothing(corpora, first, refreshed, tmp_path, capsys):
    again = tmp_path / "again"
    code, _, stderr = in_process(capsys, "refresh", "--previous", str(first), "--input", str(corpora["new"]),
                          "--output", str(again), "--set", "output.num_shards=3", *DEDUP_ONLY)
    assert code == 0, stderr
    assert snapshot_parquet_digests(again) == snapshot_parquet_digests(refreshed)
    repeated = tmp_path / "repeated"
    # With the order stage on: every shard reaches it empty.
    code, stdout, stderr = in_process(capsys, "refresh", "--previous", str(refreshed), "--input",
                                      str(corpora["new"]), "--output", str(repeated), "--set", "order.enabled=true",
                                      "--set", "decompose.enabled=false")
    # Nothing kept is the scheduler's "nothing new" exit status, with a complete snapshot.
    assert code == 3, stderr
    manifest = json.loads((repeated / "manifest.json").read_text())
    assert manifest["counts"]["kept"] == 0
    assert len(manifest["lineage"]) == 2 and snapshot_problems(str(repeated)) == []


def _incomplete(first: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "incomplete"
    shutil.copytree(first, copy, symlinks=True)
    (copy / "_SUCCESS").unlink()
    return copy


def _damaged(first: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "damaged"
    shutil.copytree(first, copy)
    shard = next((copy / "index").glob("part-*.parquet"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    return copy


@pytest.mark.parametrize("case, extra, words", [
    ("missing", (), "does not exist"),
    ("incomplete", (), "_SUCCESS is missing"),
    ("damaged", (), "sha256"),
    ("num_perm", ("--set", "dedup.num_perm=64"), "dedup.num_perm: previous 128, now 64"),
    ("no_dedup", ("--set", "dedup.enabled=false"), "dedup.enabled must be true"),
    ("itself", (), "--previous and --output are both"),
])
def test_a_previous_snapshot_that_cannot_be_joined_is_refused_before_anything_runs(
        corpora, first, tmp_path, capsys, case, extra, words):
    previous = {"missing": tmp_path / "nothing", "incomplete": None, "damaged": None}.get(case, first)
    if case == "incomplete":
        previous = _incomplete(first, tmp_path)
    elif case == "damaged":
        previous = _damaged(first, tmp_path)
    out = first if case == "itself" else tmp_path / "out"
    before = snapshot_parquet_digests(first)
    code, _, stderr = in_process(capsys, "refresh", "--previous", str(previous), "--input", str(corpora["new"]),
                                 "--output", str(out), *DEDUP_ONLY, *extra)
    assert code == 2 and words in stderr, stderr
    assert "Traceback" not in stderr
    assert case == "itself" or not out.exists()
    assert snapshot_parquet_digests(first) == before


@pytest.mark.parametrize("point", ["reading", "dedup", "switching"])
def test_a_killed_refresh_reruns_to_the_uninterrupted_snapshot(corpora, first, refreshed, tmp_path, capsys, point):
    out = tmp_path / "out"
    args = ("refresh", "--previous", str(first), "--input", str(corpora["new"]), "--output", str(out),
            "--set", "output.num_shards=3", *DEDUP_ONLY)
    previous = snapshot_parquet_digests(first)
    process = cli(*args, env={"CORPUSMILL_PAUSE_AT": point}, wait=False)
    for line in process.stderr:
        if f"paused at {point}" in line:
            break
    else:
        raise AssertionError(f"the refresh ended before {point}: exit {process.wait()}")
    process.send_signal(signal.SIGKILL)
    process.wait()
    # Nothing is marked complete that is not; nothing outside the output is touched.
    assert not (out / "_SUCCESS").exists() or snapshot_problems(str(out)) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] or not out.exists()
    assert snapshot_parquet_digests(first) == previous
    code, _, stderr = in_process(capsys, *args, "--overwrite")
    assert code == 0, stderr
    assert snapshot_problems(str(out)) == []
    assert snapshot_parquet_digests(out) == snapshot_parquet_digests(refreshed)
