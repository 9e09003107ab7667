"""Compiling the later stages' numba kernels in a child process while the job runs its first stage.

A fresh install compiles every numba kernel on its first call, one after the
other on the one core the local FnApiRunner uses (issue 12: about 15 CPU s on
the default job). The kernels of a later stage do not depend on the data, so
``start`` hands them to a child process (``python -m
corpusmill.transforms.warmup``) as soon as the job is planned: it calls each of
them once on a small synthetic input shaped as the stage shapes its own (same
dtypes, layouts and read-only flags, so the same signatures), and numba writes
the machine code to its cache (``cache=True``). The job meanwhile reads,
deduplicates and compiles its first stage's kernels itself; when it reaches a
later stage, numba loads that stage's kernels from the cache.

The warm-up is split into steps in pipeline order (``STEPS``); the first step
of the job is left to the job, which reaches it before a child could have
compiled it. A kernel the job reaches while the child is still on that
kernel's step is waited for (``_WaitingCache``: the job retries numba's cache
until the child finishes the step, exits, or ``WAIT_LIMIT_S`` has passed)
rather than compiled a second time on the same core budget.

Only an optimisation, and never a cause of failure: the child starts only for
a local runner on a machine with more than one core, only for steps whose
marker (a file in numba's cache folder, keyed by the kernels' source stamps,
numba's and Python's versions, the CPU and the step's variant of the config) is missing, and any
error in starting, running or waiting for it is logged at debug level and
otherwise ignored; the job then compiles what is missing itself, as before.
Dataflow and other remote workers never start it (the job plans on the
launcher; workers compile or load their own cache as before).
``CORPUSMILL_WARMUP=0`` turns it off.

Concurrent processes: numba writes each cache file under a unique temporary
name and renames it into place, and keys entries by signature. Two processes
compiling the same kernel for the same signature (the child and the job, or
two runs at once) write the same entry, so whichever rename lands last is
as good as the other. That is why the warm-up must produce the stages'
exact signatures: two processes saving *different* signatures of one kernel
at the same moment can leave numba's index naming the other's file (numba
takes no lock around its read-modify-write of the index); the tests check
that the signatures are the job's.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

log = logging.getLogger("corpusmill.warmup")

#: How long, from the child's start, the job may wait for it in all.
WAIT_LIMIT_S = 60.0
#: How often a waiting job looks at numba's cache again.
POLL_S = 0.02
#: ``CORPUSMILL_WARMUP=0`` turns the warm-up off.
ENV_SWITCH = "CORPUSMILL_WARMUP"
PROGRESS_NAME = "done"
MARKER_PREFIX = "corpusmill-warmup-"


@dataclass(frozen=True)
class Step:
    """One unit of the warm-up: the kernels of one part of a stage.

    Attributes:
        name: ``<stage>.<part>``.
        stage: The stage (its config section name).
        modules: The kernel modules whose numba kernels the step compiles.
        warm: Calls those kernels once, given the stage's config section;
            None for a step the job always compiles itself (the pipeline's
            first stage).
        applies: Whether the step runs for this config section.
        variant: What of the config section changes which kernels the step
            compiles or their signatures (part of its marker's key).
    """

    name: str
    stage: str
    modules: tuple[str, ...]
    warm: Callable[[Any], None] | None = None
    applies: Callable[[Any], bool] = lambda section: True
    variant: Callable[[Any], str] = lambda section: ""


# ---------------------------------------------------------------------------------------------
# The steps: each mirrors what its stage's DoFns call, on a small synthetic input.

_WORDS = ("kernel memory driver device buffer queue interrupt page table lock thread process "
          "module scheduler file system network packet socket timer clock power domain bus port "
          "register firmware cache map entry list node tree hash index block request").split()


def _synthetic_texts(count: int = 240, seed: int = 0) -> list[str]:
    """Word-salad documents drawn from a small vocabulary, some near-copies of others."""
    import numpy as np

    rng = np.random.default_rng(seed)
    texts = []
    for i in range(count):
        if i % 8 == 7:  # a near-copy: related documents, so the traversal has paths to join
            words = texts[i - 3].split()
            words[int(rng.integers(len(words)))] = str(rng.choice(_WORDS))
            texts.append(" ".join(words))
        else:
            words = rng.choice(_WORDS, size=int(rng.integers(20, 120)))
            texts.append(" ".join(words) + ("." if i % 2 else "\n"))
    return texts


def _synthetic_vectors(count: int = 240, dim: int = 64, seed: int = 0):
    """L2-normalised float32 vectors in a few clusters, as the embedders give."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, dim))
    x = centres[rng.integers(0, 8, count)] + 0.5 * rng.standard_normal((count, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x, dtype=np.float32)


def _synthetic_keys(count: int):
    from corpusmill.transforms.common import document_keys

    return document_keys([f"warmup-{i}" for i in range(count)])


def _warm_embed(section: Any) -> None:
    """The lexical embedder as ``order.beam.embed`` calls it: frequencies, sketches, projected embedding.

    The projection is a zero one of the fitted one's shape and dtypes: fitting
    it (an eigendecomposition of the sketch covariance) compiles nothing.
    """
    import numpy as np

    from corpusmill.transforms.order.embedders import (DocumentFrequencies, LexicalConfig, LexicalEmbedder,
                                                       Projection, document_frequencies)
    from corpusmill.transforms.order.lexical_fit import idf_of

    config = LexicalConfig()  # what EmbedDocuments uses
    texts = _synthetic_texts()
    idf = idf_of(DocumentFrequencies.merge([document_frequencies(texts, config)]), config)
    LexicalEmbedder(config, idf).raw(texts[:32])
    projection = Projection(np.zeros(config.sketch_dim, np.float32),
                            np.zeros((config.sketch_dim, config.dim), np.float32), 1.0, 2)
    LexicalEmbedder(config, idf, projection).embed(texts)


def _warm_graph(section: Any) -> None:
    """The exact kNN of one partition, as ``order.beam.graph`` calls it."""
    from corpusmill.transforms.order import knn_graph

    vectors = _synthetic_vectors()
    keys = _synthetic_keys(vectors.shape[0])
    knn_graph.partition_knn(keys, vectors, section.knn.k)


def _warm_traversal(section: Any) -> None:
    """One partition's traversal, as ``order.beam.traverse.traverse_partition`` calls it."""
    import numpy as np

    from corpusmill.transforms.order import knn_graph, traversal

    vectors = _synthetic_vectors()
    keys = _synthetic_keys(vectors.shape[0])
    by_key = np.argsort(keys, kind="stable")
    keys, vectors = keys[by_key], vectors[by_key]
    neighbor_keys, scores = knn_graph.partition_knn(keys, vectors, section.knn.k)
    neighbors, local_scores = knn_graph.local_graph(keys, neighbor_keys, scores)
    mode = section.traversal
    traversal.traverse(neighbors, local_scores, vectors if mode == "improved" else None, mode=mode)


_ORDER = "corpusmill.transforms.order."
STEPS: tuple[Step, ...] = (
    Step("dedup", "dedup", ("corpusmill.transforms.dedup.normalize", "corpusmill.transforms.dedup.minhash_kernels",
                            "corpusmill.transforms.dedup.lsh", "corpusmill.transforms.dedup.components")),
    Step("order.embed", "order", (_ORDER + "lexical",), _warm_embed,
         applies=lambda section: section.embed.model == "lexical"),
    Step("order.graph", "order", (_ORDER + "knn_graph",), _warm_graph),
    Step("order.traversal", "order", (_ORDER + "traversal", _ORDER + "path_joining", _ORDER + "local_search"),
         _warm_traversal, variant=lambda section: section.traversal),
)
_BY_NAME = {step.name: step for step in STEPS}


def planned_steps(stages: Iterable[tuple[str, Any]]) -> list[Step]:
    """The steps a child should warm for these enabled stages (``(name, section)``, pipeline order).

    Every step of the stages that applies to its config, in pipeline order,
    less the first: the job reaches that one before a child could compile it.
    Steps without a warmer (the job's own) count as that first one, never run.
    """
    sections = dict(stages)
    steps = [step for step in STEPS if step.stage in sections and step.applies(sections[step.stage])]
    return [step for step in steps[1:] if step.warm is not None]


# ---------------------------------------------------------------------------------------------
# numba's cache: markers of finished steps, and the job's wait for the child.

def _dispatchers(module_names: Iterable[str]) -> list[Any]:
    """The numba kernels (``cache=True`` dispatchers) defined in these modules."""
    from numba.core.dispatcher import Dispatcher

    found = []
    for name in module_names:
        module = importlib.import_module(name)
        for value in vars(module).values():
            if isinstance(value, Dispatcher) and getattr(value, "__module__", None) == name:
                found.append(value)
    return found


def _section_json(section: Any) -> str:
    from corpusmill.schemas.config import to_dict

    return json.dumps(to_dict(section), sort_keys=True, default=str)


def marker_path(step: Step, section: Any) -> Path | None:
    """The file that says ``step`` has been warmed, for this variant, with these kernel sources.

    It sits in numba's cache folder of the step's kernels, so clearing that
    cache clears it too. None where the kernels cannot be cached.
    """
    import numba
    from llvmlite import binding as llvm

    kernels = _dispatchers(step.modules)
    cache_path = getattr(getattr(kernels[0], "_cache", None), "cache_path", None) if kernels else None
    if not cache_path:
        return None
    stamp = hashlib.sha256()
    cpu = llvm.get_host_cpu_name()  # numba keys its entries by the target CPU too (a home shared by machines)
    stamp.update(f"{numba.__version__}|{sys.version}|{cpu}|{step.name}|{step.variant(section)}".encode())
    for name in step.modules:
        source = Path(importlib.import_module(name).__file__)
        info = source.stat()
        stamp.update(f"|{source}|{info.st_mtime_ns}|{info.st_size}".encode())
    return Path(cache_path) / f"{MARKER_PREFIX}{step.name}-{stamp.hexdigest()[:16]}.done"


class _WaitingCache:
    """numba's cache of one kernel in the job's process: a miss waits for the child's step first."""

    def __init__(self, cache: Any, warmup: "Warmup", step: str):
        self._cache = cache
        self.warmup = warmup
        self.step = step

    def load_overload(self, sig, target_context):
        result = self._cache.load_overload(sig, target_context)
        if result is not None or not self.warmup.waits_for(self.step):
            return result
        started = time.perf_counter()
        while result is None and self.warmup.waits_for(self.step):
            time.sleep(POLL_S)
            result = self._cache.load_overload(sig, target_context)
        if result is None:  # the step may have finished between the last look and the check
            result = self._cache.load_overload(sig, target_context)
        self.warmup.waited_s += time.perf_counter() - started
        return result

    def __getattr__(self, name):
        return getattr(self._cache, name)


class Warmup:
    """The running child: its process, its progress, and the job's view of it."""

    def __init__(self, process: subprocess.Popen, folder: Path, steps: Sequence[Step]):
        self.process = process
        self.folder = folder
        self.steps = [step.name for step in steps]
        self.started = time.perf_counter()
        self.waited_s = 0.0
        self._done: set[str] = set()
        self._reported = False

    def done(self) -> set[str]:
        """The steps the child has finished so far."""
        if len(self._done) < len(self.steps):
            try:
                self._done = set((self.folder / PROGRESS_NAME).read_text().split())
            except OSError:
                pass
        return self._done

    def running(self) -> bool:
        if self.process.poll() is None:
            return True
        self._report()
        return False

    def waits_for(self, step: str) -> bool:
        """Whether a kernel of ``step`` is worth waiting for: the child is on it, within the time limit."""
        return (step in self.steps and step not in self.done() and self.running()
                and time.perf_counter() - self.started < WAIT_LIMIT_S)

    def _report(self) -> None:
        if self._reported:
            return
        self._reported = True
        code = self.process.returncode
        if code not in (0, None):
            try:
                tail = (self.folder / "stderr").read_text(errors="replace")[-2000:]
            except OSError:
                tail = ""
            log.debug("numba warm-up child exited with %s after %s: %s", code, sorted(self.done()), tail)

    def stop(self) -> None:
        """Ends the child if it still runs (the job is over) and removes its folder."""
        try:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            self._report()
            log.debug("numba warm-up: steps %s, done %s, the job waited %.2f s",
                      self.steps, sorted(self.done()), self.waited_s)
        except Exception as error:  # noqa: BLE001 - an optimisation never fails the job
            log.debug("numba warm-up: stopping the child failed: %s", error)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _child_command(folder: Path, steps: Sequence[Step], sections: Mapping[str, Any]) -> list[str]:
    configs = {step.stage: json.loads(_section_json(sections[step.stage])) for step in steps}
    (folder / "config.json").write_text(json.dumps(configs))
    return [sys.executable, "-m", "corpusmill.transforms.warmup", "--folder", str(folder),
            "--parent", str(os.getpid()), *(step.name for step in steps)]


def _wait_in(warmup: Warmup, steps: Sequence[Step]) -> None:
    """Makes the job's process wait for the child's step on a cache miss of that step's kernels."""
    from numba.core.caching import FunctionCache

    for step in steps:
        for kernel in _dispatchers(step.modules):
            cache = getattr(kernel, "_cache", None)
            if isinstance(cache, _WaitingCache):  # from an earlier job in this process
                cache.warmup, cache.step = warmup, step.name
            elif isinstance(cache, FunctionCache):
                kernel._cache = _WaitingCache(cache, warmup, step.name)


def start(stages: Iterable[tuple[str, Any]], local: bool = True) -> Warmup | None:
    """Starts the child that compiles the later stages' kernels, where that can help.

    Args:
        stages: ``(name, config section)`` of the enabled stages, in pipeline order.
        local: Whether the pipeline runs in local processes (False for Dataflow
            and other remote runners: nothing to warm here).

    Returns:
        The running warm-up, or None where none was started (nothing to warm,
        already warm, a remote runner, one core, turned off, or an error,
        logged at debug level).
    """
    try:
        if not local or os.environ.get(ENV_SWITCH, "1") == "0" or _cpus() < 2:
            return None
        import numba

        if numba.config.DISABLE_JIT:
            return None
        stages = list(stages)
        sections = dict(stages)
        steps = [step for step in planned_steps(stages)
                 if not ((marker := marker_path(step, sections[step.stage])) and marker.exists())]
        if not steps:
            return None
        folder = Path(tempfile.mkdtemp(prefix="corpusmill-warmup-"))
        try:
            with open(folder / "stderr", "wb") as stderr:
                process = subprocess.Popen(_child_command(folder, steps, sections), stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL, stderr=stderr, close_fds=True)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        warmup = Warmup(process, folder, steps)
        atexit.register(warmup.stop)
        _wait_in(warmup, steps)
        log.debug("numba warm-up started (pid %s): %s", process.pid, warmup.steps)
        return warmup
    except Exception as error:  # noqa: BLE001 - an optimisation never fails the job
        log.debug("numba warm-up not started: %s", error)
        return None


# ---------------------------------------------------------------------------------------------
# The child.

def run_steps(names: Sequence[str], configs: Mapping[str, Mapping[str, Any]], folder: Path | None = None) -> None:
    """Warms each named step in turn, writing its marker and then its name to ``folder``'s progress file."""
    from corpusmill.schemas import config as config_lib

    classes = {"order": config_lib.OrderConfig, "dedup": config_lib.DedupConfig,
               "decompose": config_lib.DecomposeConfig}
    for name in names:
        step = _BY_NAME[name]
        section = config_lib.build(classes[step.stage], configs.get(step.stage, {}), step.stage + ".")
        step.warm(section)
        marker = marker_path(step, section)
        if marker is not None:
            marker.touch()
        if folder is not None:
            with open(folder / PROGRESS_NAME, "a") as progress:
                progress.write(name + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compile corpusmill's numba kernels into numba's cache.")
    parser.add_argument("--folder", type=Path, help="where the job left config.json and reads progress")
    parser.add_argument("--parent", type=int, help="the job's pid: if the job is gone (killed), remove --folder")
    parser.add_argument("steps", nargs="*", default=[step.name for step in STEPS if step.warm is not None],
                        help=f"steps to warm (default: all of {[s.name for s in STEPS if s.warm is not None]})")
    args = parser.parse_args(argv)
    configs = json.loads((args.folder / "config.json").read_text()) if args.folder else {}
    try:
        run_steps(args.steps, configs, args.folder)
    finally:
        if args.folder and args.parent and os.getppid() != args.parent:  # no job left to clean up after us
            shutil.rmtree(args.folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
