"""Dataflow readiness: the job translates for DataflowRunner offline, and the package builds for workers."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import apache_beam as beam
import pytest

from corpusmill.pipelines.corpus_job import build_pipeline, pipeline_options, plan_job, run_job
from corpusmill.schemas.config import load_job
from corpus_files import SAMPLE

REPO = Path(__file__).resolve().parents[2]
PACKAGE_FOLDERS = ("pipelines", "transforms", "schemas", "jobs", "training")
DATAFLOW_ARGS = [
    "--runner", "DataflowRunner", "--project", "corpusmill-test", "--region", "us-central1",
    # A syntactically valid bucket: with an invalid one Beam looks up a default bucket online.
    "--temp_location", "gs://corpusmill-test-bucket/tmp", "--dry_run=True",
]

pytest.importorskip("apache_beam.runners.dataflow.dataflow_runner")


def _dataflow_step_names(tmp_path, num_shards: int) -> set[str]:
    plan = plan_job(load_job({"input": {"paths": [str(SAMPLE)]},
                              "output": {"path": str(tmp_path / "o"), "num_shards": num_shards}}))
    pipeline = beam.Pipeline(options=pipeline_options([*DATAFLOW_ARGS, "--setup_file", str(REPO / "setup.py")]))
    build_pipeline(pipeline, plan, str(tmp_path / "o" / "_staging-test"))
    result = pipeline.run()
    assert result.state == beam.runners.runner.PipelineState.DONE
    return {t.unique_name for t in pipeline.runner.job.proto_pipeline.components.transforms.values()}


def test_job_translates_for_dataflow_with_every_step_named(tmp_path):
    names = _dataflow_step_names(tmp_path, num_shards=2)
    for step in ("ReadDocuments/ReadAndValidate", "ShardDocuments/GroupByShard", "ResolveDuplicateIds",
                 "Deduplicate/ComputeDedupFeatures", "DecomposeDocuments/TokenizeAndDecompose",
                 "DecomposeDocuments/WriteLen00256/WriteParquetShard", "WriteDuplicates/WriteParquetShard",
                 "WriteDocuments/WriteParquetShard", "WriteRejected/WriteParquetShard", "CollectResults"):
        assert step in names


def test_one_shard_read_by_one_task_skips_the_document_shuffle(tmp_path):
    # The bundled sample is one file below one shard: its task's documents are the shard.
    names = _dataflow_step_names(tmp_path, num_shards=1)
    assert "ReadDocuments/ReadAndValidate" in names and "ResolveDuplicateIds" in names
    assert not any(name.startswith("ShardDocuments") for name in names)


def test_cli_dry_run_writes_no_snapshot(tmp_path):
    config = load_job({"input": {"paths": [str(SAMPLE)]}, "output": {"path": str(tmp_path / "o")}})
    assert run_job(config, DATAFLOW_ARGS) is None
    assert not (tmp_path / "o" / "manifest.json").exists()
    assert list((tmp_path / "o").glob("_staging-*")) == []


def test_worker_package_carries_every_module_and_the_sample(tmp_path):
    # What --setup_file installs on a worker: the wheel built from this checkout, built from a copy
    # so that a stale build/ folder in the checkout cannot add modules setup.cfg leaves out.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for folder in PACKAGE_FOLDERS:
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("corpusmill-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("corpusmill/pipelines/corpus_job.py", "corpusmill/pipelines/stages.py",
                   "corpusmill/transforms/io/formats.py", "corpusmill/transforms/dedup/beam/deduplicate.py",
                   "corpusmill/transforms/decompose/beam/decompose_documents.py", "corpusmill/transforms/order/__init__.py",
                   "corpusmill/training/curriculum.py",
                   "corpusmill/schemas/config.py", "corpusmill/jobs/cli.py", "corpusmill/jobs/default.yaml",
                   "corpusmill/jobs/sample/linux-doc-sample.jsonl.zst"):
        assert module in names
    # Every module of the installed folders, so a package missing from setup.cfg fails here, not on a worker.
    for folder in PACKAGE_FOLDERS:
        for module in (REPO / folder).rglob("*.py"):
            assert f"corpusmill/{module.relative_to(REPO)}" in names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
