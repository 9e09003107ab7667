"""MinHash signatures for near-duplicate detection, computed a batch at a time.

This is the Beam-free kernel under the near-dup dedup stage. It turns a batch of
(already normalised) texts into a ``(n_docs, num_perm)`` uint64 matrix of MinHash
signatures, shingling included, and turns signatures into LSH band keys.

Shingles
    Words are maximal runs of non-whitespace, where whitespace is exactly what
    Python's ``str.split()`` splits on (ASCII whitespace, the separators
    U+001C..U+001F, U+0085, U+00A0 and the Unicode space separators). A shingle is
    ``ngram`` consecutive words joined by one ASCII space, as UTF-8 bytes. A
    document with fewer than ``ngram`` words gives one shingle of all its words;
    a document without words gives no shingle and the empty signature (every
    value ``2**32 - 1``, as an empty ``datasketch.MinHash``).

Shingle hash
    ``shingle_hash`` maps shingle bytes to 32 bits: each word gets a 64-bit
    FNV-1a hash finished with the MurmurHash3 64-bit finaliser; the word hashes
    are folded left to right with ``h = (h ^ word) * MULTIPLIER`` and the result
    is finalised again and its high 32 bits kept. Hashing words first (instead of
    the shingle's bytes) lets the kernel hash every word once and build each
    n-gram hash from ``ngram`` word hashes, never re-reading text.

Permutations
    Exactly datasketch's, so that ``datasketch.MinHash(num_perm, seed,
    hashfunc=shingle_hash, scheme=...)`` updated with ``shingles(text)`` has
    ``hashvalues`` equal to the kernel's row for ``text``. Both of datasketch's
    32-bit schemes are supported: ``"legacy"`` (the only scheme of datasketch <
    2.0, ``((a * h + b) mod 2**64) mod (2**61 - 1)``, low 32 bits) and
    ``"affine32"`` (datasketch >= 2.0's default, ``a * fmix32(h) + b mod 2**32``).

The hot loop is compiled with numba (``minhash_kernels``): tokenising, hashing
and permuting happen in one pass per document, documents are spread over the
cores in byte-balanced blocks, and no per-shingle Python object is ever created.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterator, Sequence
from typing import Literal, Union

import numba
import numpy as np
import pyarrow as pa

from corpusmill.transforms.dedup.minhash_kernels import (
    EMPTY_HASH_VALUE,
    FMIX64_C1,
    FMIX64_C2,
    FNV_OFFSET,
    FNV_PRIME,
    MASK64,
    MERSENNE_61,
    SHINGLE_MULTIPLIER,
    SHINGLE_SEED,
    block_bounds,
    compact_sets,
    nb_shingle_sets,
    nb_signatures,
    nb_signatures_and_sets,
    utf8_buffers,
)

__all__ = [
    "EMPTY_HASH_VALUE",
    "MinHashParams",
    "band_hashes",
    "lsh_params",
    "permutations",
    "shingle_hash",
    "shingle_sets",
    "shingles",
    "signatures",
    "signatures_and_shingle_sets",
]

Scheme = Literal["legacy", "affine32"]

Texts = Union[Sequence[str], pa.Array, pa.ChunkedArray]

_BAND_SEED = 0x243F6A8885A308D3

_SCHEMES = ("legacy", "affine32")


@dataclasses.dataclass(frozen=True)
class MinHashParams:
    """Parameters of the MinHash signature kernel.

    Attributes:
        num_perm: Number of permutations, i.e. signature length.
        ngram: Words per shingle.
        seed: Seed of the permutations, as datasketch's ``seed`` (0 <= seed < 2**32).
        scheme: datasketch permutation scheme the signatures reproduce:
            ``"legacy"`` (datasketch < 2.0 default) or ``"affine32"``
            (datasketch >= 2.0 default).
    """

    num_perm: int = 128
    ngram: int = 5
    seed: int = 1
    scheme: Scheme = "legacy"

    def __post_init__(self) -> None:
        for name in ("num_perm", "ngram", "seed"):
            value = getattr(self, name)
            # bool is an int subclass; True as a permutation count is a bug, not a 1.
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise TypeError(f"MinHashParams.{name} must be an int, got {value!r}")
        if not 1 <= self.num_perm <= 1 << 16:
            raise ValueError(f"MinHashParams.num_perm must be in [1, 65536], got {self.num_perm}")
        if not 1 <= self.ngram <= 1024:
            raise ValueError(f"MinHashParams.ngram must be in [1, 1024], got {self.ngram}")
        if not 0 <= self.seed < 1 << 32:
            # np.random.RandomState, which draws datasketch's permutations, takes only these.
            raise ValueError(f"MinHashParams.seed must be in [0, 2**32), got {self.seed}")
        if self.scheme not in _SCHEMES:
            raise ValueError(f"MinHashParams.scheme must be one of {_SCHEMES}, got {self.scheme!r}")


def _fmix64(h: int) -> int:
    h ^= h >> 33
    h = (h * FMIX64_C1) & MASK64
    h ^= h >> 33
    h = (h * FMIX64_C2) & MASK64
    return h ^ (h >> 33)


def _word_hash(word: bytes) -> int:
    h = FNV_OFFSET
    for byte in word:
        h = ((h ^ byte) * FNV_PRIME) & MASK64
    return _fmix64(h)


def shingle_hash(shingle_bytes: bytes) -> int:
    """Hash one shingle to 32 bits, exactly as the kernel does (slow reference).

    Usable as ``datasketch.MinHash(hashfunc=shingle_hash)``.

    Args:
        shingle_bytes: Words joined by single ASCII spaces, UTF-8 encoded.

    Returns:
        The shingle's hash, an int in [0, 2**32).
    """
    h = SHINGLE_SEED
    for word in shingle_bytes.split(b" "):
        h = ((h ^ _word_hash(word)) * SHINGLE_MULTIPLIER) & MASK64
    return _fmix64(h) >> 32


def shingles(text: str, ngram: int = 5) -> list[bytes]:
    """Word n-gram shingles of a text, as the kernel sees them (slow reference).

    Args:
        text: The (normalised) document text.
        ngram: Words per shingle.

    Returns:
        One ``bytes`` per shingle, words joined by one space, in text order
        (repeats kept). ``[]`` when the text has no words; one shingle of all
        words when it has fewer than ``ngram``.
    """
    words = text.split()
    if not words:
        return []
    count = max(1, len(words) - ngram + 1)
    return [" ".join(words[i : i + ngram]).encode("utf-8") for i in range(count)]


@functools.lru_cache(maxsize=16)
def _permutations_cached(num_perm: int, seed: int, scheme: str) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.RandomState(seed)
    if scheme == "legacy":
        # datasketch draws a then b per permutation, interleaved; the order of
        # draws is part of the format.
        pairs = [
            (gen.randint(1, MERSENNE_61, dtype=np.uint64), gen.randint(0, MERSENNE_61, dtype=np.uint64))
            for _ in range(num_perm)
        ]
        a = np.array([p[0] for p in pairs], dtype=np.uint64)
        b = np.array([p[1] for p in pairs], dtype=np.uint64)
    else:
        a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32).astype(np.uint64) * np.uint64(2) + np.uint64(1)
        b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32).astype(np.uint64)
    a.setflags(write=False)
    b.setflags(write=False)
    return a, b


def permutations(params: MinHashParams) -> tuple[np.ndarray, np.ndarray]:
    """The permutation parameters ``(a, b)`` datasketch draws for these params.

    Args:
        params: Kernel parameters.

    Returns:
        Two read-only uint64 arrays of length ``num_perm``; equal in value to
        ``datasketch.MinHash(num_perm, seed, scheme=params.scheme).permutations``.
    """
    return _permutations_cached(int(params.num_perm), int(params.seed), params.scheme)


@contextlib.contextmanager
def _numba_threads(num_threads: int | None) -> Iterator[int]:
    """Runs the block with ``num_threads`` numba threads (default: numba's); yields the count."""
    previous = numba.get_num_threads()
    threads = previous if num_threads is None else max(1, min(num_threads, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    try:
        yield threads
    finally:
        numba.set_num_threads(previous)


def _as_arrow_strings(texts: Texts) -> pa.Array:
    """One Arrow string array of the texts (chunks combined)."""
    if isinstance(texts, pa.ChunkedArray):
        return texts.combine_chunks() if texts.num_chunks != 1 else texts.chunk(0)
    if not isinstance(texts, pa.Array):
        # pyarrow encodes and concatenates in C: no per-document Python bytes objects.
        return pa.array(texts, type=pa.large_string())
    return texts


def signatures(texts: Texts, params: MinHashParams = MinHashParams(), num_threads: int | None = None) -> np.ndarray:
    """MinHash signatures of a batch of texts, shingling included.

    Row ``i`` equals ``datasketch.MinHash(num_perm=params.num_perm,
    seed=params.seed, hashfunc=shingle_hash, scheme=params.scheme)`` updated
    with ``shingles(texts[i], params.ngram)`` (drop ``scheme`` on datasketch <
    2.0, where only "legacy" exists).

    Args:
        texts: Normalised texts: a sequence of str, or an Arrow (chunked)
            string / large_string array without nulls (read zero-copy).
        params: Kernel parameters.
        num_threads: Threads for this call (default: numba's, i.e. all cores).
            Lower it where the runner already runs one worker per core.

    Returns:
        uint64 array of shape ``(len(texts), params.num_perm)``; every value is
        below 2**32, and a text without words gets all ``EMPTY_HASH_VALUE``.
    """
    if isinstance(texts, pa.ChunkedArray):
        parts = [signatures(chunk, params, num_threads) for chunk in texts.chunks]
        return np.concatenate(parts) if parts else np.empty((0, params.num_perm), dtype=np.uint64)
    if not isinstance(texts, pa.Array):
        # pyarrow encodes and concatenates in C: no per-document Python bytes objects.
        texts = pa.array(texts, type=pa.large_string())
    data, offsets = utf8_buffers(texts)
    num_docs = len(texts)
    out = np.empty((num_docs, params.num_perm), dtype=np.uint64)
    if num_docs == 0:
        return out
    perm_a, perm_b = permutations(params)
    with _numba_threads(num_threads) as threads:
        nb_signatures(data, offsets, block_bounds(offsets, threads), np.int64(params.ngram), perm_a, perm_b,
                      params.scheme == "legacy", out)
    return out


def shingle_sets(texts: Texts, ngram: int = 5, num_threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The set of shingle hashes of each text of a batch, in CSR layout.

    Doc ``i``'s set is ``values[offsets[i]:offsets[i + 1]]``: the sorted, unique
    ``shingle_hash`` values of ``shingles(texts[i], ngram)``, i.e. exactly the
    inputs its MinHash signature was computed from. Exact Jaccard similarity of
    two documents is the Jaccard of these sets.

    Args:
        texts: Normalised texts (as for ``signatures``).
        ngram: Words per shingle.
        num_threads: Threads for this call (default: numba's).

    Returns:
        ``(values, offsets)``: uint32 values and int64 offsets of length
        ``len(texts) + 1``.
    """
    texts = _as_arrow_strings(texts)
    num_docs = len(texts)
    if num_docs == 0:
        return np.empty(0, dtype=np.uint32), np.zeros(1, dtype=np.int64)
    data, offsets = utf8_buffers(texts)
    # A doc of L bytes has at most ceil(L / 2) words, hence shingles; doc i's
    # scratch region starts at offsets[i] // 2 + i, which leaves that much room.
    starts = offsets[:-1] // 2 + np.arange(num_docs, dtype=np.int64)
    out = np.empty(int(offsets[-1] // 2 + num_docs), dtype=np.uint32)
    counts = np.zeros(num_docs, dtype=np.int64)
    with _numba_threads(num_threads) as threads:
        nb_shingle_sets(data, offsets, block_bounds(offsets, threads), np.int64(ngram), starts, out, counts)
    return compact_sets(out, starts, counts)


def signatures_and_shingle_sets(texts: Texts, params: MinHashParams = MinHashParams(),
                                num_threads: int | None = None) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """``signatures`` and ``shingle_sets`` of one batch in one pass over the text.

    Each text is tokenised and its shingles hashed once; the signature is
    computed over the distinct shingle hashes, which gives the same minima.

    Args:
        texts: Normalised texts (as for ``signatures``).
        params: Kernel parameters (``params.ngram`` also shapes the sets).
        num_threads: Threads for this call (default: numba's).

    Returns:
        ``(signatures, (values, offsets))``, equal to
        ``signatures(texts, params)`` and ``shingle_sets(texts, params.ngram)``.
    """
    texts = _as_arrow_strings(texts)
    num_docs = len(texts)
    sigs = np.empty((num_docs, params.num_perm), dtype=np.uint64)
    if num_docs == 0:
        return sigs, (np.empty(0, dtype=np.uint32), np.zeros(1, dtype=np.int64))
    data, offsets = utf8_buffers(texts)
    starts = offsets[:-1] // 2 + np.arange(num_docs, dtype=np.int64)
    scratch = np.empty(int(offsets[-1] // 2 + num_docs), dtype=np.uint32)
    counts = np.zeros(num_docs, dtype=np.int64)
    perm_a, perm_b = permutations(params)
    with _numba_threads(num_threads) as threads:
        nb_signatures_and_sets(data, offsets, block_bounds(offsets, threads), np.int64(params.ngram), perm_a,
                               perm_b, params.scheme == "legacy", starts, sigs, scratch, counts)
    return sigs, compact_sets(scratch, starts, counts)


@functools.lru_cache(maxsize=64)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """Bands and rows for MinHash LSH at a Jaccard threshold, as datasketch picks them.

    Uses datasketch's ``MinHashLSH`` optimiser (equal false-positive and
    false-negative weights), so the banding matches ``MinHashLSH(threshold,
    num_perm)``.

    Args:
        threshold: Jaccard similarity threshold, in (0, 1).
        num_perm: Signature length.

    Returns:
        ``(bands, rows)`` with ``bands * rows <= num_perm``.
    """
    # Private in datasketch but stable since 1.0; it is the single source of
    # truth MinHashLSH itself uses, which is what interop needs.
    from datasketch.lsh import _optimal_param

    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if num_perm < 2:
        raise ValueError(f"num_perm must be >= 2, got {num_perm}")
    bands, rows = _optimal_param(threshold, num_perm, 0.5, 0.5)
    return int(bands), int(rows)


def _fmix64_array(h: np.ndarray) -> np.ndarray:
    h ^= h >> np.uint64(33)
    h *= np.uint64(FMIX64_C1)
    h ^= h >> np.uint64(33)
    h *= np.uint64(FMIX64_C2)
    h ^= h >> np.uint64(33)
    return h


def band_hashes(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Hash each LSH band of each signature to one uint64 key.

    Band ``j`` covers signature columns ``[j * rows, (j + 1) * rows)``; columns
    past ``bands * rows`` are unused, as in datasketch's ``MinHashLSH``. The key
    starts from a per-band seed and absorbs the band's values one at a time
    (``h = fmix64(h ^ value)``, MurmurHash3's 64-bit finaliser, a bijection),
    so equal bands always give equal keys, the same values in different bands
    give different keys, and unequal bands collide with probability about
    2**-64. Two documents are LSH candidates when they share the key of any
    band ``j``; group by ``(j, key)``.

    Args:
        signatures: ``(n_docs, num_perm)`` signatures, e.g. from ``signatures()``.
        bands: Number of bands.
        rows: Signature values per band.

    Returns:
        uint64 array of shape ``(n_docs, bands)``.
    """
    signatures = np.asarray(signatures)
    if signatures.ndim != 2:
        raise ValueError(f"signatures must be 2-D (n_docs, num_perm), got shape {signatures.shape}")
    if bands < 1 or rows < 1 or bands * rows > signatures.shape[1]:
        raise ValueError(
            f"bands * rows must be in [1, num_perm={signatures.shape[1]}], got bands={bands}, rows={rows}"
        )
    banded = signatures[:, : bands * rows].astype(np.uint64, copy=False).reshape(-1, bands, rows)
    seeds = _fmix64_array(np.arange(bands, dtype=np.uint64) + np.uint64(_BAND_SEED))
    keys = np.repeat(seeds[np.newaxis, :], banded.shape[0], axis=0)
    for r in range(rows):
        keys ^= banded[:, :, r]
        _fmix64_array(keys)
    return keys
