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

The hot loop is compiled with numba: tokenising, hashing and permuting happen in
one pass per document, documents are spread over the cores in byte-balanced
blocks, and no per-shingle Python object is ever created.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Literal, Union

import numba
import numpy as np
import pyarrow as pa

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

#: The value of every slot of an empty signature (datasketch's ``_max_hash``).
EMPTY_HASH_VALUE = (1 << 32) - 1

_MASK64 = (1 << 64) - 1
_MASK32 = (1 << 32) - 1
_MERSENNE_61 = (1 << 61) - 1

# Python ints for the reference implementation; the numba kernel gets the same
# numbers as np.uint64 below, because numba turns mixed int64/uint64 arithmetic
# into float64 and would silently lose bits.
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_FMIX64_C1 = 0xFF51AFD7ED558CCD
_FMIX64_C2 = 0xC4CEB9FE1A85EC53
_SHINGLE_SEED = 0x9E3779B97F4A7C15
_SHINGLE_MULTIPLIER = 0xD6E8FEB86659FD93
_BAND_SEED = 0x243F6A8885A308D3

_U64_FNV_OFFSET = np.uint64(_FNV_OFFSET)
_U64_FNV_PRIME = np.uint64(_FNV_PRIME)
_U64_FMIX64_C1 = np.uint64(_FMIX64_C1)
_U64_FMIX64_C2 = np.uint64(_FMIX64_C2)
_U64_SHINGLE_SEED = np.uint64(_SHINGLE_SEED)
_U64_SHINGLE_MULTIPLIER = np.uint64(_SHINGLE_MULTIPLIER)
_U64_FMIX32_C1 = np.uint64(0x85EBCA6B)
_U64_FMIX32_C2 = np.uint64(0xC2B2AE35)
_U64_MASK32 = np.uint64(_MASK32)
_U64_MERSENNE_61 = np.uint64(_MERSENNE_61)
_U64_EMPTY = np.uint64(EMPTY_HASH_VALUE)
_U64_SHIFT_13 = np.uint64(13)
_U64_SHIFT_16 = np.uint64(16)
_U64_SHIFT_32 = np.uint64(32)
_U64_SHIFT_33 = np.uint64(33)
_U64_SHIFT_61 = np.uint64(61)

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


# --------------------------------------------------------------------------
# Pure-Python reference (slow; the oracle side of the tests)
# --------------------------------------------------------------------------


def _fmix64(h: int) -> int:
    h ^= h >> 33
    h = (h * _FMIX64_C1) & _MASK64
    h ^= h >> 33
    h = (h * _FMIX64_C2) & _MASK64
    return h ^ (h >> 33)


def _word_hash(word: bytes) -> int:
    h = _FNV_OFFSET
    for byte in word:
        h = ((h ^ byte) * _FNV_PRIME) & _MASK64
    return _fmix64(h)


def shingle_hash(shingle_bytes: bytes) -> int:
    """Hash one shingle to 32 bits, exactly as the kernel does (slow reference).

    Usable as ``datasketch.MinHash(hashfunc=shingle_hash)``.

    Args:
        shingle_bytes: Words joined by single ASCII spaces, UTF-8 encoded.

    Returns:
        The shingle's hash, an int in [0, 2**32).
    """
    h = _SHINGLE_SEED
    for word in shingle_bytes.split(b" "):
        h = ((h ^ _word_hash(word)) * _SHINGLE_MULTIPLIER) & _MASK64
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


# --------------------------------------------------------------------------
# Permutations (datasketch's draws, reproduced)
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _permutations_cached(num_perm: int, seed: int, scheme: str) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.RandomState(seed)
    if scheme == "legacy":
        # datasketch draws a then b per permutation, interleaved; the order of
        # draws is part of the format.
        pairs = [
            (gen.randint(1, _MERSENNE_61, dtype=np.uint64), gen.randint(0, _MERSENNE_61, dtype=np.uint64))
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


# --------------------------------------------------------------------------
# numba kernel
# --------------------------------------------------------------------------


@numba.njit(inline="always", cache=True)
def _nb_fmix64(h):
    h ^= h >> _U64_SHIFT_33
    h *= _U64_FMIX64_C1
    h ^= h >> _U64_SHIFT_33
    h *= _U64_FMIX64_C2
    return h ^ (h >> _U64_SHIFT_33)


@numba.njit(inline="always", cache=True)
def _nb_fmix32(h):
    # datasketch's affine32 pre-mix, carried out in uint64 with explicit masks
    # because numba widens uint32 arithmetic anyway.
    h ^= h >> _U64_SHIFT_16
    h = (h * _U64_FMIX32_C1) & _U64_MASK32
    h ^= h >> _U64_SHIFT_13
    h = (h * _U64_FMIX32_C2) & _U64_MASK32
    return h ^ (h >> _U64_SHIFT_16)


@numba.njit(inline="always", cache=True)
def _nb_whitespace_length(data, i, end):
    """Bytes of the str.split() whitespace character starting at data[i], else 0."""
    c = data[i]
    if c == 32 or 9 <= c <= 13 or 28 <= c <= 31:
        return 1
    # Lead bytes 0xC2/0xE1/0xE2/0xE3 never occur as continuation bytes, so
    # matching them in valid UTF-8 cannot start mid-character.
    if c == 0xC2:
        if i + 1 < end and (data[i + 1] == 0x85 or data[i + 1] == 0xA0):
            return 2
        return 0
    if c < 0xE1 or c > 0xE3 or i + 2 >= end:
        return 0
    c1 = data[i + 1]
    c2 = data[i + 2]
    if c == 0xE1:  # U+1680
        return 3 if (c1 == 0x9A and c2 == 0x80) else 0
    if c == 0xE3:  # U+3000
        return 3 if (c1 == 0x80 and c2 == 0x80) else 0
    if c1 == 0x80:  # U+2000..U+200A, U+2028, U+2029, U+202F
        return 3 if (c2 <= 0x8A or c2 == 0xA8 or c2 == 0xA9 or c2 == 0xAF) else 0
    if c1 == 0x81:  # U+205F
        return 3 if c2 == 0x9F else 0
    return 0


_WORD, _SPACE, _MAYBE_SPACE = 0, 1, 2


def _byte_classes() -> np.ndarray:
    classes = np.zeros(256, dtype=np.uint8)
    classes[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = _SPACE
    # Lead bytes of the multi-byte whitespace characters (U+0085, U+00A0,
    # U+1680, U+2000..U+205F, U+3000); the kernel checks the following bytes.
    classes[[0xC2, 0xE1, 0xE2, 0xE3]] = _MAYBE_SPACE
    return classes


# Byte -> class lookup: one load instead of a chain of compares, which keeps the
# tokenizer loop free of data-dependent branches except on the rare lead bytes
# of multi-byte characters.
_BYTE_CLASS = _byte_classes()


@numba.njit(inline="always", cache=True)
def _nb_raw_word_hashes(data, start, end, out):
    """Write the FNV-1a hash of each word of data[start:end] into out; return the count.

    Branch-free per byte (select instead of if/else): whitespace and word bytes
    alternate unpredictably, and mispredicted branches cost more than the
    hashing. The slot out[count] is rewritten on every byte and only kept
    (count advances) when a word ends, so out needs one spare slot.
    """
    count = 0
    in_word = np.uint64(0)
    h = _U64_FNV_OFFSET
    i = start
    while i < end:
        c = data[i]
        byte_class = _BYTE_CLASS[c]
        step = 1
        if byte_class == _MAYBE_SPACE:
            space_length = _nb_whitespace_length(data, i, end)
            if space_length:
                byte_class = _SPACE
                step = space_length
            else:
                byte_class = _WORD
        is_space = np.uint64(byte_class)
        out[count] = h
        count += np.int64(is_space & in_word)
        next_h = (h ^ np.uint64(c)) * _U64_FNV_PRIME
        h = _U64_FNV_OFFSET if is_space else next_h
        in_word = np.uint64(1) - is_space
        i += step
    if in_word:
        out[count] = h
        count += 1
    return count


@numba.njit(inline="always", cache=True)
def _nb_shingle_hashes(hashes, num_words, ngram):
    """Turns raw word hashes into 32-bit shingle hashes in place; returns their count.

    Shingle j reads word hashes j..j+width-1 (>= j) before overwriting slot j.
    """
    for j in range(num_words):
        hashes[j] = _nb_fmix64(hashes[j])
    width = min(ngram, num_words)
    num_shingles = max(1, num_words - ngram + 1)
    for j in range(num_shingles):
        h = _U64_SHINGLE_SEED
        for t in range(width):
            h = (h ^ hashes[j + t]) * _U64_SHINGLE_MULTIPLIER
        hashes[j] = _nb_fmix64(h) >> _U64_SHIFT_32
    return num_shingles


@numba.njit(inline="always", cache=True)
def _nb_permute_into(row, hv, perm_a, perm_b, legacy):
    """Lowers ``row`` to the permuted values of one shingle hash (datasketch's math)."""
    num_perm = perm_a.shape[0]
    if legacy:
        for k in range(num_perm):
            # a*hv+b wraps mod 2**64 as in datasketch's numpy uint64 code; then
            # mod 2**61-1 by folding, since 2**61 == 1 (mod p): x == (x & p) + (x >> 61).
            x = perm_a[k] * hv + perm_b[k]
            x = (x & _U64_MERSENNE_61) + (x >> _U64_SHIFT_61)
            if x >= _U64_MERSENNE_61:
                x -= _U64_MERSENNE_61
            row[k] = min(row[k], x & _U64_MASK32)
    else:
        mixed = _nb_fmix32(hv)
        for k in range(num_perm):
            row[k] = min(row[k], (perm_a[k] * mixed + perm_b[k]) & _U64_MASK32)


@numba.njit(inline="always", cache=True)
def _nb_block_scratch(offsets, first_doc, last_doc, num_perm):
    """Scratch buffers for one block of documents: word/shingle hashes and a signature row.

    Words are separated by at least one byte, so a doc of L bytes has at most
    (L + 1) // 2 words, plus the tokenizer's spare slot; one buffer serves the block.
    """
    longest = 0
    for doc in range(first_doc, last_doc):
        longest = max(longest, offsets[doc + 1] - offsets[doc])
    return np.empty((longest + 1) // 2 + 2, dtype=np.uint64), np.empty(num_perm, dtype=np.uint64)


@numba.njit(cache=True, parallel=True, nogil=True)
def _nb_signatures(data, offsets, block_bounds, ngram, perm_a, perm_b, legacy, out):
    num_perm = perm_a.shape[0]
    num_blocks = block_bounds.shape[0] - 1
    for block in numba.prange(num_blocks):
        first_doc = block_bounds[block]
        last_doc = block_bounds[block + 1]
        hashes, row = _nb_block_scratch(offsets, first_doc, last_doc, num_perm)
        for doc in range(first_doc, last_doc):
            num_words = _nb_raw_word_hashes(data, offsets[doc], offsets[doc + 1], hashes)
            row[:] = _U64_EMPTY
            if num_words > 0:
                num_shingles = _nb_shingle_hashes(hashes, num_words, ngram)
                previous = _U64_EMPTY + np.uint64(1)  # never a 32-bit hash
                for j in range(num_shingles):
                    hv = hashes[j]
                    # Runs of one repeated shingle (rulers, tables) are common
                    # and free to skip; general dedup costs more than it saves.
                    if hv == previous:
                        continue
                    previous = hv
                    _nb_permute_into(row, hv, perm_a, perm_b, legacy)
            out[doc, :] = row


def _utf8_buffers(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Zero-copy (data, offsets) views of an Arrow string array, rebased to 0."""
    if texts.null_count:
        raise ValueError(f"texts contains {texts.null_count} null value(s); the kernel needs strings")
    if pa.types.is_string(texts.type):
        offset_type = np.int32
    elif pa.types.is_large_string(texts.type):
        offset_type = np.int64
    else:
        raise TypeError(f"texts must be an Arrow string or large_string array, got {texts.type}")
    _, offsets_buffer, data_buffer = texts.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type)[texts.offset : texts.offset + len(texts) + 1]
    offsets = offsets.astype(np.int64)
    if data_buffer is None or offsets[-1] == offsets[0]:
        data = np.zeros(1, dtype=np.uint8)
    else:
        data = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data, offsets - offsets[0]


def _block_bounds(offsets: np.ndarray, num_threads: int) -> np.ndarray:
    """Split docs into contiguous blocks of about equal bytes, several per thread."""
    num_docs = offsets.shape[0] - 1
    num_blocks = max(1, min(num_docs, 8 * num_threads))
    targets = np.linspace(0, offsets[-1], num_blocks + 1)
    bounds = np.searchsorted(offsets, targets, side="left")
    bounds[0], bounds[-1] = 0, num_docs
    return np.unique(np.clip(bounds, 0, num_docs)).astype(np.int64)


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
    data, offsets = _utf8_buffers(texts)
    num_docs = len(texts)
    out = np.empty((num_docs, params.num_perm), dtype=np.uint64)
    if num_docs == 0:
        return out
    perm_a, perm_b = permutations(params)
    previous_threads = numba.get_num_threads()
    threads = previous_threads if num_threads is None else max(1, min(num_threads, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    try:
        _nb_signatures(
            data,
            offsets,
            _block_bounds(offsets, threads),
            np.int64(params.ngram),
            perm_a,
            perm_b,
            params.scheme == "legacy",
            out,
        )
    finally:
        numba.set_num_threads(previous_threads)
    return out


@numba.njit(cache=True, parallel=True, nogil=True)
def _nb_shingle_sets(data, offsets, block_bounds, ngram, starts, out, counts):
    num_blocks = block_bounds.shape[0] - 1
    for block in numba.prange(num_blocks):
        first_doc = block_bounds[block]
        last_doc = block_bounds[block + 1]
        hashes, _ = _nb_block_scratch(offsets, first_doc, last_doc, 0)
        for doc in range(first_doc, last_doc):
            num_words = _nb_raw_word_hashes(data, offsets[doc], offsets[doc + 1], hashes)
            if num_words == 0:
                counts[doc] = 0
                continue
            # The same shingle hashes the signatures are computed from.
            num_shingles = _nb_shingle_hashes(hashes, num_words, ngram)
            ordered = np.sort(hashes[:num_shingles])
            start = starts[doc]
            unique = 0
            for j in range(num_shingles):
                if j == 0 or ordered[j] != ordered[j - 1]:
                    out[start + unique] = np.uint32(ordered[j])
                    unique += 1
            counts[doc] = unique


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
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks != 1 else texts.chunk(0)
    if not isinstance(texts, pa.Array):
        texts = pa.array(texts, type=pa.large_string())
    num_docs = len(texts)
    if num_docs == 0:
        return np.empty(0, dtype=np.uint32), np.zeros(1, dtype=np.int64)
    data, offsets = _utf8_buffers(texts)
    # A doc of L bytes has at most ceil(L / 2) words, hence shingles; doc i's
    # scratch region starts at offsets[i] // 2 + i, which leaves that much room.
    starts = offsets[:-1] // 2 + np.arange(num_docs, dtype=np.int64)
    out = np.empty(int(offsets[-1] // 2 + num_docs), dtype=np.uint32)
    counts = np.zeros(num_docs, dtype=np.int64)
    previous_threads = numba.get_num_threads()
    threads = previous_threads if num_threads is None else max(1, min(num_threads, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    try:
        _nb_shingle_sets(data, offsets, _block_bounds(offsets, threads), np.int64(ngram), starts, out, counts)
    finally:
        numba.set_num_threads(previous_threads)
    return _compact_sets(out, starts, counts)


@numba.njit(cache=True, parallel=True, nogil=True)
def _nb_compact(scratch, starts, counts, csr_offsets, out):
    for doc in numba.prange(starts.shape[0]):
        out[csr_offsets[doc] : csr_offsets[doc] + counts[doc]] = scratch[starts[doc] : starts[doc] + counts[doc]]


def _compact_sets(scratch: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gathers each doc's prefix of its scratch region into the compact CSR layout."""
    csr_offsets = np.zeros(starts.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=csr_offsets[1:])
    values = np.empty(int(csr_offsets[-1]), dtype=np.uint32)
    _nb_compact(scratch, starts, counts, csr_offsets, values)
    return values, csr_offsets


@numba.njit(cache=True, parallel=True, nogil=True)
def _nb_signatures_and_sets(data, offsets, block_bounds, ngram, perm_a, perm_b, legacy, starts, sig_out,
                            set_out, counts):
    num_perm = perm_a.shape[0]
    num_blocks = block_bounds.shape[0] - 1
    for block in numba.prange(num_blocks):
        first_doc = block_bounds[block]
        last_doc = block_bounds[block + 1]
        hashes, row = _nb_block_scratch(offsets, first_doc, last_doc, num_perm)
        for doc in range(first_doc, last_doc):
            num_words = _nb_raw_word_hashes(data, offsets[doc], offsets[doc + 1], hashes)
            row[:] = _U64_EMPTY
            unique = 0
            if num_words > 0:
                num_shingles = _nb_shingle_hashes(hashes, num_words, ngram)
                ordered = np.sort(hashes[:num_shingles])
                start = starts[doc]
                # A minimum does not depend on order or repeats: permuting
                # each distinct shingle once gives _nb_signatures' row.
                for j in range(num_shingles):
                    hv = ordered[j]
                    if j > 0 and hv == ordered[j - 1]:
                        continue
                    set_out[start + unique] = np.uint32(hv)
                    unique += 1
                    _nb_permute_into(row, hv, perm_a, perm_b, legacy)
            counts[doc] = unique
            sig_out[doc, :] = row


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
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks != 1 else texts.chunk(0)
    if not isinstance(texts, pa.Array):
        texts = pa.array(texts, type=pa.large_string())
    num_docs = len(texts)
    sigs = np.empty((num_docs, params.num_perm), dtype=np.uint64)
    if num_docs == 0:
        return sigs, (np.empty(0, dtype=np.uint32), np.zeros(1, dtype=np.int64))
    data, offsets = _utf8_buffers(texts)
    starts = offsets[:-1] // 2 + np.arange(num_docs, dtype=np.int64)
    scratch = np.empty(int(offsets[-1] // 2 + num_docs), dtype=np.uint32)
    counts = np.zeros(num_docs, dtype=np.int64)
    perm_a, perm_b = permutations(params)
    previous_threads = numba.get_num_threads()
    threads = previous_threads if num_threads is None else max(1, min(num_threads, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    try:
        _nb_signatures_and_sets(data, offsets, _block_bounds(offsets, threads), np.int64(params.ngram), perm_a,
                                perm_b, params.scheme == "legacy", starts, sigs, scratch, counts)
        return sigs, _compact_sets(scratch, starts, counts)
    finally:
        numba.set_num_threads(previous_threads)


# --------------------------------------------------------------------------
# LSH banding
# --------------------------------------------------------------------------


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
    h *= np.uint64(_FMIX64_C1)
    h ^= h >> np.uint64(33)
    h *= np.uint64(_FMIX64_C2)
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
