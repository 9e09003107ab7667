"""The cases of ../shared/repro/reliability_cases.sh, each run end to end.

Every case ends with a correct snapshot (every input record accounted for) or a
clear message and a non-zero status. The publishing cases (concurrent,
overwrite_user, empty_output, output_in_input, all_rejected) are in
tests/pipelines/test_publishing.py.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corpusmill.jobs.cli import main
from corpusmill.transforms.io.beam.snapshot import snapshot_problems


# These cases are about reading and accounting; the order stage (tested in
# tests/transforms/order) adds seconds of fixed pipeline work to every run.
NO_ORDER = ("--set", "order.enabled=false")


def run_cli(*args: str) -> tuple[int, dict | None]:
    code = main(["run", *args, *NO_ORDER])
    out = Path(args[args.index("--output") + 1])
    manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").exists() else None
    return code, manifest


def rows(out: Path, name: str) -> list[dict]:
    return [row for path in sorted((out / name).glob("*.parquet")) for row in pq.read_table(path).to_pylist()]


def accounted(manifest: dict) -> bool:
    counts = manifest["counts"]
    return counts["balanced"] and counts["input_records"] == counts["kept"] + counts["duplicates"] + counts["rejected"]


def test_gzip_crc_a_flipped_byte_keeps_no_garbled_document(tmp_path):
    rng = random.Random(0)
    raw = "".join(json.dumps({"id": f"d{i}", "text": " ".join(str(rng.random()) for _ in range(60))}) + "\n"
                  for i in range(2000)).encode()
    damaged = bytearray(gzip.compress(raw))
    damaged[len(damaged) // 2] ^= 0xFF
    (tmp_path / "gz").mkdir()
    (tmp_path / "gz" / "flip.jsonl.gz").write_bytes(bytes(damaged))
    original = {json.loads(line)["id"]: json.loads(line)["text"] for line in raw.decode().splitlines()}
    code, manifest = run_cli("--input", str(tmp_path / "gz"), "--output", str(tmp_path / "out"),
                             "--set", "decompose.enabled=false")
    assert accounted(manifest)
    assert all(original[doc["id"]] == doc["text"] for doc in rows(tmp_path / "out", "docs"))
    reasons = manifest["counts"]["rejected_by_reason"]
    assert reasons.get("corrupt_file", 0) > 0
    assert code in (0, 3)


@pytest.mark.parametrize("value, expected", [(1700000000123456, 1700000000123456), (1700000000123, 1700000000123000)])
def test_numeric_epochs_are_read_by_magnitude(tmp_path, value, expected):
    (tmp_path / "ts").mkdir()
    (tmp_path / "ts" / "a.jsonl").write_text(
        '{"id":"a","text":"hello world"}\n' + json.dumps({"id": "b", "text": "hello again", "timestamp": value}) + "\n")
    code, manifest = run_cli("--input", str(tmp_path / "ts"), "--output", str(tmp_path / "out"))
    assert code == 0 and accounted(manifest)
    table = pa.concat_tables(pq.read_table(p) for p in sorted((tmp_path / "out" / "docs").glob("*.parquet")))
    micros = dict(zip(table.column("id").to_pylist(), table.column("timestamp").cast(pa.int64()).to_pylist()))
    assert micros["b"] == expected
    assert main(["inspect", str(tmp_path / "out"), "--rows", "1"]) == 0


def test_a_file_name_that_is_not_utf8_is_read(tmp_path):
    folder = tmp_path / "ln"
    folder.mkdir()
    (folder / "ok.jsonl").write_text('{"text":"ok doc"}\n')
    with open(os.path.join(os.fsencode(folder), b"r\xe9sum\xe9.txt"), "wb") as handle:
        handle.write(b"a document")
    code, manifest = run_cli("--input", str(folder), "--output", str(tmp_path / "out"))
    assert code == 0 and accounted(manifest) and manifest["counts"]["kept"] == 2
    assert any("\\xe9" in doc["id"] for doc in rows(tmp_path / "out", "docs"))


def test_globstar_matches_files_directly_under_the_root(tmp_path):
    (tmp_path / "gs" / "sub").mkdir(parents=True)
    (tmp_path / "gs" / "a.jsonl").write_text('{"id":"top","text":"top level doc"}\n')
    (tmp_path / "gs" / "sub" / "b.jsonl").write_text('{"id":"sub","text":"nested doc"}\n')
    code, manifest = run_cli("--input", f"{tmp_path}/gs/**/*.jsonl", "--output", str(tmp_path / "out"))
    assert code == 0 and manifest["counts"]["kept"] == 2


def test_a_byte_order_mark_never_decides_a_record(tmp_path):
    (tmp_path / "bom").mkdir()
    (tmp_path / "bom" / "clean.jsonl").write_bytes(
        b'\xef\xbb\xbf{"id":"c0","text":"clean file first doc"}\n{"id":"c1","text":"second"}\n')
    (tmp_path / "bom" / "list_meta.jsonl").write_bytes(
        b'\xef\xbb\xbf{"id":"e0","text":"valid first doc"}\n{"id":"e1","text":"other text","extra":[1,2]}\n')
    code, manifest = run_cli("--input", str(tmp_path / "bom"), "--output", str(tmp_path / "out"))
    assert code == 0 and manifest["counts"]["kept"] == 4 and manifest["counts"]["rejected"] == 0


def test_files_not_read_are_listed_with_a_reason(tmp_path):
    folder = tmp_path / "se"
    folder.mkdir()
    (folder / "a.jsonl").write_text('{"text":"kept doc"}\n')
    import bz2
    import lzma

    (folder / "b.jsonl.bz2").write_bytes(bz2.compress(b'{"text":"x"}\n'))
    (folder / "c.jsonl.xz").write_bytes(lzma.compress(b'{"text":"y"}\n'))
    (folder / "d.csv").write_text("id,text\n1,z\n")
    code, manifest = run_cli("--input", str(folder), "--output", str(tmp_path / "out"))
    assert code == 0 and manifest["counts"]["kept"] == 3
    assert [f["path"] for f in manifest["input"]["file_list"]] == ["a.jsonl", "b.jsonl.bz2", "c.jsonl.xz"]
    (skipped,) = manifest["input"]["skipped"]
    assert skipped["path"].endswith("d.csv") and skipped["reason"]


def test_a_fifo_is_rejected_without_being_opened(tmp_path):
    folder = tmp_path / "ff"
    folder.mkdir()
    os.mkfifo(folder / "x.jsonl")
    (folder / "y.jsonl").write_text('{"text":"a real doc"}\n')
    # A subprocess with a deadline: a hang must fail the test, not stall the suite.
    result = subprocess.run([sys.executable, "-m", "corpusmill.jobs.cli", "run", "--input", str(folder),
                             "--output", str(tmp_path / "out"), *NO_ORDER], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert accounted(manifest) and manifest["counts"]["rejected_by_reason"] == {"not_a_regular_file": 1}


def test_a_zero_byte_compressed_file_is_a_counted_rejection(tmp_path):
    (tmp_path / "zg").mkdir()
    (tmp_path / "zg" / "a.jsonl.gz").write_bytes(b"")
    (tmp_path / "zg" / "b.jsonl").write_text('{"text":"a real doc"}\n')
    code, manifest = run_cli("--input", str(tmp_path / "zg"), "--output", str(tmp_path / "out"))
    assert code == 0 and accounted(manifest)
    assert manifest["counts"]["rejected_by_reason"] == {"empty_file": 1}
    assert snapshot_problems(str(tmp_path / "out")) == []


def test_a_dead_sdk_worker_fails_the_run_instead_of_hanging(tmp_path):
    # A concurrent.py in the working directory shadows the standard library in the
    # worker process (started with `python -m`, so the directory is on its path).
    (tmp_path / "concurrent.py").write_text("raise ImportError('shadowed standard library module')\n")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text('{"text":"a real doc"}\n')
    script = Path(sys.executable).parent / "corpusmill"
    if not script.exists():
        pytest.skip("needs the installed corpusmill console script")
    result = subprocess.run([str(script), "run", "--input", "in", "--output", "out", *NO_ORDER, "--",
                             "--direct_num_workers=1", "--direct_running_mode=multi_processing"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=90)
    assert result.returncode == 1
    assert "SDK worker process died" in result.stderr and "shadowed standard library module" in result.stderr
    assert not (tmp_path / "out" / "_SUCCESS").exists()
