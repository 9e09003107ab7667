"""Measuring a benchmark contender: wall time and peak memory of a fresh process.

Shared by the benchmark scripts so that every contender is measured the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

GNU_TIME = "/usr/bin/time"
RSS_SAMPLE_SECONDS = 0.05


def _process_tree(root_pid: int) -> dict[int, int]:
    """RSS pages of ``root_pid`` and all its descendants, from /proc (empty if unavailable)."""
    parents: dict[int, int] = {}
    rss_pages: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # The command name may hold spaces or parentheses; fields resume after the last ')'.
        fields = stat[stat.rfind(b")") + 2:].split()
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        rss_pages[pid] = int(fields[21])
    tree, frontier = set(), [root_pid]
    while frontier:
        pid = frontier.pop()
        if pid in tree or pid not in rss_pages:
            continue
        tree.add(pid)
        frontier.extend(child for child, parent in parents.items() if parent == pid)
    return {pid: rss_pages[pid] for pid in tree}


def _summed_bytes(rss_pages: dict[int, int]) -> int:
    return sum(rss_pages.values()) * os.sysconf("SC_PAGE_SIZE")


def tree_rss_bytes(root_pid: int) -> int:
    """Summed RSS of ``root_pid`` and all its descendants, from /proc (0 if unavailable)."""
    return _summed_bytes(_process_tree(root_pid))


def _peak_and_command(pid: int) -> tuple[int, str] | None:
    """The kernel's peak RSS of a process (VmHWM, KiB) and its command line."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            hwm = next((line for line in handle if line.startswith("VmHWM:")), None)
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            command = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
    return (int(hwm.split()[1]) if hwm else 0), command


class TreeRssSampler:
    """Samples the summed RSS of a process tree, and each process's own peak, in a background thread.

    ``peak_bytes`` is the largest sampled sum. ``processes`` maps every pid
    seen in the tree to ``(peak KiB, command line)``: the kernel's VmHWM, an
    exact peak as of the last sample before the process ended (sampled every
    ``interval`` seconds).
    """

    def __init__(self, root_pid: int, interval: float = RSS_SAMPLE_SECONDS) -> None:
        self._root_pid = root_pid
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.peak_bytes = 0
        self.processes: dict[int, tuple[int, str]] = {}

    def _loop(self) -> None:
        while not self._stop.is_set():
            tree = _process_tree(self._root_pid)
            self.peak_bytes = max(self.peak_bytes, _summed_bytes(tree))
            for pid in tree:
                seen = _peak_and_command(pid)
                if seen is not None and seen[0] >= self.processes.get(pid, (0, ""))[0]:
                    self.processes[pid] = seen
            self._stop.wait(self._interval)

    def __enter__(self) -> TreeRssSampler:
        if os.path.isdir("/proc"):
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


_RUSAGE_WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(code)\n"
)


def measured_run(argv: Sequence[str], scratch: Path,
                 processes: dict[int, tuple[int, str]] | None = None) -> tuple[float, float | None, float | None, str]:
    """Runs a command in a fresh process, measuring its wall time and peak RSS.

    Args:
        argv: The command.
        scratch: A folder for the RSS report file.
        processes: If given, filled with ``pid -> (peak RSS KiB, command line)``
            of every process of the command's tree (see ``TreeRssSampler``).

    Returns:
        Wall seconds, peak RSS of the largest single process (MiB), sampled peak
        RSS of the whole process tree (MiB, or None), and the command's stdout.

    Raises:
        RuntimeError: If the command fails.
    """
    report = scratch / "rusage.txt"
    if os.access(GNU_TIME, os.X_OK):
        wrapped = [GNU_TIME, "-v", "-o", str(report), *argv]
    else:
        wrapped = [sys.executable, "-c", _RUSAGE_WRAPPER, str(report), *argv]
    started = time.perf_counter()
    child = subprocess.Popen(wrapped, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with TreeRssSampler(child.pid) as sampler:
        stdout, stderr = child.communicate()
    if processes is not None:
        processes.update(sampler.processes)
    wall = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {child.returncode}:\n{stderr[-3000:]}")
    text = report.read_text()
    if wrapped[0] == GNU_TIME:
        line = next(line for line in text.splitlines() if "Maximum resident set size" in line)
        kib = int(line.rsplit(":", 1)[1])
    else:
        kib = int(text)  # ru_maxrss is KiB on Linux
    tree = sampler.peak_bytes / 2**20 if sampler.peak_bytes else None
    return wall, kib / 1024, tree, stdout
