"""Local runs that lose nothing: Beam's time-based data-plane flush is switched off.

Beam 2.77's data plane (``apache_beam/runners/worker/data_plane.py``) has two
output streams. The size-based one flushes from the writing thread itself. The
time-based one (``TimeBasedBufferingClosableOutputStream``) also flushes from a
``PeriodicThread`` every ``data_buffer_time_limit_ms``: ``flush()`` hands a
copy of the buffer to the send callback and clears the buffer afterwards, and
only the flush takes ``_flush_lock``, not the writers. Whatever a writer
appends between the copy and the clear is cleared unsent (the flushing thread
gives up the GIL in between: copying megabytes, building the message, waiting
on a full send queue): whole elements vanish and the job still ends DONE. A
stream is at risk while it is written for longer than one period (1 s).
``benchmarks/beam_flush_race.py`` reproduces it.

Who turns the time-based flush on, on the local FnApiRunner:

* the runner side, in every mode that talks gRPC (``multi_threading`` and
  ``multi_processing``): ``fn_api_runner/worker_handlers.py`` builds its
  ``BeamFnDataServicer`` with ``DATA_BUFFER_TIME_LIMIT_MS = 1000``, so a
  stage's input that the runner holds and writes to a worker in pieces (a
  Flatten's buffer, say) can lose elements when writing it takes over a second;
* the worker side in ``multi_threading``: ``EmbeddedGrpcWorkerHandler`` falls
  back to the same constant, so a bundle that emits for seconds can lose
  outputs on their way to the runner's shuffle;
* the worker side in ``multi_processing`` only with the experiment
  ``data_buffer_time_limit_ms=N`` (``sdk_worker_main`` reads it from the
  pipeline options the workers receive; the default is 0, off). The
  FnApiRunner alone hands its worker processes no options at all; Beam's
  DirectRunner hands them every option, the experiment included.

``in_memory`` (the default) hands data over in the runner's own thread
through ``InMemoryDataChannel`` without a time limit and is not affected.

So a local run sets the constant to 0 for its duration (both runner and
embedded-worker sides then use the size-based stream) and refuses the
experiment. A batch job gives up nothing by this: the time-based flush only
shortens latency for streaming; a stream is still flushed at 10 MB and when
the bundle closes.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from typing import Iterator

import apache_beam as beam
from apache_beam.options.pipeline_options import DebugOptions, PipelineOptions, StandardOptions
from apache_beam.runners.portability.fn_api_runner import worker_handlers

from corpusmill.schemas.config import ConfigError

log = logging.getLogger("corpusmill")

# Runners that run the pipeline in this process through the FnApiRunner's data plane, as
# Beam spells them lower-cased (DirectRunner runs a batch pipeline on the FnApiRunner
# where its Prism runner cannot start, as on a machine without network access).
LOCAL_RUNNERS = frozenset({"fnapirunner", "directrunner", "switchingdirectrunner", "bundlebaseddirectrunner"})
TIME_LIMIT_EXPERIMENT = "data_buffer_time_limit_ms"
_TIME_LIMIT_PATTERN = re.compile(rf"^{TIME_LIMIT_EXPERIMENT}=(.*)$")

# Concurrent runs in one process share the constant: it stays 0 while any of them runs.
_lock = threading.Lock()
_active_runs = 0
_saved_limit: int | None = None


class BeamOptionError(ConfigError):
    """A Beam option after ``--`` that this runner cannot run safely; the message names the option."""

    def __init__(self, option: str, message: str):
        ValueError.__init__(self, f"Beam option '{option}': {message}")
        self.key = option


def is_local_runner(options: PipelineOptions) -> bool:
    """Whether the pipeline runs on Beam's local FnApiRunner / DirectRunner (None counts: Beam's default)."""
    runner = options.view_as(StandardOptions).runner
    if runner is None:
        return True
    if not isinstance(runner, str):
        runner = type(runner).__name__
    name = runner.rsplit(".", 1)[-1].lower()
    return name in LOCAL_RUNNERS or f"{name}runner" in LOCAL_RUNNERS


def requested_time_limits(options: PipelineOptions) -> list[str]:
    """The ``data_buffer_time_limit_ms=N`` experiments among the options, as given."""
    experiments = options.view_as(DebugOptions).experiments or []
    return [e for e in experiments if _TIME_LIMIT_PATTERN.match(e)]


def check_local_options(options: PipelineOptions) -> None:
    """Refuses, for a local runner, the experiment that turns the losing flush on in workers.

    ``data_buffer_time_limit_ms=0`` (or below: off) is accepted; other runners are left alone.

    Raises:
        BeamOptionError: A local run asks for ``data_buffer_time_limit_ms`` other than 0.
    """
    if not is_local_runner(options):
        return
    for experiment in requested_time_limits(options):
        value = _TIME_LIMIT_PATTERN.match(experiment).group(1).strip()
        if not re.fullmatch(r"-?\d+", value) or int(value) > 0:  # Beam's workers: > 0 turns it on
            raise BeamOptionError(f"--experiments={experiment}", (
                "turns on Beam's time-based data-plane flush, which silently loses elements on the local "
                "runner (Beam 2.77 data_plane.py: the periodic flush clears what writers appended after its "
                f"copy); corpusmill keeps it off for local runs: leave the experiment out or set "
                f"{TIME_LIMIT_EXPERIMENT}=0"))


@contextlib.contextmanager
def time_based_flush_off() -> Iterator[None]:
    """Within the block, new runner data servers and embedded gRPC workers flush by size only.

    ``worker_handlers.DATA_BUFFER_TIME_LIMIT_MS`` is read when the FnApiRunner
    starts its gRPC server and its embedded workers, which happens inside
    ``pipeline.run()``; the previous value comes back when the last run that
    turned it off leaves the block.
    """
    global _active_runs, _saved_limit
    if not hasattr(worker_handlers, "DATA_BUFFER_TIME_LIMIT_MS"):
        # A Beam other than the one this was written against (2.77 has the constant).
        log.warning("apache_beam %s has no worker_handlers.DATA_BUFFER_TIME_LIMIT_MS: the local run keeps Beam's "
                    "own data-plane flush; the manifest's accounting still checks for lost records", beam.__version__)
        yield
        return
    with _lock:
        if _active_runs == 0:
            _saved_limit = worker_handlers.DATA_BUFFER_TIME_LIMIT_MS
            worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0
        _active_runs += 1
    try:
        yield
    finally:
        with _lock:
            _active_runs -= 1
            if _active_runs == 0:
                worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = _saved_limit


def run_safely(pipeline: beam.Pipeline, options: PipelineOptions):
    """Runs ``pipeline`` to completion; on a local runner without Beam's losing time-based flush.

    Args:
        pipeline: The built pipeline.
        options: Its options (they pick the runner).

    Returns:
        The pipeline result, after ``wait_until_finish``.

    Raises:
        BeamOptionError: A local run asks for the time-based flush in its workers.
    """
    check_local_options(options)
    guard = time_based_flush_off() if is_local_runner(options) else contextlib.nullcontext()
    with guard:
        result = pipeline.run()
        result.wait_until_finish()
    return result
