"""A snapshot that says complete is complete: the output lock, the publish protocol, kills, odd outputs.

Runs are real `corpusmill run` processes on a few real documents of the bundled sample;
kills are SIGKILL at the protocol's named points (``CORPUSMILL_PAUSE_AT``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from corpus_files import jsonl_bytes, sample_records, snapshot_parquet_digests
from corpusmill.transforms.io.beam.lock import LOCK_NAME, OutputLock, OutputLockedError
from corpusmill.transforms.io.beam.snapshot import snapshot_problems

CLI = [sys.executable, "-m", "corpusmill.jobs.cli"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Forty real documents, two of them exact copies, in one JSONL file."""
    root = tmp_path_factory.mktemp("corpus")
    records = sample_records(40)
    records += [dict(records[0], id="copy-0"), dict(records[1], id="copy-1")]
    (root / "docs.jsonl").write_bytes(jsonl_bytes(records))
    return root


def run(corpus: Path, out: Path, *extra: str, env: dict | None = None, wait: bool = True):
    # Publishing is the same for every output; the order stage (tested in tests/transforms/order)
    # would add seconds of fixed pipeline work to each of these runs.
    command = [*CLI, "run", "--input", str(corpus), "--output", str(out), "--set", "output.num_shards=2",
               "--set", "order.enabled=false", *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **(env or {})})
    if not wait:
        return process
    stdout, stderr = process.communicate(timeout=300)
    return process.returncode, stdout, stderr


def wait_for_pause(process, point: str) -> None:
    for line in process.stderr:
        if f"paused at {point}" in line:
            return
    raise AssertionError(f"the run ended before {point}: exit {process.wait()}")


def manifest_digest(out: Path) -> str:
    return hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()


def files_digest(out: Path) -> dict[str, str]:
    return snapshot_parquet_digests(out)


# ---------------------------------------------------------------- the lock


def test_a_held_output_is_refused_naming_the_holder(tmp_path):
    with OutputLock(str(tmp_path / "out")):
        with pytest.raises(OutputLockedError, match=f"pid {os.getpid()}"):
            OutputLock(str(tmp_path / "out")).__enter__()
    # Released: the next run takes it, and the lock file is gone with its holder.
    with OutputLock(str(tmp_path / "out")) as lock:
        assert lock.taken_over is None
    assert not (tmp_path / "out" / LOCK_NAME).exists()


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from corpusmill.transforms.io.beam.lock import OutputLock\n"
        f"lock = OutputLock({str(out)!r}).__enter__(); print('held', flush=True); time.sleep(600)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(OutputLockedError, match=f"pid {holder.pid}"):
        OutputLock(str(out)).__enter__()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with OutputLock(str(out)) as lock:
        assert lock.taken_over["pid"] == holder.pid


# ---------------------------------------------------------------- concurrent runs


def read_success(out: Path) -> str | None:
    try:
        return (out / "_SUCCESS").read_text()
    except FileNotFoundError:
        return None


def consistent(out: Path) -> str | None:
    """None when the directory is a valid snapshot or says it is incomplete; else what is wrong.

    Read as the README tells a reader to: ``_SUCCESS``, then the manifest and the
    files, then ``_SUCCESS`` again; an observation during which ``_SUCCESS``
    changed saw a publish in progress and is not a snapshot reading.
    """
    success = read_success(out)
    if success is None:
        return None
    problem = _mismatch(out, success)
    return problem if problem and read_success(out) == success else None


def _mismatch(out: Path, success: str) -> str | None:
    try:
        text = (out / "manifest.json").read_bytes()
        manifest = json.loads(text)
    except (FileNotFoundError, ValueError) as error:
        return f"_SUCCESS beside an unreadable manifest: {error}"
    if success.strip() and success.strip() != hashlib.sha256(text).hexdigest():
        return "_SUCCESS names another manifest"
    for output in manifest["outputs"].values():
        for shard in output["shards"]:
            path = out / shard["path"]
            if not path.exists() or path.stat().st_size != shard["bytes"]:
                return f"_SUCCESS beside a manifest that does not match {shard['path']}"
    return None


def test_two_runs_into_one_output_never_show_a_wrong_complete_snapshot(corpus, tmp_path):
    out = tmp_path / "out"
    seen, stop = [], threading.Event()

    def poll():
        while not stop.is_set():
            problem = consistent(out)
            if problem:
                seen.append(problem)
            time.sleep(0.002)

    poller = threading.Thread(target=poll)
    poller.start()
    codes = []
    try:
        for _ in range(2):
            runs = [run(corpus, out, "--overwrite", wait=False) for _ in range(2)]
            codes.append(sorted(p.wait(timeout=300) for p in runs))
            errors = "".join(p.stderr.read() for p in runs)
            # One run published; the other was refused with the holder named, or ran after it.
            assert "pid" in errors or codes[-1] == [0, 0], errors
    finally:
        stop.set()
        poller.join()
    assert seen == []
    assert all(0 in round_codes and set(round_codes) <= {0, 2} for round_codes in codes)
    assert snapshot_problems(str(out)) == []


# ---------------------------------------------------------------- kills


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("clean") / "out"
    code, _, stderr = run(corpus, out, "--set", "dedup.keep=smallest_id")
    assert code == 0, stderr
    return files_digest(out)


@pytest.fixture(scope="module")
def published(corpus, tmp_path_factory) -> Path:
    """A published snapshot of the corpus, made with the default keep policy."""
    out = tmp_path_factory.mktemp("published") / "out"
    code, _, stderr = run(corpus, out)
    assert code == 0, stderr
    return out


# Every point of the protocol; locked and ready (the lock held before anything, and a verified
# staging not yet switched) run with -m slow, the suite keeps one kill before, during and after the switch.
@pytest.mark.parametrize("point", [pytest.param("locked", marks=pytest.mark.slow), "staged",
                                   pytest.param("ready", marks=pytest.mark.slow), "switching", "switched"])
def test_a_killed_overwrite_leaves_the_old_or_the_new_snapshot(corpus, tmp_path, published, uninterrupted, point):
    out = tmp_path / "out"
    shutil.copytree(published, out, symlinks=True)
    old = manifest_digest(out)
    process = run(corpus, out, "--overwrite", "--set", "dedup.keep=smallest_id",
                  env={"CORPUSMILL_PAUSE_AT": point}, wait=False)
    wait_for_pause(process, point)
    process.send_signal(signal.SIGKILL)
    process.wait()
    # The switch is one rename of the .current link: before it the old snapshot is
    # published, whole; after it the new one; never neither.
    assert snapshot_problems(str(out)) == []
    assert (manifest_digest(out) == old) == (point in ("locked", "staged", "ready", "switching"))
    inspect = subprocess.run([*CLI, "inspect", str(out), "--rows", "0"], capture_output=True, text=True)
    assert inspect.returncode == 0 and "Traceback" not in inspect.stderr, inspect.stdout + inspect.stderr
    # A rerun completes, removes every leftover, and gives the uninterrupted bytes.
    code, _, stderr = run(corpus, out, "--overwrite", "--set", "dedup.keep=smallest_id")
    assert code == 0, stderr
    assert snapshot_problems(str(out)) == []
    assert files_digest(out) == uninterrupted
    assert not [p.name for p in out.iterdir() if p.name.startswith(("_staging-", "_previous-", ".current-", ".corpusmill"))]
    assert len(list((out / ".versions").iterdir())) == 1


def test_a_snapshot_copied_flat_is_replaced_and_stays_readable(corpus, tmp_path, published, uninterrupted):
    # A copy that followed the links (shutil.copytree, cp -rL) is a snapshot in the flat
    # layout, as corpusmill wrote before versions: it verifies, and --overwrite replaces it.
    out = tmp_path / "out"
    shutil.copytree(published, out)
    assert not (out / "docs").is_symlink() and snapshot_problems(str(out)) == []
    code, _, stderr = run(corpus, out, "--overwrite", "--set", "dedup.keep=smallest_id")
    assert code == 0, stderr
    assert (out / "docs").is_symlink() and (out / ".current").is_symlink()
    assert snapshot_problems(str(out)) == [] and files_digest(out) == uninterrupted
    assert sorted(p.name for p in out.iterdir() if not p.is_symlink()) == [".versions"]


# ---------------------------------------------------------------- odd outputs


def test_overwrite_refuses_a_folder_that_is_not_a_snapshot(corpus, tmp_path):
    out = tmp_path / "project"
    (out / "docs").mkdir(parents=True)
    (out / "docs" / "guide.md").write_text("guide")
    (out / "report.html").write_text("<html>mine</html>")
    for extra in ((), ("--overwrite",)):
        code, _, stderr = run(corpus, out, *extra)
        assert code == 2 and "--output" in stderr
    assert (out / "docs" / "guide.md").read_text() == "guide"
    assert (out / "report.html").read_text() == "<html>mine</html>"


def test_overwrite_keeps_user_files_out_of_harms_way(corpus, tmp_path, published):
    out = tmp_path / "out"
    shutil.copytree(published, out, symlinks=True)
    (out / "NOTES.txt").write_text("mine")
    (out / "docs" / "extra.parquet").write_text("also mine")
    code, _, stderr = run(corpus, out, "--overwrite")
    assert code == 2 and "docs/extra.parquet" in stderr
    (out / "docs" / "extra.parquet").unlink()
    assert run(corpus, out, "--overwrite")[0] == 0
    assert (out / "NOTES.txt").read_text() == "mine"


@pytest.mark.parametrize("where, words", [
    (lambda corpus, tmp: "", "empty"),
    (lambda corpus, tmp: "/", "root"),
    (lambda corpus, tmp: str(corpus / "out"), "inside the input"),
    (lambda corpus, tmp: str(corpus.parent), "inside the output"),
])
def test_outputs_that_no_run_may_write_are_refused_before_anything_runs(corpus, tmp_path, where, words):
    before = sorted(p.name for p in corpus.iterdir())
    code, _, stderr = run(corpus, where(corpus, tmp_path))
    assert code == 2 and words in stderr, stderr
    assert sorted(p.name for p in corpus.iterdir()) == before


def test_leftover_staging_is_removed_by_the_next_run(corpus, tmp_path):
    out = tmp_path / "out"
    (out / "_staging-deadbeef" / "docs").mkdir(parents=True)
    (out / "_staging-deadbeef" / "docs" / "part-00000-of-00002.parquet").write_text("half written")
    assert run(corpus, out)[0] == 0
    assert not (out / "_staging-deadbeef").exists()


def test_a_failed_run_leaves_no_staging_and_the_old_snapshot_published(corpus, tmp_path, published):
    out = tmp_path / "out"
    shutil.copytree(published, out, symlinks=True)
    old = manifest_digest(out)
    # A tokenizer file that exists but is no tokenizer fails inside the pipeline, when workers load it.
    broken = tmp_path / "tokenizer.json"
    broken.write_text("{not a tokenizer")
    code, _, stderr = run(corpus, out, "--overwrite", "--set", f"decompose.tokenizer=hf:{broken}")
    assert code == 1, stderr
    assert manifest_digest(out) == old and snapshot_problems(str(out)) == []
    assert not [p for p in out.iterdir() if p.name.startswith("_staging-")]


def test_inspect_names_a_damaged_or_missing_shard_instead_of_crashing(corpus, tmp_path, published):
    out = tmp_path / "out"
    shutil.copytree(published, out, symlinks=True)
    shards = sorted((out / "docs").glob("*.parquet"))
    data = bytearray(shards[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    shards[0].write_bytes(bytes(data))
    shards[1].unlink()
    result = subprocess.run([*CLI, "inspect", str(out)], capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert f"docs/{shards[0].name}: sha256 differs" in result.stdout
    assert f"docs/{shards[1].name}: missing" in result.stdout
    assert "NOT COMPLETE" in result.stdout and "Traceback" not in result.stderr


def test_a_run_that_keeps_nothing_publishes_its_dead_letters(corpus, tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = run(corpus, out, "--set", "input.text_field=content")
    assert code == 3 and "no document was kept" in stderr, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["kept"] == 0 and manifest["counts"]["rejected"] == 42
    assert manifest["counts"]["rejected_by_reason"] == {"missing_text": 42}
    assert manifest["warnings"] and snapshot_problems(str(out)) == []
