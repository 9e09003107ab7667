"""Compiled MinHash kernels and the hash constants they share with the reference (Beam-free).

``corpusmill.transforms.dedup.minhash`` is the public face: it documents the
shingles, the hashes and the permutations, holds the pure-Python reference,
and calls these kernels. Here live the numba loops (tokenise, hash, permute
in one pass per document, blocks of documents spread over the cores) and the
byte-level view of Arrow strings they run on. ``nb_whitespace_length`` is the
one definition of a word boundary: normalisation
(``corpusmill.transforms.dedup.normalize``) collapses exactly the whitespace
the shingler splits on.
"""

from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa

#: The value of every slot of an empty signature (datasketch's ``_max_hash``).
EMPTY_HASH_VALUE = (1 << 32) - 1

MASK64 = (1 << 64) - 1
MASK32 = (1 << 32) - 1
MERSENNE_61 = (1 << 61) - 1
# Python ints for the reference implementation; the numba kernel gets the same
# numbers as np.uint64 below, because numba turns mixed int64/uint64 arithmetic
# into float64 and would silently lose bits.
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
FMIX64_C1 = 0xFF51AFD7ED558CCD
FMIX64_C2 = 0xC4CEB9FE1A85EC53
SHINGLE_SEED = 0x9E3779B97F4A7C15
SHINGLE_MULTIPLIER = 0xD6E8FEB86659FD93
_U64_FNV_OFFSET = np.uint64(FNV_OFFSET)
_U64_FNV_PRIME = np.uint64(FNV_PRIME)
_U64_FMIX64_C1 = np.uint64(FMIX64_C1)
_U64_FMIX64_C2 = np.uint64(FMIX64_C2)
_U64_SHINGLE_SEED = np.uint64(SHINGLE_SEED)
_U64_SHINGLE_MULTIPLIER = np.uint64(SHINGLE_MULTIPLIER)
_U64_FMIX32_C1 = np.uint64(0x85EBCA6B)
_U64_FMIX32_C2 = np.uint64(0xC2B2AE35)
_U64_MASK32 = np.uint64(MASK32)
_U64_MERSENNE_61 = np.uint64(MERSENNE_61)
_U64_EMPTY = np.uint64(EMPTY_HASH_VALUE)
_U64_SHIFT_13 = np.uint64(13)
_U64_SHIFT_16 = np.uint64(16)
_U64_SHIFT_32 = np.uint64(32)
_U64_SHIFT_33 = np.uint64(33)
_U64_SHIFT_61 = np.uint64(61)


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
def nb_whitespace_length(data, i, end):
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
            space_length = nb_whitespace_length(data, i, end)
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
def nb_signatures(data, offsets, block_bounds, ngram, perm_a, perm_b, legacy, out):
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


def utf8_buffers(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
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


def block_bounds(offsets: np.ndarray, num_threads: int) -> np.ndarray:
    """Split docs into contiguous blocks of about equal bytes, several per thread."""
    num_docs = offsets.shape[0] - 1
    num_blocks = max(1, min(num_docs, 8 * num_threads))
    targets = np.linspace(0, offsets[-1], num_blocks + 1)
    bounds = np.searchsorted(offsets, targets, side="left")
    bounds[0], bounds[-1] = 0, num_docs
    return np.unique(np.clip(bounds, 0, num_docs)).astype(np.int64)


@numba.njit(cache=True, parallel=True, nogil=True)
def nb_shingle_sets(data, offsets, block_bounds, ngram, starts, out, counts):
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


# Serial, element by element: a few ms for 3 M values. A parallel kernel takes
# numba 0.3-0.5 s longer to compile on a cold start, and a serial slice
# assignment 1.5 s longer (its shape-mismatch error message pulls in numba's
# string formatting).
@numba.njit(cache=True, nogil=True)
def _nb_compact(scratch, starts, counts, csr_offsets, out):
    for doc in range(starts.shape[0]):
        target, source = csr_offsets[doc], starts[doc]
        for k in range(counts[doc]):
            out[target + k] = scratch[source + k]


def compact_sets(scratch: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gathers each doc's prefix of its scratch region into the compact CSR layout."""
    csr_offsets = np.zeros(starts.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=csr_offsets[1:])
    values = np.empty(int(csr_offsets[-1]), dtype=np.uint32)
    _nb_compact(scratch, starts, counts, csr_offsets, values)
    return values, csr_offsets


@numba.njit(cache=True, parallel=True, nogil=True)
def nb_signatures_and_sets(data, offsets, block_bounds, ngram, perm_a, perm_b, legacy, starts, sig_out,
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
                # each distinct shingle once gives nb_signatures' row.
                for j in range(num_shingles):
                    hv = ordered[j]
                    if j > 0 and hv == ordered[j - 1]:
                        continue
                    set_out[start + unique] = np.uint32(hv)
                    unique += 1
                    _nb_permute_into(row, hv, perm_a, perm_b, legacy)
            counts[doc] = unique
            sig_out[doc, :] = row
