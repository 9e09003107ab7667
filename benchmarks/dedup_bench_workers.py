"""Dedup benchmark: the bodies of the worker subprocesses (kernel, datasketch, datasketch-exact, rensa).

Each runs in a fresh ``dedup_bench.py _worker KIND CORPUS SCRATCH`` process:
read, normalise, run the contender, report its phases as JSON.
"""

from __future__ import annotations

import fractions
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numba
import numpy as np

from dedup_bench_params import NGRAM, NUM_PERM, RENSA_BANDS, SCHEME, SEED, THRESHOLD


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
    from corpusmill.transforms.dedup.normalize import normalize_texts

    started = time.perf_counter()
    texts = pq.read_table(corpus, columns=["text"]).column("text").to_pylist()
    phases["read"] = time.perf_counter() - started
    started = time.perf_counter()
    normalized = normalize_texts(texts, NormalizeConfig())
    phases["normalize"] = time.perf_counter() - started
    return normalized


def _kernel_worker(normalized: list[str], phases: dict[str, float], _: Path) -> dict[str, Any]:
    from corpusmill.transforms.dedup import minhash

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


def _datasketch_candidates(normalized: list[str], phases: dict[str, float]) -> tuple[list[int], list[int], Any]:
    """datasketch's candidate pairs (a < b) over all documents, and its index."""
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
    return left, right, index


def _bands_rows(index) -> list[int]:
    return list(index.b_and_r) if hasattr(index, "b_and_r") else [index.b, index.r]


def _datasketch_worker(normalized: list[str], phases: dict[str, float], scratch: Path) -> dict[str, Any]:
    left, right, index = _datasketch_candidates(normalized, phases)
    extra = _union_find_phase(len(normalized), left, right, phases, scratch)
    return {**extra, "bands_rows": _bands_rows(index)}


def _datasketch_exact_worker(normalized: list[str], phases: dict[str, float], scratch: Path) -> dict[str, Any]:
    """datasketch's candidates, each checked by exact Jaccard of the two shingle-string sets."""
    left, right, index = _datasketch_candidates(normalized, phases)
    started = time.perf_counter()
    # Only the documents of some candidate pair are shingled again (a set each, built once).
    sets: dict[int, set[str]] = {}
    kept_left, kept_right = [], []
    threshold = fractions.Fraction(str(THRESHOLD))  # J >= t in integers: no float rounding at the boundary
    for a, b in zip(left, right):
        set_a = sets.get(a) or sets.setdefault(a, set(python_shingles(normalized[a])))
        set_b = sets.get(b) or sets.setdefault(b, set(python_shingles(normalized[b])))
        common = len(set_a & set_b)
        if common * threshold.denominator >= threshold.numerator * (len(set_a) + len(set_b) - common):
            kept_left.append(a)
            kept_right.append(b)
    phases["verify"] = time.perf_counter() - started
    extra = _union_find_phase(len(normalized), kept_left, kept_right, phases, scratch)
    return {**extra, "candidate_pairs": len(left), "verified_pairs": len(kept_left), "bands_rows": _bands_rows(index)}


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


_WORKERS = {"kernel": _kernel_worker, "datasketch": _datasketch_worker, "datasketch-exact": _datasketch_exact_worker,
            "rensa": _rensa_worker}


def run_worker(kind: str, corpus: Path, scratch: Path) -> dict[str, Any]:
    """Body of one worker subprocess: read, normalise, run the contender, report phases."""
    phases: dict[str, float] = {}
    normalized = _load_normalized(corpus, phases)
    extra = _WORKERS[kind](normalized, phases, scratch)
    return {"phases": phases, **extra}
