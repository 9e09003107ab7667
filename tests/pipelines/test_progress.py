"""Progress: pass-through counting steps on a real FnApiRunner pipeline, the reporter's log and summary table."""

from __future__ import annotations

import logging
import time

import apache_beam as beam
import pyarrow as pa

from corpusmill.pipelines import progress
from corpusmill.transforms.stage import StageResult


def _table(n: int, start: int = 0) -> pa.Table:
    return pa.table({"id": [f"d{i:03d}" for i in range(start, start + n)]})


def _even(table: pa.Table, keep: bool) -> pa.Table:
    return table.filter(pa.array([(int(i[1:]) % 2 == 0) == keep for i in table["id"].to_pylist()]))


def _slow_keep_even(element):
    time.sleep(0.15)  # long enough for the reporter's thread to log in between
    shard, table = element
    return shard, _even(table, True)


def _removed_odd(element):
    """The stage's duplicates: record batches, as stages return them."""
    return pa.record_batch([_even(element[1], False)["id"].combine_chunks()], names=["id"])


def test_counting_steps_pass_elements_through_and_feed_the_log_and_the_summary_table(caplog):
    pipeline = beam.Pipeline(runner="FnApiRunner")
    read = (pipeline | beam.Create([(0, _table(10)), (1, _table(6, start=10))])
            | progress.Count(progress.READ, progress.DOCUMENTS))
    rejected = pipeline | "Bad" >> beam.Create([pa.record_batch([pa.array(["x", "y"])], names=["line"])])
    _ = rejected | progress.Count(progress.READ, progress.REJECTED)
    docs = read | progress.Count(progress.READ, progress.OUT)
    kept = docs | "KeepEven" >> beam.Map(_slow_keep_even)
    dropped = docs | "Dropped" >> beam.Map(_removed_odd)
    result = progress.counted("dedup", docs, StageResult(kept, dropped, None, None))
    # A stage that hands its documents on unchanged and writes files beside them (as decompose does).
    files = result.docs | "WriteBesides" >> beam.Map(lambda element: {"kind": "shard", "rows": element[1].num_rows})
    result = progress.counted("decompose", result.docs, StageResult(result.docs, None, files, None))
    ids = result.docs | beam.FlatMap(lambda element: element[1]["id"].to_pylist())
    collected = ids | beam.combiners.ToList() | beam.Map(sorted)
    from apache_beam.testing.util import assert_that, equal_to

    assert_that(collected, equal_to([[f"d{i:03d}" for i in range(0, 16, 2)]]))
    with caplog.at_level(logging.INFO, logger="corpusmill"):
        with progress.ProgressReporter(["dedup", "decompose"], interval=0.1) as watch:
            outcome = pipeline.run()
            outcome.wait_until_finish()
            watch.log_progress()  # the pipeline's last state, whatever the thread's last tick saw
        table = watch.stage_table(outcome)

    read_row, dedup_row, decompose_row, write_row = table
    assert [row["stage"] for row in table] == ["read", "dedup", "decompose", "write"]
    # 16 documents + 2 rejected records read; 16 handed on, 8 kept, 8 duplicates.
    assert (read_row["documents_in"], read_row["documents_out"], read_row["rejected"]) == (18, 16, 2)
    assert (dedup_row["documents_in"], dedup_row["documents_out"], dedup_row["duplicates"]) == (16, 8, 8)
    assert dedup_row["rejected"] == 0 and write_row["documents_in"] == 8
    assert (decompose_row["documents_in"], decompose_row["documents_out"], decompose_row["duplicates"]) == (8, 8, 0)
    assert all(row["seconds"] is not None and row["seconds"] >= 0 for row in table)
    assert abs(sum(row["seconds"] for row in table) - watch.elapsed()) < 0.05
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("corpusmill")]
    assert messages[0] == "pipeline started: read -> dedup -> decompose -> write"
    assert any("read: started, first" in m for m in messages)
    assert any("dedup: started, first" in m for m in messages)
    starts = [m.split("] ")[1].split(":")[0] for m in messages if ": started, first" in m]
    assert starts == ["read", "dedup", "decompose", "write"]
    assert any("progress: documents read:" in m and "stage reached:" in m for m in messages)
    assert any("stage reached: write (8 documents in, writing shards)" in m for m in messages)
    assert "pipeline finished" in messages[-1]
    # Structured fields for --log-format json travel on the records.
    events = {getattr(r, "corpusmill", {}).get("event") for r in caplog.records}
    assert {"pipeline_started", "stage_started", "progress", "pipeline_finished"} <= events
    assert progress.reporter() is not watch  # the run's reporter is the process's only while it runs


def test_summary_table_is_aligned_text():
    rows = [{"stage": "read", "documents_in": 2994, "documents_out": 2994, "duplicates": 0, "rejected": 0,
             "seconds": 3.64},
            {"stage": "write", "documents_in": 1725, "documents_out": None, "duplicates": None, "rejected": None,
             "seconds": 0.1}]
    total = {"stage": "total", "documents_in": 2994, "documents_out": 1725, "duplicates": 1269, "rejected": 0,
             "seconds": 21.5}
    lines = progress.format_table(rows, total).splitlines()
    assert lines[0].split() == ["stage", "documents", "in", "documents", "out", "duplicates", "rejected", "seconds"]
    assert lines[2].split() == ["read", "2,994", "2,994", "0", "0", "3.6"]
    assert lines[3].split() == ["write", "1,725", "-", "-", "-", "0.1"]
    assert lines[-1].split() == ["total", "2,994", "1,725", "1,269", "0", "21.5"]
    assert len({len(line) for line in lines}) == 1  # right-aligned columns: every line as wide


def test_rows_of_counts_tables_pairs_and_anything_else():
    assert progress.rows_of(_table(3)) == 3
    assert progress.rows_of((7, _table(4))) == 4
    assert progress.rows_of(_table(5).to_batches()[0]) == 5
    assert progress.rows_of({"kind": "shard"}) == 1
