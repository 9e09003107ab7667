"""End-to-end: the installed `corpusmill` command on the bundled sample, as a user runs it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from corpusmill.jobs.screenshot_report import find_browser, screenshot

CLI = [sys.executable, "-m", "corpusmill.jobs.cli"]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    """`corpusmill run` with no job file (the embedded default on the bundled sample), once for this module."""
    cwd = tmp_path_factory.mktemp("sample")
    return cwd, _run("run", cwd=cwd)  # output out/sample


def test_default_job_on_the_bundled_sample_then_inspect(sample_run):
    tmp_path, done = sample_run
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

    # Progress on stderr: each stage's start, then the end of the pipeline; Beam's own INFO lines stay out.
    progress_lines = done.stderr.splitlines()
    assert progress_lines[0].endswith("pipeline started: read -> dedup -> order -> decompose -> write")
    for stage in ("read", "dedup", "order", "decompose", "write"):
        assert any(f"] {stage}: started, first" in line for line in progress_lines), stage
    assert any("pipeline finished" in line for line in progress_lines)
    assert "apache_beam" not in done.stderr and "Running (" not in done.stderr
    # The summary table on stdout: per stage documents in and out, duplicates, rejected, seconds.
    table = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()
             if line.split()[:1] in (["read"], ["dedup"], ["order"], ["decompose"], ["write"], ["total"])}
    assert table["read"][:4] == ["2,994", "2,994", "0", "0"]
    assert table["dedup"][:4] == ["2,994", f"{counts['kept']:,}", f"{counts['duplicates']:,}", "0"]
    assert table["write"][:2] == [f"{counts['kept']:,}"] * 2 and table["total"][-1] == f"{manifest['timings']['wall_seconds']:.1f}"
    assert [row["stage"] for row in manifest["timings"]["stages"]] == ["read", "dedup", "order", "decompose", "write"]

    shown = _run("inspect", "out/sample", "--rows", "1", cwd=tmp_path)
    assert shown.returncode == 0 and "docs/ — first 1 rows" in shown.stdout
    # Token lists cut to their first ids, with their length and a decoded excerpt; never thousands of numbers.
    assert re.search(r"tokens +8,192 token ids: (\d+ ){8}…\n +decoded: \"\S", shown.stdout)
    assert max(len(line) for line in shown.stdout.splitlines()) < 400
    assert max(len(re.findall(r"\d+", line)) for line in shown.stdout.splitlines()) < 20
    assert re.search(r"vector +\d+ numbers: ", shown.stdout) and "text_hash" in shown.stdout

    (out / "_SUCCESS").unlink()
    incomplete = _run("inspect", "out/sample", cwd=tmp_path)
    assert incomplete.returncode == 1 and "incomplete" in incomplete.stdout


@pytest.mark.skipif(find_browser() is None, reason="needs chromium and chromedriver (Debian: chromium chromium-driver)")
def test_report_of_the_bundled_sample_reads_in_a_browser(sample_run):
    tmp_path, done = sample_run
    assert done.returncode == 0, done.stderr
    check = screenshot(str(tmp_path / "out" / "sample" / "report.html"), str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").stat().st_size > 50_000 and check.title == "corpusmill report: linux-doc-sample"
    assert check.wide == [] and check.broken_images == []  # nothing overflows the window, nothing failed to load
    assert check.svgs >= 6 and check.height > 3000  # every plot is on the page, offline


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
    # --quiet (for cron): nothing at all on success.
    quiet = _run("run", "--input", str(source), "--output", "o", "--quiet", *no_order, cwd=tmp_path)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    again = _run("run", "--input", str(source), "--output", "o", *no_order, cwd=tmp_path)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    # --log-format json (for schedulers): one JSON object per line on stderr, the summary last; stdout empty.
    logged = _run("run", "--input", str(source), "--output", "o", "--overwrite", "--log-format", "json", *no_order,
                  cwd=tmp_path)
    assert logged.returncode == 0 and logged.stdout == ""
    records = [json.loads(line) for line in logged.stderr.splitlines()]
    assert {"time", "level", "logger", "message"} <= set(records[0]) and records[0]["event"] == "pipeline_started"
    assert any(r.get("event") == "stage_started" and r["stage"] == "dedup" for r in records)
    summary = records[-1]
    assert summary["event"] == "summary" and summary["snapshot"] == "o" and summary["counts"]["kept"] == 1
    assert [row["stage"] for row in summary["stages"]] == ["read", "dedup", "decompose", "write", "total"]
    refused = _run("run", "--input", str(source), "--output", "o", "--log-format", "json", *no_order, cwd=tmp_path)
    assert refused.returncode == 2 and json.loads(refused.stderr.splitlines()[-1])["level"] == "ERROR"


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
