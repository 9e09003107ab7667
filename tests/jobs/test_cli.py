"""End-to-end: the installed `corpusmill` command on the bundled sample, as a user runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

CLI = [sys.executable, "-m", "corpusmill.jobs.cli"]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_default_job_on_the_bundled_sample_then_inspect(tmp_path):
    done = _run("run", cwd=tmp_path)  # no job file: the embedded default, output out/sample
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out" / "sample"
    assert f"snapshot: out/sample  (complete)" in done.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["input_records"] == 2994 and counts["balanced"]
    assert manifest["input"]["files"] == 1 and len(manifest["input"]["fingerprint"]) == 64
    assert (out / "_SUCCESS").exists()
    docs = pq.read_table(out / manifest["outputs"]["docs"]["shards"][0]["path"])
    # The default job orders documents (In-Context Pretraining): a position column, rows in that order.
    assert docs.schema.names == ["id", "text", "source", "url", "timestamp", "meta", "position"]
    assert docs.column("position").to_pylist() == list(range(docs.num_rows))
    assert set(docs.column("source").to_pylist()) == {"linux-doc-6.1", "linux-doc-6.12"}
    assert json.loads(docs.column("meta")[0].as_py())["kernel_version"].startswith("6.")

    shown = _run("inspect", "out/sample", "--rows", "1", cwd=tmp_path)
    assert shown.returncode == 0 and "docs/ — first 1 rows" in shown.stdout

    (out / "_SUCCESS").unlink()
    incomplete = _run("inspect", "out/sample", cwd=tmp_path)
    assert incomplete.returncode == 1 and "incomplete" in incomplete.stdout


def test_bad_configuration_fails_before_the_pipeline_naming_the_key(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("input:\n  paths: [nowhere.jsonl]\n  batch_rows: 0\n")
    done = _run("run", str(job), "--output", "o", cwd=tmp_path)
    assert done.returncode == 2
    assert "config key 'input.batch_rows'" in done.stderr and "allowed: 1 .. 1000000" in done.stderr
    assert not (tmp_path / "o").exists()

    unknown = _run("run", "--set", "output.shards=4", cwd=tmp_path)
    assert unknown.returncode == 2 and "config key 'output.shards': unknown key" in unknown.stderr


def test_missing_input_and_existing_output_are_usage_errors(tmp_path):
    missing = _run("run", "--input", str(tmp_path / "none" / "*.jsonl"), "--output", "o", cwd=tmp_path)
    assert missing.returncode == 2 and "matched no readable file" in missing.stderr

    source = tmp_path / "one.jsonl"
    source.write_text(json.dumps({"id": "a", "text": "one document"}) + "\n")
    no_order = ("--set", "order.enabled=false")  # about exit codes, not the stage
    assert _run("run", "--input", str(source), "--output", "o", *no_order, cwd=tmp_path).returncode == 0
    again = _run("run", "--input", str(source), "--output", "o", *no_order, cwd=tmp_path)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert _run("run", "--input", str(source), "--output", "o", "--overwrite", *no_order,
                cwd=tmp_path).returncode == 0


def test_one_stage_commands_switch_the_other_stage_off(tmp_path):
    from corpus_files import jsonl_bytes, sample_records

    records = sample_records(40)  # path-sorted: each 6.1 file sits next to its 6.12 version
    source = tmp_path / "docs.jsonl"
    source.write_bytes(jsonl_bytes(records))

    assert _run("dedup", "--input", str(source), "--output", "d", cwd=tmp_path).returncode == 0
    dedup = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert dedup["counts"]["duplicates"] > 0 and "decompose" not in dedup
    assert not (tmp_path / "d" / "buckets").exists()

    assert _run("decompose", "--input", str(source), "--output", "t", cwd=tmp_path).returncode == 0
    decompose = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert decompose["counts"]["duplicates"] == 0 and decompose["decompose"]["input_tokens"] > 0
    assert (tmp_path / "t" / "buckets" / "len-00256").is_dir()
    assert "order" not in dedup and "order" not in decompose

    assert _run("order", "--input", str(source), "--output", "r", cwd=tmp_path).returncode == 0
    order = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert "dedup" not in order and "decompose" not in order
    assert order["order"]["quality"]["coverage"]["each_exactly_once"] and (tmp_path / "r" / "contexts").is_dir()
