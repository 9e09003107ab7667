"""Cold start of a fresh install: the first `corpusmill run` against the next ones.

Issue 12, part 2. numba compiles every kernel on its first call and, with
``cache=True``, keeps the machine code on disk; a fresh install (a new venv, a
CI clone, a Dataflow worker) pays the compiling once. This measures how much.

* Install: a venv outside the repository (under ``--work``, default
  ``/tmp/corpusmill-cold-start``), the checkout built as a wheel and installed
  non-editable. ``--source`` is a git revision (default ``HEAD``, taken with
  ``git archive``) or ``worktree`` (the tracked and untracked, not ignored
  files as they are). Dependencies are pinned to the versions in ``--pins``
  (the project venv's ``pip freeze``), so the figures compare with the tests;
  pip's cache is reused. ``--baseline REVISION`` installs a second venv and
  interleaves its cycles with the first (the order alternates), for a
  before/after comparison on a shared machine.
* Cold run: before it, every cache a fresh install lacks is cleared: a new,
  empty ``NUMBA_CACHE_DIR`` (numba then caches only there), every
  ``__pycache__`` folder under the installed ``corpusmill`` package (Python
  bytecode and any numba index/data files beside the source), and every
  numba ``*.nbi``/``*.nbc`` file anywhere in the venv. The dependencies'
  bytecode that pip wrote at install time is kept, as every fresh install
  has it. Then ``corpusmill run`` (the embedded default job on the bundled
  sample) into a fresh output.
* Warm runs: ``--warm-runs`` more runs with the same caches, fresh outputs.
* ``--cycles`` cold-then-warm cycles; every run is a fresh process, its
  outputs' digest (the manifest's shard sha256s) compared. Medians of wall
  and CPU time (user + sys of the process tree), cold, warm, cold - warm.
* Where the cold time goes: one more cold run and one warm run, each in a
  harness that records numba's ``numba:compile`` events (CPU time of the
  compiling thread, inclusive and exclusive of nested compiles, per function
  and signature) and the time spent writing and loading cached kernels.
  These are the job process's own: kernels compiled by the warm-up child
  (``corpusmill.transforms.warmup``, in revisions that have it) count only as
  cache hits there; the harness records when the child started, its steps
  and how long the job waited for it. The CPU column of the timed runs
  includes the child (the job reaps it).

Target (issue 12): median cold wall within 10 s of median warm wall.

Usage:
    python benchmarks/cold_start_bench.py [--cycles 3] [--warm-runs 3] [--source HEAD|worktree|REV]
        [--baseline REV] [--label NAME] [--work /tmp/corpusmill-cold-start] [--reuse-venv]
        [--out benchmarks/results/cold_start_bench.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUT = HERE / "results" / "cold_start_bench.json"
DEFAULT_WORK = Path("/tmp/corpusmill-cold-start")
TARGET_S = 10.0
RUN_TIMEOUT_S = 1800
LEFTOVER_GRACE_S = 1.0

# Runs inside the benchmark venv: `corpusmill run` in-process (FnApiRunner runs the
# DoFns in this process), numba's compile events and cache loads recorded, JSON
# written to argv[1], then the exit console_main takes for `run` (a full teardown:
# an os._exit would leave the bpe-openai worker pool running).
PROFILE_HARNESS = r"""
import json, sys, threading, time
from numba.core import caching, event

out_path, argv = sys.argv[1], sys.argv[2:]
compiles, loads, local = [], [], threading.local()

class CompileListener(event.Listener):
    # CPU time of the compiling thread (steadier than wall on a shared machine).
    def on_start(self, ev):
        if not hasattr(local, "stack"):
            local.stack = []
        local.stack.append([time.thread_time(), 0.0])

    def on_end(self, ev):
        started, nested = local.stack.pop()
        inclusive = time.thread_time() - started
        if local.stack:
            local.stack[-1][1] += inclusive
        func = ev.data["dispatcher"].py_func
        compiles.append({
            "function": f"{func.__module__}.{func.__qualname__}",
            "signature": "(" + ", ".join(str(arg) for arg in ev.data["args"]) + ")",
            "inclusive_s": inclusive, "exclusive_s": inclusive - nested,
            "nested": bool(local.stack)})

event.register("numba:compile", CompileListener())
original_load = caching.Cache.load_overload

def timed_load(self, sig, target_context):
    started = time.thread_time()
    result = original_load(self, sig, target_context)
    loads.append({"function": self._name, "seconds": time.thread_time() - started,
                  "hit": result is not None})
    return result

caching.Cache.load_overload = timed_load
original_save = caching.Cache.save_overload
saves = []

def timed_save(self, sig, data):
    started = time.thread_time()
    original_save(self, sig, data)
    saves.append({"function": self._name, "seconds": time.thread_time() - started})

caching.Cache.save_overload = timed_save
started = time.perf_counter()
warmups = []
try:  # the child compiling the later stages' kernels (revisions that have one)
    from corpusmill.transforms import warmup
    original_start = warmup.start

    def recorded_start(*args, **kwargs):
        handle = original_start(*args, **kwargs)
        warmups.append((time.perf_counter(), handle))
        return handle

    warmup.start = recorded_start
except ImportError:
    pass
from corpusmill.jobs import cli
code = cli.main(argv)
warmed = [{"started_at_s": at - started, "steps": handle.steps, "done": sorted(handle.done()),
           "job_waited_s": handle.waited_s, "exit": handle.process.poll()}
          for at, handle in warmups if handle is not None]
with open(out_path, "w") as handle:
    json.dump({"wall_s": time.perf_counter() - started, "exit": code, "warmup": warmed,
               "compiles": compiles, "cache_loads": loads, "cache_saves": saves}, handle)
sys.exit(code)
"""


def sh(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """Runs a set-up command, failing loudly with its output."""
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def source_tree(source: str, target: Path) -> str:
    """The checkout to install, copied to ``target``; returns a description (commit, with changes or not).

    ``source`` is ``worktree`` (tracked and untracked, not ignored files as they
    are now) or a git revision (``HEAD``, a commit), taken with ``git archive``.
    """
    target.mkdir(parents=True)
    if source != "worktree":
        commit = sh(["git", "-C", str(REPO), "rev-parse", "--verify", f"{source}^{{commit}}"]).stdout.strip()
        archive = target.parent / "source.tar"
        sh(["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(archive), commit])
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
        archive.unlink()
        return commit
    commit = sh(["git", "-C", str(REPO), "rev-parse", "HEAD"]).stdout.strip()
    listed = sh(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"]).stdout
    for name in filter(None, listed.split("\0")):
        path = REPO / name
        if path.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / name)
    dirty = sh(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
    return commit + (" + working-tree changes" if dirty else "")


def pins(project_venv: Path, target: Path) -> Path:
    """The project venv's ``pip freeze`` without corpusmill, as a pip constraints file."""
    frozen = sh([str(project_venv / "bin" / "python"), "-m", "pip", "freeze", "--exclude-editable"]).stdout
    lines = [line for line in frozen.splitlines()
             if line and not line.startswith(("-e ", "#")) and not line.lower().startswith("corpusmill")]
    target.write_text("\n".join(lines) + "\n")
    return target


def install(home: Path, source: str, project_venv: Path, reuse_venv: bool) -> dict[str, Any]:
    """A venv under ``home`` with the checkout installed from a wheel (non-editable)."""
    venv = home / "venv"
    build = home / "build"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    described = source_tree(source, build / "src")
    started = time.perf_counter()
    if not (reuse_venv and (venv / "bin" / "python").exists()):
        shutil.rmtree(venv, ignore_errors=True)
        sh([sys.executable, "-m", "venv", str(venv)])
    python = str(venv / "bin" / "python")
    sh([python, "-m", "pip", "wheel", "--no-deps", "-w", str(build / "wheel"), str(build / "src")])
    wheel = next((build / "wheel").glob("corpusmill-*.whl"))
    sh([python, "-m", "pip", "install", "--force-reinstall", "--no-deps", str(wheel)])
    sh([python, "-m", "pip", "install", "-c", str(pins(project_venv, build / "pins.txt")), str(wheel)])
    site = Path(sh([python, "-c", "import corpusmill.jobs, pathlib; "
                    "print(pathlib.Path(corpusmill.jobs.__file__).parents[2])"]).stdout.strip())
    versions = json.loads(sh([python, "-c", "import json, numba, numpy, apache_beam, llvmlite, sys; print(json.dumps({"
                              "'python': sys.version.split()[0], 'numba': numba.__version__, "
                              "'llvmlite': llvmlite.__version__, 'numpy': numpy.__version__, "
                              "'apache_beam': apache_beam.__version__}))"]).stdout)
    shutil.rmtree(build / "src")
    return {"home": home, "venv": venv, "site_packages": site, "source": described,
            "install_s": time.perf_counter() - started, "versions": versions, "wheel": wheel.name}


def clear_caches(venv: Path, site: Path, numba_cache: Path) -> dict[str, int]:
    """Clears what a fresh install lacks (see the module docstring); returns what was removed."""
    removed = {"corpusmill_pycache_files": 0, "numba_files_in_venv": 0}
    shutil.rmtree(numba_cache, ignore_errors=True)
    numba_cache.mkdir(parents=True)
    for pycache in (site / "corpusmill").rglob("__pycache__"):
        removed["corpusmill_pycache_files"] += sum(1 for _ in pycache.iterdir())
        shutil.rmtree(pycache)
    for pattern in ("*.nbi", "*.nbc"):
        for path in venv.rglob(pattern):
            path.unlink()
            removed["numba_files_in_venv"] += 1
    return removed


def run_env(numba_cache: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("NUMBA_", "PYTHONPYCACHEPREFIX", "PYTHONDONTWRITEBYTECODE", "VIRTUAL_ENV"))}
    env["NUMBA_CACHE_DIR"] = str(numba_cache)
    return env


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def run_detached(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> tuple[int, list[str]]:
    """Runs ``command`` in its own session, output to ``log``; returns (exit status, processes left behind).

    Anything a run leaves alive in its process group would hold a pipe open
    forever (seen with a harness that left by ``os._exit``: the bpe-openai
    worker pool and multiprocessing's resource tracker outlived it), so output
    goes to a file, and what is still there ``LEFTOVER_GRACE_S`` after the
    exit is named, recorded and ended by its group id.
    """
    with open(log, "wb") as handle:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        code = process.wait(timeout=RUN_TIMEOUT_S)
    time.sleep(LEFTOVER_GRACE_S)
    group = [entry.name for entry in Path("/proc").iterdir()
             if entry.name.isdigit() and _group_of(entry.name) == process.pid]
    if group:
        os.killpg(process.pid, signal.SIGKILL)
    # A zombie is a process that has ended and waits for its new parent (pid 1) to reap it.
    return code, [command for command in map(_command_of, group) if command]


def _command_of(pid: str) -> str:
    """The command line of a live process; empty for a zombie (or one that has gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return ""


def _group_of(pid: str) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(stat[stat.rfind(b")") + 2:].split()[2])


# The `corpusmill` console script, and the CPU time of its own process (not of any child it
# started) written to argv[1] as it leaves: the job's critical path when a child has a core of
# its own, and far less sensitive than wall time to other work on a shared machine.
JOB_CPU_WRAPPER = r"""
import json, resource, sys
record, sys.argv = sys.argv[1], ["corpusmill", *sys.argv[2:]]
children = []
try:  # how long the job waited for a warm-up child (revisions that have one)
    from corpusmill.transforms import warmup
    original_start = warmup.start
    warmup.start = lambda *args, **kwargs: children.append(original_start(*args, **kwargs)) or children[-1]
except ImportError:
    pass
from numba.core import event
compiled = []

class Compiles(event.Listener):  # what this process compiled itself (a warm-up child's kernels are loads)
    def on_start(self, ev):
        pass

    def on_end(self, ev):
        compiled.append(ev.data["dispatcher"].py_func.__module__)

event.register("numba:compile", Compiles())
from corpusmill.jobs.cli import console_main
try:
    console_main()
finally:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    waited = [child.waited_s for child in children if child is not None]
    with open(record, "w") as handle:
        json.dump({"cpu_s": usage.ru_utime + usage.ru_stime, "waited_s": sum(waited) if waited else None,
                   "order_compiles": sum(name.startswith("corpusmill.transforms.order.") for name in compiled)},
                  handle)
"""


def timed_run(venv: Path, env: dict[str, str], out: Path, cwd: Path) -> dict[str, Any]:
    """One ``corpusmill run`` in a fresh process: wall, the job process's own CPU, load before, leftovers."""
    load_before = load_average()
    record = cwd / "job-cpu.txt"
    record.unlink(missing_ok=True)
    started = time.perf_counter()
    code, left = run_detached([str(venv / "bin" / "python"), "-c", JOB_CPU_WRAPPER, str(record),
                               "run", "--output", str(out), "--overwrite"], env, cwd, cwd / "run.log")
    wall = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"corpusmill run failed ({code}):\n{(cwd / 'run.log').read_text()[-3000:]}")
    digest = outputs_digest(out)
    shutil.rmtree(out, ignore_errors=True)
    job = json.loads(record.read_text())
    return {"wall_s": round(wall, 2), "job_cpu_s": round(job["cpu_s"], 2),
            "job_waited_for_warmup_s": None if job["waited_s"] is None else round(job["waited_s"], 2),
            "job_compiled_order_kernels": job["order_compiles"],
            "load_before": load_before, "outputs_digest": digest, "processes_left_behind": left}


def outputs_digest(snapshot: Path) -> str:
    """sha256 over every output shard's sha256 in the manifest: equal digests, byte-identical outputs."""
    outputs = json.loads((snapshot / "manifest.json").read_text())["outputs"]
    shards = {name: [shard["sha256"] for shard in output["shards"]] for name, output in sorted(outputs.items())}
    return hashlib.sha256(json.dumps(shards).encode()).hexdigest()


def cpu_of(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``run()``'s result with ``cpu_s``: user + sys seconds of the children it reaped (one run at a time)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["cpu_s"] = round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2)
    return result


def profiled_run(venv: Path, env: dict[str, str], out: Path, cwd: Path, record: Path) -> dict[str, Any]:
    """One ``corpusmill run`` inside PROFILE_HARNESS; returns its compile and cache-load records."""
    code, _ = run_detached([str(venv / "bin" / "python"), "-c", PROFILE_HARNESS, str(record),
                            "run", "--output", str(out), "--overwrite"], env, cwd, cwd / "profile.log")
    if code != 0:
        raise RuntimeError(f"profiled run failed ({code}):\n{(cwd / 'profile.log').read_text()[-3000:]}")
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(record.read_text())


def compile_summary(profile: dict[str, Any], top: int = 15) -> dict[str, Any]:
    """Totals and the top compile costs: per function (signatures summed) by exclusive time."""
    compiles = profile["compiles"]
    per_function: dict[str, dict[str, Any]] = {}
    for entry in compiles:
        item = per_function.setdefault(entry["function"], {"function": entry["function"], "exclusive_s": 0.0,
                                                           "inclusive_top_level_s": 0.0, "signatures": []})
        item["exclusive_s"] += entry["exclusive_s"]
        if not entry["nested"]:
            item["inclusive_top_level_s"] += entry["inclusive_s"]
        item["signatures"].append(entry["signature"])
    ranked = sorted(per_function.values(), key=lambda item: -item["exclusive_s"])
    for item in ranked:
        item["exclusive_s"] = round(item["exclusive_s"], 3)
        item["inclusive_top_level_s"] = round(item["inclusive_top_level_s"], 3)
    per_module: dict[str, float] = {}
    for entry in compiles:
        parts = entry["function"].split(".")
        module = ".".join(parts[1:4]) if parts[0] == "corpusmill" else "numba internals (np.sort, np.empty, min, ...)"
        per_module[module] = per_module.get(module, 0.0) + entry["exclusive_s"]
    loads = profile["cache_loads"]
    return {
        "per_module_exclusive_s": {module: round(seconds, 2)
                                   for module, seconds in sorted(per_module.items(), key=lambda item: -item[1])},
        "cache_save_s": round(sum(entry["seconds"] for entry in profile["cache_saves"]), 2),
        "run_wall_s": round(profile["wall_s"], 2),
        "compile_cpu_s": round(sum(entry["inclusive_s"] for entry in compiles if not entry["nested"]), 2),
        "compiled_signatures": len(compiles),
        "compiled_functions": len(per_function),
        "multi_signature_functions": {item["function"]: item["signatures"]
                                      for item in ranked if len(item["signatures"]) > 1},
        "warmup": [{key: round(value, 2) if isinstance(value, float) else value for key, value in item.items()}
                   for item in profile.get("warmup", [])],
        "cache_load_s": round(sum(entry["seconds"] for entry in loads), 2),
        "cache_hits": sum(entry["hit"] for entry in loads),
        "cache_misses": sum(not entry["hit"] for entry in loads),
        "top": ranked[:top],
    }


def median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def markdown_section(label: str, result: dict[str, Any]) -> list[str]:
    summary, setup = result["summary"], result["setup"]
    lines = [
        f"## {label}: {setup['source']}",
        "",
        f"`python benchmarks/cold_start_bench.py {result['args']}` on {result['date']}"
        + (f", runs interleaved with '{', '.join(setup['interleaved_with'])}'" if setup.get("interleaved_with") else "")
        + "; "
        f"{setup['host']['cpus']} cores shared with other work (1-minute load average "
        f"{summary['load_range'][0]}..{summary['load_range'][1]} before the runs). Python "
        f"{setup['versions']['python']}, numba {setup['versions']['numba']}, llvmlite {setup['versions']['llvmlite']}, "
        f"numpy {setup['versions']['numpy']}, apache-beam {setup['versions']['apache_beam']}; `{setup['wheel']}`.",
        "",
        *(["| | median wall s | median CPU s (user+sys) | runs (wall s) |", "|---|---|---|---|",
            f"| cold (first run) | {summary['cold_wall_s']} | {summary['cold_cpu_s']} | "
            f"{', '.join(str(run['wall_s']) for run in result['cold'])} |",
            f"| warm | {summary['warm_wall_s']} | {summary['warm_cpu_s']} | "
            f"{', '.join(str(run['wall_s']) for run in result['warm'])} |",
            f"| cold - warm | **{summary['cold_minus_warm_wall_s']}** | {summary['cold_minus_warm_cpu_s']} | |"]
          if summary.get("cold_job_cpu_s") is None else
          ["| | median wall s | median CPU s, all processes | median CPU s, job process alone | runs (wall s) |",
           "|---|---|---|---|---|",
           f"| cold (first run) | {summary['cold_wall_s']} | {summary['cold_cpu_s']} | {summary['cold_job_cpu_s']} | "
           f"{', '.join(str(run['wall_s']) for run in result['cold'])} |",
           f"| warm | {summary['warm_wall_s']} | {summary['warm_cpu_s']} | {summary['warm_job_cpu_s']} | "
           f"{', '.join(str(run['wall_s']) for run in result['warm'])} |",
           f"| cold - warm | **{summary['cold_minus_warm_wall_s']}** | {summary['cold_minus_warm_cpu_s']} | "
           f"**{summary['cold_minus_warm_job_cpu_s']}** | |"]),
        "",
        f"Target (cold within {TARGET_S:.0f} s of warm, median wall): **{'met' if summary['target_met'] else 'not met'}**. "
        f"Outputs of every run byte-identical: {summary['outputs_identical']} (digest `{summary['outputs_digest'][:16]}`). "
        f"Processes left behind by a run: {summary['processes_left_behind']}.",
        "",
    ]
    waits = [run.get("job_waited_for_warmup_s") for run in result["cold"]]
    if any(wait is not None for wait in waits):
        lines += [f"The job waited for the warm-up child, per cold run: {', '.join(f'{w} s' for w in waits)}; "
                  "order-stage kernel signatures it compiled itself: "
                  f"{', '.join(str(run.get('job_compiled_order_kernels')) for run in result['cold'])}.", ""]
    if result.get("note"):
        lines += [result["note"], ""]
    for name in ("cold", "warm"):
        profile = result["profile"].get(name)
        if not profile:
            continue
        lines += [
            f"### Where the time goes: a {name} run in the profiling harness",
            "",
            f"Run wall {profile['run_wall_s']} s; numba compiling {profile['compile_cpu_s']} CPU s "
            f"({profile['compiled_signatures']} signatures of {profile['compiled_functions']} functions), "
            f"writing the cache {profile['cache_save_s']} s, loading cached kernels {profile['cache_load_s']} s "
            f"({profile['cache_hits']} hits, {profile['cache_misses']} misses)."
            + "".join(f" Warm-up child started {item['started_at_s']} s into the run for {', '.join(item['steps'])}"
                      f" (finished: {', '.join(item['done']) or 'none'}); the job waited {item['job_waited_s']} s"
                      " for it." for item in profile.get("warmup", []))
            + (" No warm-up child." if not profile.get("warmup") else ""),
            "",
        ]
        if profile["top"]:
            lines += ["Compile CPU s per module (exclusive of nested compiles, so the rows add up): " + ", ".join(
                f"{module} {seconds}" for module, seconds in profile["per_module_exclusive_s"].items()) + ".", "",
                "| function | exclusive s | top-level inclusive s | signatures |", "|---|---|---|---|"]
            lines += [f"| `{item['function']}` | {item['exclusive_s']} | {item['inclusive_top_level_s']} | "
                      f"{len(item['signatures'])} |" for item in profile["top"]]
            lines.append("")
        if profile["multi_signature_functions"]:
            lines.append("Compiled for more than one signature (or once per calling context):")
            lines += [f"- `{function}`: {len(signatures)}" for function, signatures in
                      profile["multi_signature_functions"].items()]
            lines.append("")
    return lines


def write_markdown(results: dict[str, Any], path: Path) -> None:
    lines = [
        "# Cold start: the first `corpusmill run` after a fresh install against warm runs",
        "",
        "Issue 12, part 2. `benchmarks/cold_start_bench.py`: a venv outside the repository, the checkout installed "
        "from a wheel (non-editable), then `corpusmill run` with no job file (`jobs/default.yaml`: dedup, order and "
        "decompose on the bundled sample, 2,994 documents) into a fresh output, every run a fresh process. Cleared "
        "before each cold run: a new, empty `NUMBA_CACHE_DIR`; every `__pycache__` folder under the installed "
        "`corpusmill` package (its bytecode and any numba files beside the source); every `*.nbi`/`*.nbc` in the "
        "venv. The dependencies' bytecode, which pip writes at install, is kept: every fresh install has it.",
        "",
    ]
    for label, result in results.items():
        lines += markdown_section(label, result)
    path.write_text("\n".join(lines))


def measure(installs: list[dict[str, Any]], cycles: int, warm_runs: int, profile_runs: bool) -> list[dict[str, Any]]:
    """The cold-then-warm cycles of every install, interleaved (the order alternates), then the profiled runs."""
    runs = [{"cold": [], "warm": [], "cleared": [], "profile": {}} for _ in installs]
    for cycle in range(cycles):
        order = range(len(installs)) if cycle % 2 == 0 else reversed(range(len(installs)))
        for which in order:
            venv, site, home = installs[which]["venv"], installs[which]["site_packages"], installs[which]["home"]
            numba_cache, scratch = home / "numba-cache", home / "runs"
            scratch.mkdir(exist_ok=True)
            env = run_env(numba_cache)
            runs[which]["cleared"].append(clear_caches(venv, site, numba_cache))
            for index in range(warm_runs + 1):
                run = cpu_of(lambda: timed_run(venv, env, scratch / "out", scratch))
                kind = "cold" if index == 0 else "warm"
                runs[which][kind].append({"cycle": cycle, "index": index, **run})
                print(f"{installs[which]['source'][:12]} cycle {cycle} {kind} {run['wall_s']} s wall {run['cpu_s']} s "
                      f"cpu, job {run['job_cpu_s']} s cpu, waited {run['job_waited_for_warmup_s']} s, "
                      f"compiled {run['job_compiled_order_kernels']} order kernels "
                      f"(load {run['load_before']})", flush=True)
    if profile_runs:
        for which, installed in enumerate(installs):
            numba_cache, scratch = installed["home"] / "numba-cache", installed["home"] / "runs"
            env = run_env(numba_cache)
            clear_caches(installed["venv"], installed["site_packages"], numba_cache)
            for name in ("cold", "warm"):
                profile = compile_summary(profiled_run(installed["venv"], env, scratch / "out", scratch,
                                                       installed["home"] / f"profile-{name}.json"))
                runs[which]["profile"][name] = profile
                print(f"{installed['source'][:12]} profiled {name}: compile {profile['compile_cpu_s']} CPU s, "
                      f"cache loads {profile['cache_load_s']} s", flush=True)
    return runs


def summarize(cold: list[dict], warm: list[dict]) -> dict[str, Any]:
    runs = cold + warm
    summary = {
        "cold_wall_s": median([run["wall_s"] for run in cold]),
        "warm_wall_s": median([run["wall_s"] for run in warm]),
        "cold_cpu_s": median([run["cpu_s"] for run in cold]),
        "warm_cpu_s": median([run["cpu_s"] for run in warm]),
        "cold_job_cpu_s": median([run["job_cpu_s"] for run in cold]) if "job_cpu_s" in cold[0] else None,
        "warm_job_cpu_s": median([run["job_cpu_s"] for run in warm]) if "job_cpu_s" in warm[0] else None,
        "load_range": [min(run["load_before"] for run in runs), max(run["load_before"] for run in runs)],
        "outputs_digest": runs[0]["outputs_digest"],
        "outputs_identical": len({run["outputs_digest"] for run in runs}) == 1,
        "processes_left_behind": sum(len(run["processes_left_behind"]) for run in runs),
    }
    summary["cold_minus_warm_wall_s"] = round(summary["cold_wall_s"] - summary["warm_wall_s"], 2)
    summary["cold_minus_warm_cpu_s"] = round(summary["cold_cpu_s"] - summary["warm_cpu_s"], 2)
    if summary["cold_job_cpu_s"] is not None:
        summary["cold_minus_warm_job_cpu_s"] = round(summary["cold_job_cpu_s"] - summary["warm_job_cpu_s"], 2)
    summary["target_met"] = summary["cold_minus_warm_wall_s"] <= TARGET_S
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=3, help="cold runs, each followed by the warm runs")
    parser.add_argument("--warm-runs", type=int, default=3, help="warm runs after each cold run")
    parser.add_argument("--source", default="HEAD", help="worktree, or a git revision to install (default HEAD)")
    parser.add_argument("--label", default="head", help="section of --out this run replaces (e.g. before, after)")
    parser.add_argument("--baseline", metavar="REVISION",
                        help="also install this git revision and interleave its runs with --source's "
                             "(section '<label> baseline')")
    parser.add_argument("--baseline-label", help="its section of --out (default '<label> baseline')")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="venvs and scratch, outside the repository")
    parser.add_argument("--pins", type=Path, default=REPO / ".venv", help="venv whose package versions are installed")
    parser.add_argument("--reuse-venv", action="store_true", help="keep the venvs' packages, reinstall corpusmill")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled cold and warm runs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    known = parser.parse_args()
    work = known.work.resolve()
    if REPO in work.parents or work == REPO:
        parser.error("--work must be outside the repository")
    sources = {known.label: ("main", known.source)}
    if known.baseline:
        sources[known.baseline_label or f"{known.label} baseline"] = ("baseline", known.baseline)
    installs = []
    for subfolder, source in sources.values():
        installs.append(install(work / subfolder, source, known.pins, known.reuse_venv))
        print(f"installed {installs[-1]['source']} into {installs[-1]['venv']} in {installs[-1]['install_s']:.0f} s",
              flush=True)
    measured = measure(installs, known.cycles, known.warm_runs, not known.no_profile)
    results = json.loads(known.out.read_text()) if known.out.exists() else {}
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    for label, installed, runs in zip(sources, installs, measured):
        summary = summarize(runs["cold"], runs["warm"])
        results[label] = {
            "date": date,
            "args": " ".join(sys.argv[1:]),
            "setup": {"source": installed["source"], "wheel": installed["wheel"], "versions": installed["versions"],
                      "install_s": round(installed["install_s"], 1),
                      "host": {"cpus": os.cpu_count(), "platform": platform.platform()},
                      "interleaved_with": [other for other in sources if other != label],
                      "cleared_before_cold": runs["cleared"]},
            "summary": summary, "cold": runs["cold"], "warm": runs["warm"], "profile": runs["profile"],
        }
        print(label, json.dumps(summary))
    known.out.parent.mkdir(parents=True, exist_ok=True)
    known.out.write_text(json.dumps(results, indent=1) + "\n")
    write_markdown(results, known.out.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
