"""Progress of a running job, for the person or the scheduler watching it.

``build_pipeline`` puts a pass-through counting step (``Count``) on what each
stage hands on: the documents read, the documents after each stage, each
stage's duplicates, and the records rejected while reading. Every
batch that passes is counted twice:

* in a Beam counter of the ``corpusmill.progress`` namespace, which every
  runner aggregates (Dataflow shows it live in its UI) and from which the
  end-of-run summary table takes its document counts;
* in this process's ``ProgressReporter``, which logs a stage's start when its
  first documents arrive and a progress line every ``interval`` seconds
  (documents read, the stage reached, documents in and out so far).

With the local FnApiRunner the pipeline runs inside the process that started
it, so the reporter ``run_job`` opens sees every batch and its lines are the
run's log. On a remote runner (Dataflow, Flink, Spark) or with local worker
processes (``--direct_running_mode=multi_processing``) the steps run in the
workers: each worker process logs its own progress (``worker <pid>:`` lines in
the worker logs), and the driver's summary still has every count, from the
counters, but no per-stage seconds.

Per-stage seconds are wall-clock: from the moment the previous stage handed
on its last documents to the moment this stage handed on its last documents
or duplicates; ``write`` is the rest of the pipeline (the shard writers, and
whatever side outputs Beam ran last). Stages that Beam fuses run interleaved,
so the split between them is approximate; the seconds add up to the
pipeline's wall time.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import apache_beam as beam
from apache_beam.metrics.metric import Metrics, MetricsFilter

PROGRESS_NAMESPACE = "corpusmill.progress"
INTERVAL_SECONDS = 10.0
READ, WRITE = "read", "write"
# What a counting step sees: documents (tables of rows), a stage's removed duplicates, the
# rejected records; shard records and stats only mark when a stage handed on its last output.
DOCUMENTS, OUT, DUPLICATES, REJECTED, SHARDS = "documents", "docs", "duplicates", "rejected", "shards"
# The documents of a stage that hands its input on unchanged and works beside it: they leave
# before its work is done, so the next stage starts with the stage's first file written.
PASSED = "docs_passed"

log = logging.getLogger("corpusmill.progress")


def rows_of(element: Any) -> int:
    """Rows in one element: a table or record batch, a ``(shard, table)`` pair, or 1 for anything else."""
    value = element[-1] if isinstance(element, tuple) and element else element
    rows = getattr(value, "num_rows", None)
    return int(rows) if isinstance(rows, int) else 1


def counter_name(stage: str, role: str) -> str:
    """The Beam counter of one counting step."""
    return f"{stage}_{role}"


class _CountDoFn(beam.DoFn):
    """Hands every element on unchanged, counting its rows (see the module docstring)."""

    def __init__(self, stage: str, role: str) -> None:
        self._stage, self._role = stage, role
        self._counter = Metrics.counter(PROGRESS_NAMESPACE, counter_name(stage, role))

    def process(self, element: Any) -> Iterator[Any]:
        rows = rows_of(element)
        self._counter.inc(rows)
        reporter().add(self._stage, self._role, rows)
        yield element


class Count(beam.PTransform):
    """A pass-through counting step: ``PCollection[T] -> PCollection[T]``, the same elements.

    Args:
        stage: The stage the elements belong to (``read``, a stage's name).
        role: What they are: ``documents`` (read), ``docs`` (handed on),
            ``docs_passed`` (handed on unchanged), ``duplicates``, ``rejected`` or
            ``shards`` (files written).
    """

    def __init__(self, stage: str, role: str) -> None:
        super().__init__(label=f"Progress{stage.title()}{role.title()}")
        self._stage, self._role = stage, role

    def expand(self, pcoll):
        return pcoll | "Count" >> beam.ParDo(_CountDoFn(self._stage, self._role))


def counted(stage: str, docs: Any, result: Any) -> Any:
    """A stage's ``StageResult`` with a counting step on its documents and its duplicates.

    A stage that hands its input on unchanged (``result.docs is docs``) works
    beside the documents, so its shard records mark when it is done. Otherwise
    its shard records and stats are not watched: Beam may run those branches
    after later stages' work, which would then count as this stage's.

    Args:
        stage: The stage's name.
        docs: The documents the stage was given.
        result: Its ``StageResult``.
    """
    passes_through = result.docs is docs and result.shards is not None
    watched = {"docs": result.docs | Count(stage, PASSED if passes_through else OUT)}
    if result.duplicates is not None:
        watched["duplicates"] = result.duplicates | Count(stage, DUPLICATES)
    if passes_through:
        watched["shards"] = result.shards | Count(stage, SHARDS)
    return result._replace(**watched)


@dataclass
class _Point:
    rows: int = 0
    first: float | None = None
    last: float | None = None


@dataclass
class StageRow:
    """One line of the summary table."""

    stage: str
    documents_in: int | None
    documents_out: int | None
    duplicates: int | None
    rejected: int | None
    seconds: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ProgressReporter:
    """Counts what passes the counting steps in this process and logs it as the run goes.

    Use it as a context manager around the pipeline's run: it becomes the
    process's reporter, starts its logging thread, and stops both on exit.

    Args:
        stages: The job's stages in pipeline order (without read and write).
        interval: Seconds between progress lines.
        worker: A worker's own reporter (no driver in this process): its
            lines name the process, and it logs only when something changed.
    """

    stages: Sequence[str] = ()
    interval: float = INTERVAL_SECONDS
    worker: bool = False
    _points: dict[tuple[str, str], _Point] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _started: float = field(default_factory=time.monotonic)
    _ended: float | None = None
    _logged_rows: int = -1

    def __enter__(self) -> "ProgressReporter":
        global _active
        self._started = time.monotonic()
        _active = self
        log.info("pipeline started: %s", " -> ".join((READ, *self.stages, WRITE)),
                 extra={"corpusmill": {"event": "pipeline_started", "stages": [READ, *self.stages, WRITE]}})
        self._thread = threading.Thread(target=self._loop, name="corpusmill-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        global _active
        self._ended = time.monotonic()
        self._stop.set()
        self._thread.join()
        if _active is self:
            _active = None
        if exc_info[0] is None:
            log.info("[%6.1f s] pipeline finished; publishing the snapshot", self.elapsed(),
                     extra={"corpusmill": {"event": "pipeline_finished", "elapsed_s": round(self.elapsed(), 3)}})

    def elapsed(self) -> float:
        """Seconds since the pipeline started (until it ended, once it has)."""
        return (self._ended if self._ended is not None else time.monotonic()) - self._started

    def add(self, stage: str, role: str, rows: int) -> None:
        """Counts ``rows`` that passed one counting step; logs a stage's start on its first documents."""
        now = time.monotonic()
        with self._lock:
            point = self._points.setdefault((stage, role), _Point())
            first = point.first is None
            if first:
                point.first = now
            point.rows += rows
            point.last = now
        if first and not self.worker:
            self._log_start(stage, role, rows)

    def _log_start(self, stage: str, role: str, rows: int) -> None:
        """A stage starts when the step before it hands on its first documents."""
        if (stage, role) == (READ, DOCUMENTS):
            starting, message = READ, f"read: started, first {rows:,} documents read"
        elif role in (OUT, SHARDS):
            order = [READ, *self.stages, WRITE]
            starting = order[order.index(stage) + 1] if stage in order[:-1] else WRITE
            handed_on = self._rows(stage, PASSED) if role == SHARDS else rows
            message = f"{starting}: started, first {handed_on or 0:,} documents in"
        else:
            return
        log.info("[%6.1f s] %s", self.elapsed(), message,
                 extra={"corpusmill": {"event": "stage_started", "stage": starting,
                                       "elapsed_s": round(self.elapsed(), 3), "documents_in": rows}})

    def _rows(self, stage: str, role: str) -> int | None:
        point = self._points.get((stage, role))
        if point is None and role == OUT:
            point = self._points.get((stage, PASSED))
        return None if point is None else point.rows

    def snapshot(self) -> dict[str, Any]:
        """Counts so far: documents read, and per stage documents in and out."""
        with self._lock:
            stages = list(self.stages) or sorted({s for s, _ in self._points if s != READ})
            read = self._rows(READ, DOCUMENTS) or 0
            previous = self._rows(READ, OUT)
            per_stage, reached = {}, READ
            for stage in stages:
                out = self._rows(stage, OUT)
                if previous is not None:
                    reached = stage
                per_stage[stage] = {"in": previous or 0, "out": out or 0}
                previous = out
            if previous is not None and stages:
                reached = WRITE
            return {"documents_read": read, "rejected": self._rows(READ, REJECTED) or 0,
                    "stage": reached, "stages": per_stage}

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.log_progress()

    def log_progress(self) -> None:
        """One progress line: documents read, the stage reached, its documents in and out."""
        state = self.snapshot()
        total = sum(p.rows for p in self._points.values())
        if self.worker and total == self._logged_rows:
            return
        self._logged_rows = total
        who = f"worker {os.getpid()}: " if self.worker else ""
        if not total:
            # Nothing passed a counting step in this process yet: before the first batch, or
            # because the pipeline runs in worker processes, which count (and log) it themselves.
            log.info("[%6.1f s] %sprogress: no documents counted here yet (worker processes and remote "
                     "runners count their own; the summary has them all)", self.elapsed(), who,
                     extra={"corpusmill": {"event": "progress", "elapsed_s": round(self.elapsed(), 3), **state}})
            return
        parts = [f"documents read: {state['documents_read']:,}"]
        if state["rejected"]:
            parts.append(f"rejected: {state['rejected']:,}")
        stage = state["stages"].get(state["stage"])
        if stage is not None:
            done = f"{stage['out']:,} out" if stage["out"] else "none out yet"
            parts.append(f"stage reached: {state['stage']} ({stage['in']:,} in, {done})")
        elif state["stage"] == WRITE:
            handed_on = list(state["stages"].values())[-1]["out"]
            parts.append(f"stage reached: write ({handed_on:,} documents in, writing shards)")
        else:
            parts.append(f"stage reached: {state['stage']}")
        log.info("[%6.1f s] %sprogress: %s", self.elapsed(), who, " · ".join(parts),
                 extra={"corpusmill": {"event": "progress", "elapsed_s": round(self.elapsed(), 3), **state}})

    def _finished(self) -> dict[str, float]:
        """Per stage, seconds from the start until it handed on its last output (read, then each stage)."""
        with self._lock:
            points = dict(self._points)
        finished, so_far = {}, 0.0
        for stage in (READ, *self.stages):
            lasts = [p.last - self._started for (s, _), p in points.items() if s == stage and p.last is not None]
            so_far = max([so_far, *lasts])
            finished[stage] = so_far
        return finished

    def stage_table(self, result: Any = None) -> list[dict[str, Any]]:
        """The summary table: per stage documents in and out, duplicates, rejected, seconds.

        Args:
            result: The pipeline's result: counts come from its
                ``corpusmill.progress`` counters when it has them (every
                runner), else from what this process saw.

        Returns:
            One dict per row (``StageRow``): read, each stage, write.
        """
        counts = _committed_counters(result)
        if not counts:
            with self._lock:
                counts = {counter_name(s, r): p.rows for (s, r), p in self._points.items()}
        seen = bool(self._points)
        finished = self._finished() if seen else {}
        end = self.elapsed()

        def seconds(stage: str, before: float) -> float | None:
            return round(max(0.0, finished[stage] - before), 3) if seen else None

        # Records read: the valid documents and the records rejected while reading; those and the
        # documents whose id came before are the read stage's rejected.
        read_in = counts.get(counter_name(READ, DOCUMENTS), 0) + counts.get(counter_name(READ, REJECTED), 0)
        handed_on = counts.get(counter_name(READ, OUT), 0)
        rows = [StageRow(READ, read_in, handed_on, 0, read_in - handed_on, seconds(READ, 0.0))]
        before = finished.get(READ, 0.0)
        for stage in self.stages:
            out = counts.get(counter_name(stage, OUT), counts.get(counter_name(stage, PASSED), 0))
            duplicates = counts.get(counter_name(stage, DUPLICATES), 0)
            rows.append(StageRow(stage, handed_on, out, duplicates, max(0, handed_on - out - duplicates),
                                 seconds(stage, before)))
            before = max(before, finished.get(stage, before))
            handed_on = out
        rows.append(StageRow(WRITE, handed_on, None, None, None, round(max(0.0, end - before), 3) if seen else None))
        return [row.as_dict() for row in rows]


def _committed_counters(result: Any) -> dict[str, int]:
    if result is None:
        return {}
    try:
        query = result.metrics().query(MetricsFilter().with_namespace(PROGRESS_NAMESPACE))
    except Exception:  # noqa: BLE001 - a runner without metrics: fall back to this process's counts
        return {}
    counts: dict[str, int] = {}
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        counts[counter.key.metric.name] = counts.get(counter.key.metric.name, 0) + int(value or 0)
    return counts


_active: ProgressReporter | None = None
_worker: ProgressReporter | None = None
_worker_lock = threading.Lock()


def reporter() -> ProgressReporter:
    """This process's reporter: the driver's while a run is open here, else a worker's own."""
    global _worker
    if _active is not None:
        return _active
    with _worker_lock:
        if _worker is None:
            _worker = ProgressReporter(worker=True)
            _worker._thread = threading.Thread(target=_worker._loop, name="corpusmill-progress", daemon=True)
            _worker._thread.start()
        return _worker


def format_table(rows: Sequence[dict[str, Any]], total: dict[str, Any] | None = None) -> str:
    """The summary table as aligned text, one line per stage and a total line.

    Args:
        rows: ``stage_table`` rows (as stored in the manifest's ``timings.stages``).
        total: An optional last row in the same form (the whole run).
    """
    header = ("stage", "documents in", "documents out", "duplicates", "rejected", "seconds")
    keys = ("stage", "documents_in", "documents_out", "duplicates", "rejected", "seconds")

    def cell(key: str, value: Any) -> str:
        if value is None:
            return "-"
        if key == "seconds":
            return f"{value:,.1f}"
        return f"{value:,}" if isinstance(value, int) else str(value)

    body = [[cell(k, row.get(k)) for k in keys] for row in [*rows, *([total] if total else [])]]
    widths = [max(len(h), *(len(line[i]) for line in body)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    lines = [line(header), line(["-" * w for w in widths])]
    lines += [line(cells) for cells in body[:len(rows)]]
    if total:
        lines += [line(["-" * w for w in widths]), line(body[-1])]
    return "\n".join(lines)
