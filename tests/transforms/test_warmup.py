"""The numba warm-up child: which steps it takes, how the job waits for it, and that it never fails a job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from corpusmill.schemas.config import DecomposeConfig, DedupConfig, EmbedSectionConfig, OrderConfig
from corpusmill.transforms import warmup

ORDER_KERNEL_MODULES = [module for step in warmup.STEPS if step.stage == "order" for module in step.modules]


def _names(steps):
    return [step.name for step in steps]


def test_the_job_keeps_its_first_step_and_the_child_takes_the_later_ones():
    dedup, order, decompose = DedupConfig(), OrderConfig(), DecomposeConfig()
    assert _names(warmup.planned_steps([("dedup", dedup), ("order", order), ("decompose", decompose)])) == [
        "order.embed", "order.graph", "order.traversal"]
    assert _names(warmup.planned_steps([("order", order)])) == ["order.graph", "order.traversal"]
    assert _names(warmup.planned_steps([("dedup", dedup), ("decompose", decompose)])) == []
    # A sentence-transformers model compiles no lexical kernels: nothing to warm for embedding.
    st = OrderConfig(embed=EmbedSectionConfig(model="st:all-MiniLM-L6-v2"))
    assert _names(warmup.planned_steps([("dedup", dedup), ("order", st)])) == ["order.graph", "order.traversal"]


class _Cache:
    """numba's cache of one kernel: a miss until the child has 'written' the entry."""

    def __init__(self, hit_after: int):
        self.calls = 0
        self.hit_after = hit_after
        self.cache_path = "/somewhere"

    def load_overload(self, sig, target_context):
        self.calls += 1
        return "compiled" if self.calls > self.hit_after else None


class _Child:
    def __init__(self, done_after: float = float("inf"), alive: bool = True):
        self.started = time.perf_counter()
        self.done_after = done_after
        self.alive = alive
        self.waited_s = 0.0

    def waits_for(self, step):
        return self.alive and time.perf_counter() - self.started < self.done_after


def test_a_miss_waits_for_the_entry_the_child_is_writing():
    cache, child = _Cache(hit_after=3), _Child()
    waiting = warmup._WaitingCache(cache, child, "order.traversal")
    assert waiting.load_overload("sig", None) == "compiled"
    assert cache.calls == 4 and child.waited_s > 0
    assert waiting.cache_path == "/somewhere"  # everything else is numba's cache's own


def test_a_miss_stops_waiting_when_the_step_is_done_and_compiles_as_before():
    cache, child = _Cache(hit_after=10**9), _Child(done_after=0.1)
    started = time.perf_counter()
    assert warmup._WaitingCache(cache, child, "order.traversal").load_overload("sig", None) is None
    assert 0.1 <= time.perf_counter() - started < 5
    # A child that is gone (or a step it does not run) is not waited for at all.
    cache = _Cache(hit_after=10**9)
    assert warmup._WaitingCache(cache, _Child(alive=False), "order.graph").load_overload("sig", None) is None
    assert cache.calls == 1


@pytest.fixture
def restored_kernels():
    """Puts back numba's own cache objects on the order kernels that ``start`` wrapped."""
    kernels = warmup._dispatchers(ORDER_KERNEL_MODULES)
    saved = [(kernel, kernel._cache) for kernel in kernels]
    yield
    for kernel, cache in saved:
        kernel._cache = cache


@pytest.fixture
def no_markers(tmp_path, monkeypatch):
    """Markers under tmp_path, so no test depends on (or leaves) a marker in the shared numba cache."""
    monkeypatch.setattr(warmup, "marker_path", lambda step, section: tmp_path / f"{step.name}.done")
    monkeypatch.delenv(warmup.ENV_SWITCH, raising=False)
    return tmp_path


STAGES = [("dedup", DedupConfig()), ("order", OrderConfig()), ("decompose", DecomposeConfig())]


def test_no_child_for_a_remote_runner_when_turned_off_or_when_warm(no_markers, monkeypatch, restored_kernels):
    assert warmup.start(STAGES, local=False) is None
    monkeypatch.setenv(warmup.ENV_SWITCH, "0")
    assert warmup.start(STAGES) is None
    monkeypatch.delenv(warmup.ENV_SWITCH)
    for step in warmup.planned_steps(STAGES):
        warmup.marker_path(step, None).touch()
    assert warmup.start(STAGES) is None
    # One step's marker gone (its kernels' source changed, or the cache was cleared): that step alone.
    warmup.marker_path(warmup.planned_steps(STAGES)[-1], None).unlink()
    monkeypatch.setattr(warmup, "_child_command", lambda folder, steps, sections: [sys.executable, "-c", "pass"])
    child = warmup.start(STAGES)
    try:
        assert child.steps == ["order.traversal"]
    finally:
        child.stop()
    assert not child.folder.exists()


def test_a_failing_child_never_fails_the_job(no_markers, monkeypatch, restored_kernels, caplog):
    from corpusmill.transforms.order import knn_graph

    monkeypatch.setattr(warmup, "_child_command", lambda folder, steps, sections: [
        sys.executable, "-c", "import sys; sys.stderr.write('no compiler here'); sys.exit(3)"])
    child = warmup.start(STAGES)
    assert child is not None
    child.process.wait(timeout=60)
    with caplog.at_level("DEBUG", logger="corpusmill.warmup"):
        # The stage's kernel, its cache wrapped: loaded or compiled here, no wait for a dead child.
        vectors = np.eye(4, dtype=np.float32)
        neighbors, _ = knn_graph.partition_knn(np.arange(4, dtype=np.int64), vectors, 2)
        assert neighbors.shape == (4, 2)
        assert not child.waits_for("order.graph")
        child.stop()
    assert "exited with 3" in caplog.text and "no compiler here" in caplog.text

    def no_process(*args, **kwargs):
        raise OSError("no fork for you")

    monkeypatch.setattr(warmup.subprocess, "Popen", no_process)
    made = []
    real_mkdtemp = warmup.tempfile.mkdtemp
    monkeypatch.setattr(warmup.tempfile, "mkdtemp", lambda **kwargs: made.append(real_mkdtemp(**kwargs)) or made[-1])
    with caplog.at_level("DEBUG", logger="corpusmill.warmup"):
        assert warmup.start(STAGES) is None
    assert "no fork for you" in caplog.text
    assert made and not Path(made[0]).exists()  # nothing left behind in the temp folder


# A job's process that records what numba compiles, then runs the CLI.
_RECORDING_JOB = r"""
import json, sys
from numba.core import event
compiled = []

class Listener(event.Listener):
    def on_start(self, ev):
        pass

    def on_end(self, ev):
        func = ev.data["dispatcher"].py_func
        compiled.append(f"{func.__module__}.{func.__qualname__}")

event.register("numba:compile", Listener())
from corpusmill.jobs import cli
code = cli.main(sys.argv[2:])
with open(sys.argv[1], "w") as handle:
    json.dump(compiled, handle)
sys.exit(code)
"""


@pytest.mark.slow
def test_the_job_loads_what_two_concurrent_children_compiled(tmp_path):
    # A fresh numba cache; two warm-up children at once (numba's cache writes must not clash),
    # then a job that starts none: it must load every order kernel the children compiled.
    from corpus_files import jsonl_bytes, sample_records

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), warmup.ENV_SWITCH: "0"}
    children = [subprocess.Popen([sys.executable, "-m", "corpusmill.transforms.warmup"], env=env,
                                 stderr=subprocess.PIPE) for _ in range(2)]
    for child in children:
        _, err = child.communicate(timeout=600)
        assert child.returncode == 0, err.decode()[-2000:]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(jsonl_bytes(sample_records(400)))
    record = tmp_path / "compiled.json"
    result = subprocess.run([sys.executable, "-c", _RECORDING_JOB, str(record), "run", "--input", str(corpus),
                             "--output", str(tmp_path / "out")], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    compiled = json.loads(record.read_text())
    assert any(name.startswith("corpusmill.transforms.dedup.") for name in compiled)  # the job's own step
    assert [name for name in compiled if name.startswith("corpusmill.transforms.order.")] == []
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [stage["name"] for stage in manifest["stages"]] == ["dedup", "order", "decompose"]
