"""The Airflow DAG example loads and runs the refresh (skipped where apache-airflow is not installed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

DAG_FILE = Path(__file__).resolve().parents[2] / "jobs" / "airflow_refresh_dag.py"


def test_the_refresh_dag_loads_with_one_refresh_at_a_time(tmp_path, monkeypatch):
    pytest.importorskip("airflow")
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    spec = importlib.util.spec_from_file_location("airflow_refresh_dag", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.dag
    assert dag.dag_id == "corpusmill_refresh" and dag.max_active_runs == 1
    (task,) = dag.tasks
    command = task.bash_command
    assert "corpusmill refresh" in command and "--previous" in command and "/latest" in command
    # A refused run (exit 2: the output is held) or a failed one fails the task, so Airflow retries it.
    assert "exit $status" in command and task.retries == 3
