"""Throughput of the MinHash signature kernel against rensa and datasketch.

Text in, signatures out, shingling included, on the same texts for every
contender. The references get the same word 5-gram shingles built in Python
(``str.split`` + ``" ".join``), which is how they are fed in practice; the
kernel shingles internally. Every timing is the median of ``--repeats`` runs.

Usage:
    python benchmarks/minhash_kernel_bench.py [--glob GLOB] [--limit N] [--repeats 3]

Needs ``rensa`` (optional; skipped when missing) besides the project's deps.
The default corpus is the Debian linux-doc package's reStructuredText sources.

Recorded results (2-core AMD EPYC with AVX-512, numba 0.68.1, rensa 0.5.0,
datasketch 2.0.0; linux-doc-6.1: 3,183 docs, 24.2 MB, 3,119,489 shingles,
num_perm=128, medians of 3). Another job shared the machine, so the two-thread
rows vary between runs; the one-thread rows were stable:

    contender                                        Mshingles/s    MB/s
    kernel legacy, 1 thread                              21.2-22.2   164-172
    kernel legacy, 2 threads (second core free)          37.2-40.6   288-314
    kernel affine32, 1 thread                            26.6-28.0   206-217
    kernel affine32, 2 threads (second core free)        46.4-49.3   359-381
    rensa RMinHash + Python shingling                     3.8         29
    datasketch update_batch (affine32 default, sha1)      0.77         5.9
    datasketch update_batch (legacy, sha1)                0.32-0.35    2.5-2.7

Kernel legacy over rensa: 5.6x on one thread, 10.6x on two; over datasketch
update_batch: 28x-54x (default scheme) and 67x-117x (legacy scheme).
"""

from __future__ import annotations

import argparse
import glob
import gzip
import statistics
import time
from collections.abc import Callable

import numba
import numpy as np

from corpusmill.transforms.dedup import minhash

DEFAULT_GLOB = "/usr/share/doc/linux-doc-6.1/Documentation/**/*.rst.gz"
NUM_PERM = 128
NGRAM = 5
SEED = 1


def load_texts(pattern: str, limit: int | None) -> list[str]:
    """Read (gzipped) text files matching a recursive glob, in sorted order."""
    paths = sorted(glob.glob(pattern, recursive=True))[:limit]
    texts = []
    for path in paths:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as handle:
            texts.append(handle.read().decode("utf-8", errors="replace"))
    return texts


def python_shingles(text: str) -> list[str]:
    """The references' shingling: the same rule as minhash.shingles, as str."""
    words = text.split()
    if not words:
        return []
    return [" ".join(words[i : i + NGRAM]) for i in range(max(1, len(words) - NGRAM + 1))]


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--glob", default=DEFAULT_GLOB)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N files")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1024, help="docs per kernel call in the batched run")
    args = parser.parse_args()

    texts = load_texts(args.glob, args.limit)
    if not texts:
        raise SystemExit(f"no files match {args.glob}")
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    num_shingles = sum(len(python_shingles(t)) for t in texts)
    print(
        f"corpus: {len(texts)} docs, {megabytes:.1f} MB UTF-8, {num_shingles:,} shingles "
        f"({NGRAM}-word), num_perm={NUM_PERM}, cores available to numba={numba.config.NUMBA_NUM_THREADS}"
    )

    results: dict[str, float] = {}

    for scheme in ("legacy", "affine32"):
        params = minhash.MinHashParams(num_perm=NUM_PERM, ngram=NGRAM, seed=SEED, scheme=scheme)
        minhash.signatures(texts[:4], params)  # compile / load the numba cache outside the timing
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            results[f"kernel {scheme}, {threads} thread(s), one call"] = median_seconds(
                lambda: minhash.signatures(texts, params, num_threads=threads), args.repeats
            )
        results[f"kernel {scheme}, all threads, batches of {args.batch}"] = median_seconds(
            lambda: [
                minhash.signatures(texts[i : i + args.batch], params)
                for i in range(0, len(texts), args.batch)
            ],
            args.repeats,
        )

    try:
        import rensa
    except ImportError:
        print("rensa not installed: skipped")
    else:

        def run_rensa() -> list:
            digests = []
            for text in texts:
                sketch = rensa.RMinHash(num_perm=NUM_PERM, seed=SEED)
                sketch.update(python_shingles(text))
                digests.append(sketch.digest())
            return digests

        results["rensa RMinHash + Python shingling"] = median_seconds(run_rensa, args.repeats)

    import datasketch

    def run_datasketch(**scheme_kwargs: str) -> Callable[[], list]:
        def run() -> list:
            digests = []
            for text in texts:
                sketch = datasketch.MinHash(num_perm=NUM_PERM, seed=SEED, **scheme_kwargs)
                sketch.update_batch([s.encode("utf-8") for s in python_shingles(text)])
                digests.append(sketch.hashvalues)
            return digests

        return run

    # datasketch's own default hash (SHA-1), as it is normally used.
    results["datasketch update_batch (default scheme, sha1)"] = median_seconds(run_datasketch(), args.repeats)
    if "legacy" in getattr(datasketch.minhash, "_VALID_SCHEMES", ()):
        results["datasketch update_batch (legacy scheme, sha1)"] = median_seconds(
            run_datasketch(scheme="legacy"), args.repeats
        )

    print(f"{'contender':58s} {'seconds':>8s} {'Mshingles/s':>12s} {'MB/s':>8s}")
    for name, seconds in results.items():
        print(f"{name:58s} {seconds:8.3f} {num_shingles / seconds / 1e6:12.2f} {megabytes / seconds:8.1f}")
    kernel_best = min(v for k, v in results.items() if k.startswith("kernel legacy"))
    for name, seconds in results.items():
        if not name.startswith("kernel"):
            print(f"speed-up of the best legacy kernel run over {name}: {seconds / kernel_best:.1f}x")
    # Sanity: the timed kernel really computes datasketch-equal rows.
    row = minhash.signatures(texts[:1], minhash.MinHashParams(num_perm=NUM_PERM, ngram=NGRAM, seed=SEED))[0]
    oracle = datasketch.MinHash(num_perm=NUM_PERM, seed=SEED, hashfunc=minhash.shingle_hash, **(
        {"scheme": "legacy"} if hasattr(datasketch.MinHash(), "scheme") else {}
    ))
    oracle.update_batch(minhash.shingles(texts[0], NGRAM))
    assert np.array_equal(row, oracle.hashvalues), "kernel disagrees with datasketch"


if __name__ == "__main__":
    main()
