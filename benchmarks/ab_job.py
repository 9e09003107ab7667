"""A/B of two corpusmill installs on the same jobs: is the new code as fast as the old?

Runs ``corpusmill run`` from two virtual environments (say, a worktree of the
previous release and the current checkout) on the same inputs, alternating
which goes first each round, every run a fresh process; reports each case's
median wall time and the new/old ratio. Use it when a change should not move
the figures (a refactor), beside the per-stage benchmarks.

Usage:
    python benchmarks/ab_job.py --old /path/old/.venv --new .venv [--rounds 5] \
        --case parquet-default "--input benchmarks/.data/linux-doc-x1.parquet" \
        [--case NAME "ARGS" ...]
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(venv: Path, args: list[str], out: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run([str(venv / "bin" / "corpusmill"), "run", "--output", str(out), "--overwrite", *args],
                            capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{venv}: {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="virtual environment of the old install")
    parser.add_argument("--new", type=Path, required=True, help="virtual environment of the new install")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, help="JSON file for the raw times")
    parser.add_argument("--case", nargs=2, action="append", required=True, metavar=("NAME", "ARGS"),
                        help="a job: its name and its `corpusmill run` arguments as one string")
    known = parser.parse_args()
    cases = {name: shlex.split(args) for name, args in known.case}
    times = {case: {"old": [], "new": []} for case in cases}
    with tempfile.TemporaryDirectory(prefix="ab-job-") as scratch:
        for round_index in range(known.rounds):
            order = ("old", "new") if round_index % 2 == 0 else ("new", "old")
            for case, args in cases.items():
                for side in order:
                    venv = known.old if side == "old" else known.new
                    seconds = run_once(venv.resolve(), args, Path(scratch) / f"{side}-{case}")
                    times[case][side].append(round(seconds, 2))
                    print(round_index, case, side, f"{seconds:.2f}", flush=True)
    for case, sides in times.items():
        old, new = statistics.median(sides["old"]), statistics.median(sides["new"])
        print(f"{case}: old {old:.2f} s {sides['old']}  new {new:.2f} s {sides['new']}  new/old {new / old:.3f}")
    if known.out:
        known.out.write_text(json.dumps(times, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
