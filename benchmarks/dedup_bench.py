"""Dedup benchmark: the MinHash kernel, the Beam job, datasketch and rensa, scored against an exact join.

One command, one run, one corpus (linux-doc 6.1 + 6.12, and optionally the same
corpus repeated under fresh ids), one set of parameters (word 5-gram shingles,
128 permutations, seed 1, Jaccard threshold 0.8). Every contender sees the same
texts after the job's default ``NormalizeConfig`` (NFKC, lowercase, whitespace
collapse), so they all shingle the same words.

Contenders (each run is a fresh subprocess, runs interleaved per repeat):

* ``kernel``: ``corpusmill.transforms.minhash.signatures`` on the whole corpus,
  text in, signatures out, shingling included; all threads and one thread;
* ``beam-exact`` / ``beam-none`` (/ ``beam-signature``): ``corpusmill run`` on
  the Parquet corpus with dedup on and ``dedup.verify`` set, read to manifest;
* ``datasketch``: Python shingling, ``MinHash.update_batch`` per document
  (scheme "legacy", permutations drawn once and reused), ``MinHashLSH`` insert
  + query, union-find over the candidates;
* ``rensa``: the same Python shingling into ``RMinHash.update`` per document
  (and, timed separately, rensa's bulk ``digest_matrix_from_token_sets``),
  ``RMinHashLSH`` insert + query, union-find.

The reference contenders read the Parquet file and normalise in-process too, and
time each phase, so their subprocess wall time is a whole single-process path
comparable with the Beam job's, and their signature phase is comparable with the
kernel's.

Ground truth, computed without MinHash: the shingle-hash sets of the normalised
texts (``minhash.shingle_sets``, exactly what the job's exact verification uses)
are joined at Jaccard >= threshold by prefix filtering (tokens ordered rarest
first, prefix length ``|x| - ceil(t|x|) + 1``, length filter, then exact
Jaccard of every candidate), which misses no pair. The join is checked against
brute force (every sampled document against every document, no filter) on a
random sample, and the 32-bit shingle hashes against the shingle strings on the
sample's near-threshold pairs.

Usage:
    python benchmarks/dedup_bench.py [--repeats 3] [--copies 1,4]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import fractions
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import measure

import numba
import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "benchmarks" / ".data"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "dedup_bench.json"
GNU_TIME = "/usr/bin/time"
WORKER_COMMAND = "_worker"
RSS_SAMPLE_SECONDS = 0.05

NGRAM = 5
NUM_PERM = 128
SEED = 1
THRESHOLD = 0.8
SCHEME = "legacy"
# RMinHashLSH needs num_perm divisible by the band count, so datasketch's optimum
# (9 bands x 13 rows) is not available; 8 x 16 has the lowest datasketch-weighted
# false positive + false negative error among the divisors of 128.
RENSA_BANDS = 8

TARGET_KERNEL_OVER_RENSA = 2.0
TARGET_KERNEL_OVER_DATASKETCH = 8.0
TARGET_F1 = 0.98
TARGET_PRECISION = 0.99
# Per-worker peak RSS at 4x over 1x with workers scaled like the corpus: "flat"
# allowing for the noise of a shared machine.
TARGET_WORKER_GROWTH = 1.2
EXAMPLES = 5


@dataclasses.dataclass(frozen=True)
class Contender:
    """One subprocess contender.

    Attributes:
        name: Label in the report.
        kind: "kernel", "datasketch", "rensa" (bench workers) or "beam" (the CLI).
        verify: dedup.verify for the Beam job.
        copies: Corpus sizes it runs on.
        max_runs: Cap on repeats (slow or quality-only contenders).
    """

    name: str
    kind: str
    verify: str | None = None
    copies: tuple[int, ...] = (1,)
    max_runs: int | None = None
    extra_overrides: tuple[str, ...] = ()
    beam_args: tuple[str, ...] = ()

    def command(self, corpus: Path, scratch: Path) -> list[str]:
        """The argv of one run."""
        if self.kind != "beam":
            return [sys.executable, str(Path(__file__).resolve()), WORKER_COMMAND, self.kind, str(corpus),
                    str(scratch)]
        return [sys.executable, "-m", "corpusmill.jobs.cli", "run", "--input", str(corpus),
                "--output", str(scratch / "snapshot"), "--overwrite", *beam_overrides(self.verify),
                *(flag for item in self.extra_overrides for flag in ("--set", item)),
                *(("--", *self.beam_args) if self.beam_args else ())]


WORKERS_1X = "beam-exact-16MiB-2workers"
WORKERS_4X = "beam-exact-16MiB-8workers"
SDK_WORKER_COMMAND = "sdk_worker_main"

CONTENDERS: tuple[Contender, ...] = (
    Contender("kernel", "kernel", copies=(1, 4)),
    Contender("beam-exact", "beam", "exact", copies=(1, 4)),
    # Not the default config: smaller shards (more partitions inside the stage),
    # and two worker processes. Do time and peak RSS follow the partition size?
    Contender("beam-exact-16MiB-shards", "beam", "exact", copies=(1,),
              extra_overrides=(f"output.target_shard_bytes={16 * 2**20}",)),
    # Peak RSS per worker: SDK worker processes of the FnApiRunner, the shuffle
    # staying in the runner process (as on Dataflow, where it is a service).
    # The runner hands each worker its share of a whole stage as one bundle, so
    # a worker's memory follows corpus / workers; scaling workers with the
    # corpus at a fixed shard size (1x on 2, 4x on 8) keeps the work per
    # worker fixed, and the peak should stay put.
    Contender(WORKERS_1X, "beam", "exact", copies=(1,),
              extra_overrides=(f"output.target_shard_bytes={16 * 2**20}",),
              beam_args=("--direct_num_workers=2", "--direct_running_mode=multi_processing")),
    Contender(WORKERS_4X, "beam", "exact", copies=(4,),
              extra_overrides=(f"output.target_shard_bytes={16 * 2**20}",),
              beam_args=("--direct_num_workers=8", "--direct_running_mode=multi_processing")),
    Contender("beam-none", "beam", "none"),
    Contender("beam-signature", "beam", "signature", max_runs=1),
    Contender("datasketch", "datasketch"),
    Contender("rensa", "rensa"),
)


def beam_overrides(verify: str) -> list[str]:
    """--set flags of the Beam runs: dedup on with the given verification, other stages off."""
    from corpusmill.schemas.config import JobConfig

    flags = ["--set", "dedup.enabled=true", "--set", f"dedup.verify={verify}"]
    # Stages after dedup (tokenisation / decomposition) are not part of this
    # measurement; switch off any the config knows.
    for field in dataclasses.fields(JobConfig):
        if field.name not in ("name", "input", "dedup", "output") and dataclasses.is_dataclass(field.default):
            if any(f.name == "enabled" for f in dataclasses.fields(field.default)):
                flags += ["--set", f"{field.name}.enabled=false"]
    return flags


# --------------------------------------------------------------------------- workers (one per subprocess)


def python_shingles(text: str) -> list[str]:
    """The references' shingling, the rule of ``minhash.shingles`` as str."""
    words = text.split()
    if not words:
        return []
    return [" ".join(words[i : i + NGRAM]) for i in range(max(1, len(words) - NGRAM + 1))]


def union_find_labels(num_docs: int, left: Sequence[int], right: Sequence[int]) -> np.ndarray:
    """Connected-component label (the root's index) of every document, by union-find."""
    parent = list(range(num_docs))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(left, right):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(x) for x in range(num_docs)], dtype=np.int64)


def _load_normalized(corpus: Path, phases: dict[str, float]) -> list[str]:
    import pyarrow.parquet as pq

    from corpusmill.schemas.config import NormalizeConfig
    from corpusmill.transforms.normalize import normalize_texts

    started = time.perf_counter()
    texts = pq.read_table(corpus, columns=["text"]).column("text").to_pylist()
    phases["read"] = time.perf_counter() - started
    started = time.perf_counter()
    normalized = normalize_texts(texts, NormalizeConfig())
    phases["normalize"] = time.perf_counter() - started
    return normalized


def _kernel_worker(normalized: list[str], phases: dict[str, float], _: Path) -> dict[str, Any]:
    from corpusmill.transforms import minhash

    params = minhash.MinHashParams(NUM_PERM, NGRAM, SEED, SCHEME)
    minhash.signatures(normalized[:4], params)  # load numba's cache outside the timing
    started = time.perf_counter()
    sigs = minhash.signatures(normalized, params)
    phases["signatures"] = time.perf_counter() - started
    started = time.perf_counter()
    minhash.signatures(normalized, params, num_threads=1)
    phases["signatures_1_thread"] = time.perf_counter() - started
    return {"threads": numba.get_num_threads(), "signature_rows": int(sigs.shape[0])}


def _union_find_phase(num_docs, left, right, phases, scratch) -> dict[str, Any]:
    started = time.perf_counter()
    labels = union_find_labels(num_docs, left, right)
    phases["union_find"] = time.perf_counter() - started
    np.save(scratch / "labels.npy", labels)
    return {"candidate_pairs": len(left)}


def _datasketch_worker(normalized: list[str], phases: dict[str, float], scratch: Path) -> dict[str, Any]:
    from datasketch import MinHash, MinHashLSH

    started = time.perf_counter()
    # Drawing permutations is a large share of a fresh MinHash; reuse one draw,
    # which is datasketch's fastest per-document path.
    template = MinHash(num_perm=NUM_PERM, seed=SEED, scheme=SCHEME)
    sketches: list[Any] = []
    for text in normalized:
        shingles = python_shingles(text)
        if not shingles:
            sketches.append(None)
            continue
        sketch = MinHash(num_perm=NUM_PERM, seed=SEED, scheme=SCHEME, permutations=template.permutations)
        sketch.update_batch([s.encode("utf-8") for s in shingles])
        sketches.append(sketch)
    phases["signatures"] = time.perf_counter() - started
    started = time.perf_counter()
    index = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    for key, sketch in enumerate(sketches):
        if sketch is not None:
            index.insert(key, sketch)
    left, right = [], []
    for key, sketch in enumerate(sketches):
        if sketch is not None:
            for other in index.query(sketch):
                if other > key:
                    left.append(key)
                    right.append(other)
    phases["lsh"] = time.perf_counter() - started
    extra = _union_find_phase(len(normalized), left, right, phases, scratch)
    return {**extra, "bands_rows": list(index.b_and_r) if hasattr(index, "b_and_r") else [index.b, index.r]}


def _rensa_worker(normalized: list[str], phases: dict[str, float], scratch: Path) -> dict[str, Any]:
    import rensa

    started = time.perf_counter()
    keys, sketches = [], []
    for key, text in enumerate(normalized):
        shingles = python_shingles(text)
        if shingles:
            sketch = rensa.RMinHash(NUM_PERM, SEED)
            sketch.update(shingles)
            keys.append(key)
            sketches.append(sketch)
    phases["signatures"] = time.perf_counter() - started
    started = time.perf_counter()
    index = rensa.RMinHashLSH(THRESHOLD, NUM_PERM, RENSA_BANDS)
    index.insert_pairs(list(zip(keys, sketches)))
    left, right = [], []
    for key, candidates in zip(keys, index.query_all(sketches)):
        for other in candidates:
            if other > key:
                left.append(key)
                right.append(other)
    phases["lsh"] = time.perf_counter() - started
    extra = _union_find_phase(len(normalized), left, right, phases, scratch)
    # rensa's bulk path, fed by the same shingling, timed on its own for the signature table.
    started = time.perf_counter()
    matrix = rensa.RMinHash.digest_matrix_from_token_sets(
        [s for s in map(python_shingles, normalized) if s], NUM_PERM, SEED)
    phases["signatures_bulk_matrix"] = time.perf_counter() - started
    return {**extra, "bands": RENSA_BANDS, "bulk_rows": matrix.len()}


_WORKERS = {"kernel": _kernel_worker, "datasketch": _datasketch_worker, "rensa": _rensa_worker}


def run_worker(kind: str, corpus: Path, scratch: Path) -> dict[str, Any]:
    """Body of one worker subprocess: read, normalise, run the contender, report phases."""
    phases: dict[str, float] = {}
    normalized = _load_normalized(corpus, phases)
    extra = _WORKERS[kind](normalized, phases, scratch)
    return {"phases": phases, **extra}


# --------------------------------------------------------------------------- measurement


def measured_run(argv: list[str], scratch: Path) -> dict[str, Any]:
    """Runs argv in a fresh process; wall seconds, peak RSS (MiB), sampled tree RSS and stdout.

    Runs that start Beam SDK worker processes also report each worker's peak
    RSS (``worker_peaks_mb``, largest first) and the job process's own peak
    (``runner_peak_rss_mb``).
    """
    processes: dict[int, tuple[int, str]] = {}
    wall, peak_mb, tree_mb, stdout = measure.measured_run(argv, scratch, processes)
    result = {"wall_seconds": wall, "peak_rss_mb": peak_mb, "tree_rss_mb": tree_mb, "stdout": stdout}
    workers = sorted((kib / 1024 for kib, command in processes.values() if SDK_WORKER_COMMAND in command
                      and not command.startswith("/bin/sh")), reverse=True)
    if workers:
        job = [kib / 1024 for kib, command in processes.values() if "corpusmill.jobs.cli" in command]
        result.update({"worker_peaks_mb": [round(w, 1) for w in workers],
                       "runner_peak_rss_mb": round(max(job), 1) if job else None})
    return result


def run_contender(contender: Contender, corpus: Path, ids: np.ndarray) -> dict[str, Any]:
    """One run of a contender; returns measurements and its cluster labels (index per document)."""
    with tempfile.TemporaryDirectory(prefix="dedup_bench_") as tmp:
        scratch = Path(tmp)
        measured = measured_run(contender.command(corpus, scratch), scratch)
        stdout = measured.pop("stdout")
        if contender.kind == "beam":
            manifest = json.loads((scratch / "snapshot" / "manifest.json").read_text())
            labels, digest = beam_labels(scratch / "snapshot", ids)
            dedup = manifest["dedup"]
            measured.update({
                "inner_seconds": manifest["timings"]["wall_seconds"],
                "stage_ms": manifest["timings"].get("stage_ms", {}),
                "manifest_dedup": {k: dedup.get(k) for k in ("documents", "duplicates_by_kind", "clusters",
                                                             "candidates", "verification", "lsh", "components")},
                "duplicates_digest": digest,
                "partitioning": manifest.get("execution", {}).get("partitioning"),
            })
        else:
            result = json.loads(stdout.strip().splitlines()[-1])
            measured.update(result)
            path = scratch / "labels.npy"
            labels = np.load(path) if path.exists() else None
    return {**measured, "labels": labels}


def beam_labels(snapshot: Path, ids: np.ndarray) -> tuple[np.ndarray, str]:
    """Cluster label per corpus document from duplicates/ (singletons get their own index)."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = sorted(glob.glob(str(snapshot / "duplicates" / "*.parquet")))
    table = pa.concat_tables([pq.read_table(p, columns=["id", "cluster_id", "representative_id"])
                              for p in paths])
    index = {doc_id: i for i, doc_id in enumerate(ids.tolist())}
    labels = np.arange(ids.size, dtype=np.int64)
    rows = sorted(zip(*(table.column(c).to_pylist() for c in ("id", "cluster_id", "representative_id"))))
    for doc_id, cluster_id, representative_id in rows:
        labels[index[doc_id]] = index[cluster_id]
        labels[index[representative_id]] = index[cluster_id]
    return labels, hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- exact ground truth


@numba.njit(cache=True)
def _intersection_size(values, a_lo, a_hi, b_lo, b_hi):
    i, j, common = a_lo, b_lo, 0
    while i < a_hi and j < b_hi:
        if values[i] == values[j]:
            common += 1
            i += 1
            j += 1
        elif values[i] < values[j]:
            i += 1
        else:
            j += 1
    return common


@numba.njit(cache=True)
def _prefix_candidates(group_bounds, entry_docs, sizes, num, den, out_left, out_right, fill):
    """Pairs of documents sharing a prefix token and passing the length filter (count, then fill)."""
    count = 0
    for g in range(group_bounds.shape[0] - 1):
        for x in range(group_bounds[g], group_bounds[g + 1]):
            a = entry_docs[x]
            for y in range(x + 1, group_bounds[g + 1]):
                b = entry_docs[y]
                small, large = min(sizes[a], sizes[b]), max(sizes[a], sizes[b])
                if small * den >= num * large:
                    if fill:
                        out_left[count] = a
                        out_right[count] = b
                    count += 1
    return count


@numba.njit(cache=True, parallel=True)
def _verify_pairs(values, offsets, left, right, num, den, out):
    for e in numba.prange(left.shape[0]):
        a, b = left[e], right[e]
        common = _intersection_size(values, offsets[a], offsets[a + 1], offsets[b], offsets[b + 1])
        union = (offsets[a + 1] - offsets[a]) + (offsets[b + 1] - offsets[b]) - common
        out[e] = common * den >= num * union


def exact_join(values: np.ndarray, offsets: np.ndarray, threshold: fractions.Fraction) -> np.ndarray:
    """All document pairs whose sets have Jaccard >= threshold, by prefix filtering (exact).

    Args:
        values: Per-document sorted unique set elements, CSR layout.
        offsets: CSR offsets, length n + 1.
        threshold: The Jaccard threshold as an exact fraction.

    Returns:
        ``(m, 2)`` int64 array of pairs ``(a, b)``, ``a < b``, sorted.
    """
    num, den = threshold.numerator, threshold.denominator
    n = offsets.size - 1
    sizes = np.diff(offsets)
    uniq, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    rank_of = np.empty(uniq.size, dtype=np.int64)
    rank_of[np.lexsort((uniq, counts))] = np.arange(uniq.size)  # rarest first
    doc_of = np.repeat(np.arange(n, dtype=np.int64), sizes)
    ranks = rank_of[inverse.ravel()]
    ranks = ranks[np.lexsort((ranks, doc_of))]  # each document's tokens, rarest first
    # J >= t implies |x & y| >= ceil(t |x|), so the first |x| - ceil(t |x|) + 1 tokens
    # (in any fixed global order) of both sets must meet.
    prefix = np.where(sizes > 0, sizes - (-(-num * sizes // den)) + 1, 0)
    position = np.arange(ranks.size) - np.repeat(offsets[:-1], sizes)
    in_prefix = position < np.repeat(prefix, sizes)
    entry_tokens, entry_docs = ranks[in_prefix], doc_of[in_prefix]
    order = np.lexsort((entry_docs, entry_tokens))
    entry_tokens, entry_docs = entry_tokens[order], entry_docs[order]
    group_bounds = np.concatenate([[0], np.flatnonzero(np.diff(entry_tokens)) + 1, [entry_tokens.size]])
    group_bounds = group_bounds.astype(np.int64)
    empty = np.empty(0, dtype=np.int64)
    count = _prefix_candidates(group_bounds, entry_docs, sizes, num, den, empty, empty, False)
    left, right = np.empty(count, dtype=np.int64), np.empty(count, dtype=np.int64)
    _prefix_candidates(group_bounds, entry_docs, sizes, num, den, left, right, True)
    pairs = np.unique(np.stack([left, right], axis=1), axis=0) if count else np.empty((0, 2), np.int64)
    passed = np.empty(pairs.shape[0], dtype=np.bool_)
    _verify_pairs(values, offsets, pairs[:, 0].copy(), pairs[:, 1].copy(), num, den, passed)
    return pairs[passed]


@numba.njit(cache=True, parallel=True)
def _brute_force_jaccard(values, offsets, sample, out):
    """Exact Jaccard of every sampled document against every document (no filtering)."""
    n = offsets.shape[0] - 1
    for s in numba.prange(sample.shape[0]):
        a = sample[s]
        for b in range(n):
            common = _intersection_size(values, offsets[a], offsets[a + 1], offsets[b], offsets[b + 1])
            union = (offsets[a + 1] - offsets[a]) + (offsets[b + 1] - offsets[b]) - common
            out[s, b] = common / union if union > 0 else 0.0


def ground_truth(normalized: list[str], sample_size: int, rng_seed: int = 0) -> dict[str, Any]:
    """Exact near-duplicate pairs of a corpus, with the brute-force and string-level checks."""
    from corpusmill.transforms import minhash
    threshold = fractions.Fraction(str(THRESHOLD))
    started = time.perf_counter()
    values, offsets = minhash.shingle_sets(normalized, NGRAM)
    pairs = exact_join(values, offsets, threshold)
    # Texts without words have no shingles (Jaccard undefined); identical ones are
    # still exact duplicates of each other.
    by_text: dict[str, list[int]] = {}
    for i in np.flatnonzero(np.diff(offsets) == 0).tolist():
        by_text.setdefault(normalized[i], []).append(i)
    same = [(a, b) for group in by_text.values() for k, a in enumerate(group) for b in group[k + 1 :]]
    if same:
        pairs = np.unique(np.concatenate([pairs, np.array(same, dtype=np.int64)]), axis=0)
    join_seconds = time.perf_counter() - started

    rng = np.random.default_rng(rng_seed)
    sample = np.sort(rng.choice(len(normalized), size=min(sample_size, len(normalized)), replace=False))
    started = time.perf_counter()
    similarity = np.empty((sample.size, len(normalized)), dtype=np.float64)
    _brute_force_jaccard(values, offsets, sample.astype(np.int64), similarity)
    similarity[np.arange(sample.size), sample] = 0.0  # a document is not its own duplicate
    brute = set()
    for s, b in zip(*np.nonzero(similarity >= THRESHOLD - 1e-9)):
        # Float screen, then the exact rational test.
        key = (min(int(sample[s]), int(b)), max(int(sample[s]), int(b)))
        if _exact_pass(values, offsets, *key, threshold):
            brute.add(key)
    sampled = set(sample.tolist())
    joined = {(int(a), int(b)) for a, b in pairs if a in sampled or b in sampled}
    brute_seconds = time.perf_counter() - started

    # 32-bit shingle hashes vs the shingle strings, on the sample's pairs near the threshold.
    near = [(int(sample[s]), int(b)) for s, b in zip(*np.nonzero((similarity >= THRESHOLD - 0.1)
                                                                   & (similarity <= THRESHOLD + 0.1)))]
    disagreements = []
    for a, b in near:
        sa, sb = set(minhash.shingles(normalized[a], NGRAM)), set(minhash.shingles(normalized[b], NGRAM))
        string_j = len(sa & sb) / len(sa | sb)
        hash_pass = _exact_pass(values, offsets, min(a, b), max(a, b), threshold)
        if (string_j >= THRESHOLD) != hash_pass:
            disagreements.append({"pair": [a, b], "string_jaccard": string_j})
    return {
        "pairs": pairs,
        "shingle_sets": (values, offsets),
        "join_seconds": round(join_seconds, 2),
        "check": {
            "sample_size": int(sample.size),
            "brute_force_pairs": len(brute),
            "join_pairs_touching_sample": len(joined),
            "identical": brute == joined,
            "only_brute_force": sorted(brute - joined)[:EXAMPLES],
            "only_join": sorted(joined - brute)[:EXAMPLES],
            "seconds": round(brute_seconds, 2),
            "near_threshold_pairs_string_checked": len(near),
            "hash_vs_string_disagreements": len(disagreements),
            "disagreement_examples": disagreements[:EXAMPLES],
        },
    }


def _exact_pass(values, offsets, a, b, threshold) -> bool:
    set_a, set_b = values[offsets[a] : offsets[a + 1]], values[offsets[b] : offsets[b + 1]]
    common = np.intersect1d(set_a, set_b, assume_unique=True).size
    union = set_a.size + set_b.size - common
    return union > 0 and common * threshold.denominator >= threshold.numerator * union


def jaccard(truth: dict[str, Any], a: int, b: int) -> float:
    """Exact Jaccard of two documents' shingle-hash sets."""
    values, offsets = truth["shingle_sets"]
    set_a, set_b = values[offsets[a] : offsets[a + 1]], values[offsets[b] : offsets[b + 1]]
    common = np.intersect1d(set_a, set_b, assume_unique=True).size
    union = set_a.size + set_b.size - common
    return common / union if union else 1.0


# --------------------------------------------------------------------------- scoring


def _prf(tp: int, predicted: int, actual: int) -> dict[str, float]:
    precision = tp / predicted if predicted else 1.0
    recall = tp / actual if actual else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "true_positives": int(tp), "predicted": int(predicted), "actual": int(actual)}


def _pairs_within(labels: np.ndarray) -> int:
    _, sizes = np.unique(labels, return_counts=True)
    return int(np.sum(sizes * (sizes - 1) // 2))


def score(labels: np.ndarray, truth: dict[str, Any], ids: np.ndarray) -> dict[str, Any]:
    """Pair- and document-level precision/recall/F1 of predicted clusters against the exact pairs.

    Pair level: predicted pairs are all pairs inside a predicted cluster; actual
    pairs are the ground-truth pairs (Jaccard >= threshold). A second variant
    compares with the transitive closure of the ground truth (all pairs inside
    its connected components), which does not count chaining as an error.
    Document level: predicted are the documents in a predicted cluster of size
    >= 2; actual are the documents in at least one ground-truth pair.
    """
    pairs = truth["pairs"]
    n = labels.size
    _, cluster_sizes = np.unique(labels, return_inverse=False, return_counts=True)
    size_of = np.bincount(labels, minlength=n)[labels]
    in_cluster = size_of >= 2
    same = labels[pairs[:, 0]] == labels[pairs[:, 1]]
    truth_labels = truth["labels"]
    truth_in = np.zeros(n, dtype=bool)
    truth_in[pairs.ravel()] = True
    # Pairs in the same predicted cluster and the same ground-truth component.
    joint = np.unique(np.stack([labels, truth_labels], axis=1), axis=0, return_counts=True)[1]
    closure_tp = int(np.sum(joint * (joint - 1) // 2))
    result = {
        "clusters": int(np.sum(cluster_sizes >= 2)),
        "largest_cluster": int(cluster_sizes.max()) if cluster_sizes.size else 0,
        "documents_in_clusters": int(in_cluster.sum()),
        "removed": int(np.sum(cluster_sizes - 1)),
        "pair": _prf(int(same.sum()), _pairs_within(labels), pairs.shape[0]),
        "pair_vs_closure": _prf(closure_tp, _pairs_within(labels), _pairs_within(truth_labels)),
        "document": _prf(int(np.sum(in_cluster & truth_in)), int(in_cluster.sum()), int(truth_in.sum())),
    }
    missed = pairs[~same][:EXAMPLES]
    result["missed_pair_examples"] = [
        {"ids": [str(ids[a]), str(ids[b])], "jaccard": round(jaccard(truth, a, b), 4),
         "clusters": [int(size_of[a]), int(size_of[b])]} for a, b in missed]
    false_pairs = []
    truth_set = {(int(a), int(b)) for a, b in pairs}
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    for members in np.split(order, bounds):
        if len(false_pairs) >= EXAMPLES:
            break
        if 2 <= members.size <= 64:
            for i, a in enumerate(members):
                for b in members[i + 1 :]:
                    key = (min(a, b), max(a, b))
                    if key not in truth_set and len(false_pairs) < EXAMPLES:
                        false_pairs.append({"ids": [str(ids[key[0]]), str(ids[key[1]])],
                                            "jaccard": round(jaccard(truth, *key), 4),
                                            "cluster_size": int(members.size)})
    result["false_pair_examples"] = false_pairs
    result["false_document_examples"] = [str(ids[i]) for i in np.flatnonzero(in_cluster & ~truth_in)[:EXAMPLES]]
    result["missed_document_examples"] = [str(ids[i]) for i in np.flatnonzero(~in_cluster & truth_in)[:EXAMPLES]]
    return result


def minhash_bands() -> tuple[int, int]:
    """datasketch's optimal (bands, rows) for the threshold, as the job and MinHashLSH use."""
    from corpusmill.transforms import minhash

    return minhash.lsh_params(THRESHOLD, NUM_PERM)


def truth_components(num_docs: int, pairs: np.ndarray) -> np.ndarray:
    """Connected-component labels of the ground-truth pair graph."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(pairs.shape[0]), (pairs[:, 0], pairs[:, 1])), shape=(num_docs, num_docs))
    return connected_components(graph, directed=False)[1].astype(np.int64)


# --------------------------------------------------------------------------- report


def machine_info() -> dict[str, Any]:
    """CPU, platform, library versions and the git state of the measured code."""
    import apache_beam
    import datasketch
    import pyarrow

    try:
        import rensa  # noqa: F401
        from importlib.metadata import version

        rensa_version = version("rensa")
    except ImportError:
        rensa_version = None
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo", encoding="utf-8")
                if line.startswith("model name")), None)
    state = code_state()
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "platform": platform.platform(),
        "python": platform.python_version(), "numba": numba.__version__, "numba_threads": numba.get_num_threads(),
        "apache_beam": apache_beam.__version__, "pyarrow": pyarrow.__version__,
        "datasketch": datasketch.__version__, "rensa": rensa_version,
        **state, "load_average_at_start": list(os.getloadavg()),
    }


def code_state() -> dict[str, Any]:
    """Git HEAD and a digest of the uncommitted changes, to tell if the measured code changed mid-run.

    Prose (``*.md``) and recorded results are left out: editing them does not change what runs.
    """
    import hashlib

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True).stdout

    diff = git("diff", "HEAD", "--", ".", ":(exclude)*.md", ":(exclude)benchmarks/results")
    return {"git": git("rev-parse", "--short", "HEAD").strip(), "working_tree_modified": bool(diff.strip()),
            "working_tree_diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:16]}


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(runs: list[dict[str, Any]], corpus: dict[str, Any]) -> dict[str, Any]:
    """Medians per contender and the derived throughputs."""
    mb, shingles = corpus["text_bytes"] / 1e6, corpus["shingles"]
    rows = {}
    for run in runs:
        rows.setdefault(run["contender"], []).append(run)
    summary = {}
    for name, group in rows.items():
        wall = _median([r["wall_seconds"] for r in group])
        phases = {key: _median([r.get("phases", {}).get(key) for r in group])
                  for key in sorted({k for r in group for k in r.get("phases", {})})}
        summary[name] = {
            "runs": len(group),
            "wall_seconds": round(wall, 3),
            "wall_seconds_all": [round(r["wall_seconds"], 2) for r in group],
            "mb_per_second": round(mb / wall, 2),
            "mshingles_per_second": round(shingles / wall / 1e6, 3),
            "peak_rss_mb": round(_median([r["peak_rss_mb"] for r in group]), 1),
            "tree_rss_mb": _round(_median([r["tree_rss_mb"] for r in group]), 1),
            "inner_seconds": _round(_median([r.get("inner_seconds") for r in group])),
            "phases": {k: round(v, 3) for k, v in phases.items()},
        }
        if "worker_peaks_mb" in group[0]:
            summary[name]["workers"] = len(group[0]["worker_peaks_mb"])
            summary[name]["worker_peak_rss_mb"] = round(_median([max(r["worker_peaks_mb"]) for r in group]), 1)
            summary[name]["worker_peak_rss_mb_all"] = [max(r["worker_peaks_mb"]) for r in group]
            summary[name]["runner_peak_rss_mb"] = _round(_median([r["runner_peak_rss_mb"] for r in group]), 1)
        if "manifest_dedup" in group[0]:
            summary[name]["manifest_dedup"] = group[0]["manifest_dedup"]
            summary[name]["deterministic"] = len({r["duplicates_digest"] for r in group}) == 1
            summary[name]["stage_ms"] = group[0]["stage_ms"]
            summary[name]["partitioning"] = group[0].get("partitioning")
        for key in ("candidate_pairs", "bands_rows", "bands", "threads"):
            if key in group[0]:
                summary[name][key] = group[0][key]
    signature_rows = {}
    for name, phase, label in (("kernel", "signatures", "kernel (all threads)"),
                               ("kernel", "signatures_1_thread", "kernel (1 thread)"),
                               ("rensa", "signatures", "rensa RMinHash.update per doc"),
                               ("rensa", "signatures_bulk_matrix", "rensa digest_matrix_from_token_sets"),
                               ("datasketch", "signatures", "datasketch MinHash.update_batch per doc")):
        seconds = summary.get(name, {}).get("phases", {}).get(phase)
        if seconds:
            signature_rows[label] = {"seconds": seconds, "mb_per_second": round(mb / seconds, 2),
                                     "mshingles_per_second": round(shingles / seconds / 1e6, 3)}
    return {"contenders": summary, "signatures": signature_rows}


def _round(value, digits=3):
    return None if value is None else round(value, digits)


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Pass/fail of every target of issue 3."""
    one = results["by_copies"].get("1", {})
    sig = one.get("signatures", {})
    contenders = one.get("contenders", {})
    quality = one.get("quality", {})
    targets = []

    def ratio(a, b):
        return round(sig[b]["seconds"] / sig[a]["seconds"], 2) if a in sig and b in sig else None

    kernel = "kernel (all threads)"
    for other, target in (("rensa RMinHash.update per doc", TARGET_KERNEL_OVER_RENSA),
                          ("rensa digest_matrix_from_token_sets", TARGET_KERNEL_OVER_RENSA),
                          ("datasketch MinHash.update_batch per doc", TARGET_KERNEL_OVER_DATASKETCH)):
        value = ratio(kernel, other)
        one_thread = ratio("kernel (1 thread)", other)
        if value is None:
            continue
        targets.append({"target": f"kernel >= {target:g}x {other} (signature throughput)",
                        "value": f"{value}x (1 thread: {one_thread}x)",
                        "pass": value >= target})
    if "beam-exact" in contenders and "datasketch" in contenders:
        beam, ds = contenders["beam-exact"]["wall_seconds"], contenders["datasketch"]["wall_seconds"]
        targets.append({"target": "Beam dedup end to end (verify=exact) faster than datasketch single-process path",
                        "value": f"{beam:.1f} s vs {ds:.1f} s (subprocess wall)", "pass": beam < ds})
        if "beam-exact-16MiB-shards" in contenders:
            small = contenders["beam-exact-16MiB-shards"]["wall_seconds"]
            targets.append({"target": "(not the default config) Beam with 16 MiB shards faster than datasketch",
                            "value": f"{small:.1f} s vs {ds:.1f} s", "pass": small < ds})
    for name in ("beam-exact", "beam-none", "beam-signature", "beam-exact-16MiB-shards", "datasketch", "rensa"):
        if name in quality:
            doc = quality[name]["document"]
            check = {"target": f"{name}: duplicate-document F1 >= {TARGET_F1}", "value": doc["f1"],
                     "pass": doc["f1"] >= TARGET_F1}
            targets.append(check)
            if name == "beam-exact":
                targets.append({"target": f"beam-exact: duplicate-document precision >= {TARGET_PRECISION}",
                                "value": doc["precision"], "pass": doc["precision"] >= TARGET_PRECISION})
    four = results["by_copies"].get("4", {}).get("contenders", {})
    if WORKERS_1X in contenders and WORKERS_4X in four:
        one_w, four_w = contenders[WORKERS_1X], four[WORKERS_4X]
        growth = four_w["worker_peak_rss_mb"] / one_w["worker_peak_rss_mb"]
        targets.append({
            "target": "Peak RSS per worker set by batch/partition size, not corpus size "
                      f"(16 MiB shards; 1x on {one_w['workers']} SDK workers vs 4x on {four_w['workers']}; "
                      f"at most {TARGET_WORKER_GROWTH:g}x)",
            "value": f"largest worker {one_w['worker_peak_rss_mb']:,.0f} MB at 1x, "
                     f"{four_w['worker_peak_rss_mb']:,.0f} MB at 4x ({growth:.2f}x); runner process (holds the "
                     f"local shuffle) {one_w['runner_peak_rss_mb'] or 0:,.0f} / {four_w['runner_peak_rss_mb'] or 0:,.0f} MB",
            "pass": growth <= TARGET_WORKER_GROWTH})
    if "beam-exact" in contenders and "beam-exact" in four:
        rss1, rss4 = contenders["beam-exact"]["peak_rss_mb"], four["beam-exact"]["peak_rss_mb"]
        targets.append({"target": "(information) default in-process run, one process holding worker and shuffle",
                        "value": f"{rss1:,.0f} MB at 1x, {rss4:,.0f} MB at 4x ({rss4 / rss1:.2f}x)",
                        "pass": None})
    return targets


def markdown_report(report: dict[str, Any]) -> str:
    """The whole report as markdown."""
    m = report["machine"]
    lines = [
        "# dedup_bench: MinHash kernel, Beam dedup, datasketch, rensa vs an exact ground truth", "",
        f"- Command: `{report['command']}`",
        f"- Date: {report['date']}; total bench wall {report['total_seconds'] / 60:.1f} min",
        f"- Machine: {m['nproc']} cores ({m['cpu']}), {m['platform']}; Python {m['python']}, numba {m['numba']} "
        f"({m['numba_threads']} threads), apache-beam {m['apache_beam']}, pyarrow {m['pyarrow']}, "
        f"datasketch {m['datasketch']}, rensa {m['rensa']}; corpusmill git {m['git']}"
        + (" with uncommitted changes in the working tree" if m["working_tree_modified"] else ""),
        f"- Load average at start: {', '.join(f'{x:.2f}' for x in m['load_average_at_start'])}. The machine is "
        "shared with other jobs and noisy: treat differences under ~15% as noise.",
        f"- Parameters: {NGRAM}-word shingles, {NUM_PERM} permutations, seed {SEED}, scheme {SCHEME}, "
        f"threshold {THRESHOLD}; default NormalizeConfig (NFKC, lowercase, collapse whitespace) before shingling "
        "for every contender.",
        f"- Repeats: {report['repeats']} (interleaved; every run a fresh subprocess); medians. "
        + "; ".join(f"{c['name']} capped at {c['max_runs']} run(s)" for c in report["contenders"] if c["max_runs"]),
        "- Beam runs (CORPUS = benchmarks/.data/linux-doc-x{1,4}.parquet):",
        *[f"  - {name}: `{command}`" for name, command in report["beam_commands"].items()],
        "",
    ]
    for copies, section in report["by_copies"].items():
        corpus = section["corpus"]
        lines += [f"## Corpus {copies}x: {corpus['documents']:,} documents, {corpus['text_bytes'] / 1e6:.1f} MB "
                  f"text, {corpus['shingles']:,} shingles", ""]
        if copies != "1":
            lines += ["The 4x corpus repeats every text under fresh ids, so every document has at least 3 exact "
                      "duplicates (4 copies of each text); nearly every document is a duplicate document.", ""]
        if section["signatures"]:
            lines += ["### Signatures: text in, signatures out, shingling included (in-process phase, median)", "",
                      "| contender | seconds | MB/s | M shingles/s | kernel (all threads) speed-up |",
                      "|---|---:|---:|---:|---:|"]
            base = section["signatures"].get("kernel (all threads)", {}).get("seconds")
            for label, row in section["signatures"].items():
                speedup = f"{row['seconds'] / base:.1f}x" if base else "-"
                lines.append(f"| {label} | {row['seconds']:.2f} | {row['mb_per_second']:.1f} "
                             f"| {row['mshingles_per_second']:.2f} | {speedup} |")
            lines.append("")
        lines += ["### Whole runs (subprocess wall, includes interpreter start, read and normalisation)", "",
                  "| contender | runs | wall s (median) | MB/s | M shingles/s | peak RSS MB | tree RSS MB | "
                  "phases s (median) |", "|---|---:|---:|---:|---:|---:|---:|---|"]
        for name, row in section["contenders"].items():
            phases = ", ".join(f"{k} {v:.2f}" for k, v in row["phases"].items())
            if row.get("inner_seconds") is not None:
                phases = f"in-process {row['inner_seconds']:.2f}" + (f"; {phases}" if phases else "")
            lines.append(f"| {name} | {row['runs']} | {row['wall_seconds']:.2f} | {row['mb_per_second']:.2f} "
                         f"| {row['mshingles_per_second']:.3f} | {row['peak_rss_mb']:,.0f} "
                         f"| {row['tree_rss_mb'] or 0:,.0f} | {phases} |")
        lines.append("")
        multi = {name: row for name, row in section["contenders"].items() if "worker_peak_rss_mb" in row}
        if multi:
            lines += ["Per process (FnApiRunner multi_processing: SDK worker processes, the shuffle in the runner "
                      "process):", "", "| contender | SDK workers | largest worker peak RSS MB (median; all runs) "
                      "| runner process peak RSS MB |", "|---|---:|---:|---:|"]
            for name, row in multi.items():
                runs = ", ".join(f"{v:,.0f}" for v in row["worker_peak_rss_mb_all"])
                lines.append(f"| {name} | {row['workers']} | {row['worker_peak_rss_mb']:,.0f} ({runs}) "
                             f"| {row['runner_peak_rss_mb'] or 0:,.0f} |")
            lines.append("")
        truth = section.get("ground_truth")
        if truth:
            check = truth["check"]
            lines += [
                "### Quality against the exact ground truth", "",
                f"Ground truth: {truth['pairs']:,} pairs with Jaccard >= {THRESHOLD} over {truth['documents']:,} "
                f"documents in {truth['components']:,} components (largest {truth['largest_component']}); "
                f"a minimal removal would drop {truth['minimal_removal']:,} documents. Prefix-filter join "
                f"{truth['join_seconds']:.1f} s. Pairs by Jaccard: "
                + ", ".join(f"{k}: {v:,}" for k, v in truth["pairs_by_jaccard"].items())
                + ". Pair recall expected from LSH banding alone (mean over the ground-truth pairs of "
                "1 - (1 - J^rows)^bands): "
                + ", ".join(f"{k} {v:.4f}" for k, v in truth["expected_lsh_pair_recall"].items())
                + f". Brute-force check on {check['sample_size']} random documents against "
                f"all: {check['brute_force_pairs']} pairs vs {check['join_pairs_touching_sample']} from the join, "
                f"{'identical' if check['identical'] else 'DIFFERENT'}. 32-bit shingle hashes vs shingle strings on "
                f"the sample's {check['near_threshold_pairs_string_checked']} pairs with Jaccard within 0.1 of the "
                f"threshold: {check['hash_vs_string_disagreements']} decision(s) differ.", "",
                "| method | clusters | largest | docs in clusters | removed | pair P | pair R | pair F1 "
                "| closure P | closure R | closure F1 | doc P | doc R | doc F1 |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for name, q in section["quality"].items():
                p, c, d = q["pair"], q["pair_vs_closure"], q["document"]
                lines.append(f"| {name} | {q['clusters']:,} | {q['largest_cluster']} | {q['documents_in_clusters']:,} "
                             f"| {q['removed']:,} | {p['precision']:.4f} | {p['recall']:.4f} | {p['f1']:.4f} "
                             f"| {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} "
                             f"| {d['precision']:.4f} | {d['recall']:.4f} | {d['f1']:.4f} |")
            lines += [
                "",
                "Definitions: a predicted cluster is a connected component of the method's edges (Beam: "
                "`duplicates/` rows grouped by cluster_id, plus the representative; datasketch / rensa: union-find "
                "over all LSH candidates, unverified). *Pair*: predicted pairs are all pairs inside a predicted "
                "cluster, actual pairs are the ground-truth pairs. *Closure*: actual pairs are all pairs inside a "
                "connected component of the ground-truth graph, so chaining A~B~C is not an error. *Doc*: predicted "
                "are documents in a predicted cluster of size >= 2 (removed or representative), actual are documents "
                "in at least one ground-truth pair. *Removed* = documents minus clusters (what the method drops).", ""]
            for name, q in section["quality"].items():
                if q["missed_pair_examples"] or q["false_pair_examples"]:
                    lines.append(f"- {name}: missed pairs "
                                 f"{_examples(q['missed_pair_examples'])}; false pairs "
                                 f"{_examples(q['false_pair_examples'])}")
            lines.append("")
        lines.append("")
    if report["failures"]:
        lines += ["## Failed runs", ""]
        for failure in report["failures"]:
            tail = " ".join(failure["error"].strip().splitlines()[-1:])
            lines.append(f"- {failure['contender']} at {failure['copies']}x, repeat {failure['repeat'] + 1}: `{tail}`")
        lines.append("")
    start, end = report["machine"], report["code_version_at_end"]
    if (start["git"], start["working_tree_diff_sha256"]) != (end["git"], end["working_tree_diff_sha256"]):
        lines += [f"**The measured code changed during the run** (git {start['git']} -> {end['git']}, "
                  "or uncommitted changes): runs before and after the change are mixed in the medians.", ""]
    lines += ["## Targets", "", "| target | value | pass |", "|---|---|---|"]
    for t in report["targets"]:
        verdict = "—" if t["pass"] is None else ("PASS" if t["pass"] else "FAIL")
        lines.append(f"| {t['target']} | {t['value']} | {verdict} |")
    lines += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]] + [""]
    return "\n".join(lines)


def _examples(items: list[dict]) -> str:
    if not items:
        return "none"
    return "; ".join(f"`{a}` ~ `{b}` J={x['jaccard']}" for x in items for a, b in [x["ids"]])


# --------------------------------------------------------------------------- main


def corpus_facts(corpus: Path) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Ids, normalised texts and the size facts of a corpus file."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from corpusmill.schemas.config import NormalizeConfig
    from corpusmill.transforms.normalize import normalize_texts

    table = pq.read_table(corpus, columns=["id", "text"])
    ids = np.asarray(table.column("id").to_pylist(), dtype=object)
    normalized = normalize_texts(table.column("text").to_pylist(), NormalizeConfig())
    shingles = sum(max(1, len(t.split()) - NGRAM + 1) for t in normalized if t)
    return ids, normalized, {
        "path": str(corpus.relative_to(REPO_ROOT)), "documents": int(ids.size),
        "text_bytes": int(pc.sum(pc.binary_length(table.column("text"))).as_py()),
        "file_bytes": corpus.stat().st_size, "shingles": int(shingles),
    }


NOTES = [
    "Signature throughput is the in-process signature phase only (Python shingling for the references, the "
    "kernel's own tokeniser for the kernel); MB/s counts the raw UTF-8 text bytes of the corpus, shingles/s the "
    "word 5-grams with repeats (max(1, words - 4) per non-empty normalised text).",
    "The kernel uses numba's threads (all cores); datasketch and rensa's per-document paths are single threaded. "
    "The kernel's one-thread row is the like-for-like comparison.",
    "datasketch gets its best per-document path: permutations drawn once and passed to every MinHash (a fresh "
    "MinHash per document redraws them, roughly doubling its time on small documents). It keeps its default "
    "SHA-1 shingle hash and rensa its own hash, so their signatures differ from the kernel's but have the same "
    "statistics; all three hash the same shingles.",
    f"rensa's RMinHashLSH needs num_perm divisible by the band count, so it runs {RENSA_BANDS} bands x "
    f"{NUM_PERM // RENSA_BANDS} rows (S-curve midpoint ~0.88) instead of datasketch's 9 x 13 (~0.84) that "
    "the Beam job also uses.",
    "Whole-run wall time of the Beam job includes writing the kept documents, duplicates/, the manifest and "
    "report; stages after dedup (if the config has any with an `enabled` key) are switched off with --set. "
    "The datasketch / rensa paths end at cluster labels in memory.",
    "Peak RSS is /usr/bin/time -v's maximum resident set of the largest single process; the Beam job runs "
    "in-process on the FnApiRunner, so it is the whole job's. Tree RSS sums the process tree sampled every 50 ms.",
    "Per-worker peaks are each SDK worker process's VmHWM from /proc, sampled every 50 ms until it exits. The "
    "FnApiRunner sends a worker its whole share of a stage as one bundle (1 / workers of the stage's input), so "
    "the worker runs scale with the corpus: 2 workers at 1x, 8 at 4x, 16 MiB shards (4 and 15 partitions).",
    "Ground truth is on 32-bit shingle hashes (the sets the kernel and the job's exact verification see); the "
    "string check bounds the effect of hash collisions.",
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per contender (default 3)")
    parser.add_argument("--copies", default="1,4", help="corpus sizes, comma separated (default 1,4)")
    parser.add_argument("--contenders", nargs="+", choices=[c.name for c in CONTENDERS],
                        default=[c.name for c in CONTENDERS])
    parser.add_argument("--sample", type=int, default=300, help="documents in the brute-force check")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report; the .md goes beside it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark and writes the JSON and markdown reports."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [WORKER_COMMAND]:
        print(json.dumps(run_worker(argv[1], Path(argv[2]), Path(argv[3]))))
        return 0
    args = _parser().parse_args(argv)
    copies_list = [int(c) for c in args.copies.split(",")]
    bench_started = time.perf_counter()
    from corpusmill.jobs.linux_doc import ensure_corpus

    machine = machine_info()
    contenders = [c for c in CONTENDERS if c.name in args.contenders]
    corpora, facts = {}, {}
    for copies in copies_list:
        corpora[copies] = ensure_corpus(DATA_DIR, copies=copies, formats=("parquet",))["parquet"].resolve()
        facts[copies] = corpus_facts(corpora[copies])
        print(f"corpus {copies}x: {facts[copies][2]}", file=sys.stderr)

    runs: dict[int, list[dict[str, Any]]] = {c: [] for c in copies_list}
    labels: dict[int, dict[str, np.ndarray]] = {c: {} for c in copies_list}
    failures: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        for copies in copies_list:
            ids = facts[copies][0]
            for contender in contenders:
                done = sum(r["contender"] == contender.name for r in runs[copies])
                if copies not in contender.copies or (contender.max_runs and done >= contender.max_runs):
                    continue
                try:
                    result = run_contender(contender, corpora[copies], ids)
                except RuntimeError as error:
                    # Recorded, not fatal: one failing contender must not lose the others' numbers.
                    failures.append({"contender": contender.name, "copies": copies, "repeat": repeat,
                                     "error": str(error)[-1500:]})
                    print(f"[{repeat + 1}/{args.repeats}] {copies}x {contender.name} FAILED", file=sys.stderr)
                    continue
                run_labels = result.pop("labels")
                if run_labels is not None and contender.name not in labels[copies]:
                    labels[copies][contender.name] = run_labels
                runs[copies].append({"contender": contender.name, "repeat": repeat, **result})
                print(f"[{repeat + 1}/{args.repeats}] {copies}x {contender.name:<15} wall "
                      f"{result['wall_seconds']:7.2f} s  peak RSS {result['peak_rss_mb']:7.0f} MB  "
                      f"{json.dumps(result.get('phases', {}))}", file=sys.stderr)

    by_copies = {}
    for copies in copies_list:
        ids, normalized, corpus = facts[copies]
        section = {"corpus": corpus, **summarise(runs[copies], corpus)}
        if labels[copies]:
            print(f"ground truth {copies}x ...", file=sys.stderr)
            truth = ground_truth(normalized, args.sample)
            truth["labels"] = truth_components(len(normalized), truth["pairs"])
            _, component_sizes = np.unique(truth["labels"], return_counts=True)
            similarity = np.array([jaccard(truth, a, b) for a, b in truth["pairs"]])
            section["ground_truth"] = {
                "expected_lsh_pair_recall": {
                    f"{b}x{r}": round(float(np.mean(1 - (1 - similarity**r) ** b)), 4)
                    for b, r in (minhash_bands(), (RENSA_BANDS, NUM_PERM // RENSA_BANDS))},
                "pairs_by_jaccard": {"1.0": int(np.sum(similarity == 1.0)),
                                     "[0.9,1)": int(np.sum((similarity >= 0.9) & (similarity < 1))),
                                     "[0.8,0.9)": int(np.sum(similarity < 0.9))},
                "pairs": int(truth["pairs"].shape[0]), "documents": int(np.unique(truth["pairs"]).size),
                "components": int(np.sum(component_sizes >= 2)), "largest_component": int(component_sizes.max()),
                "minimal_removal": int(np.sum(component_sizes - 1)), "join_seconds": truth["join_seconds"],
                "check": truth["check"],
            }
            section["quality"] = {name: score(lab, truth, ids) for name, lab in labels[copies].items()}
        by_copies[str(copies)] = section

    report = {
        "benchmark": "dedup_bench",
        "command": "python benchmarks/dedup_bench.py" + (" " + " ".join(argv) if argv else ""),
        "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "repeats": args.repeats,
        "machine": machine,
        "parameters": {"ngram": NGRAM, "num_perm": NUM_PERM, "seed": SEED, "scheme": SCHEME,
                       "threshold": THRESHOLD, "rensa_bands": RENSA_BANDS},
        "contenders": [dataclasses.asdict(c) for c in contenders],
        "beam_commands": {c.name: "corpusmill " + " ".join(c.command(Path("CORPUS.parquet"), Path("TMP"))[3:])
                          for c in contenders if c.kind == "beam"},
        "by_copies": by_copies,
        "raw": {str(c): runs[c] for c in copies_list},
        "notes": NOTES,
        "failures": failures,
        "code_version_at_end": code_state(),
        "total_seconds": round(time.perf_counter() - bench_started, 1),
    }
    report["targets"] = evaluate_targets(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=_json_default) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(markdown_report(report), encoding="utf-8")
    print(markdown_report(report))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}", file=sys.stderr)
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, (np.ndarray, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")


if __name__ == "__main__":
    sys.exit(main())
