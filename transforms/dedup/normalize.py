"""Text normalisation and the 128-bit exact-duplicate hash (Beam-free kernel).

Normalisation is applied to the copy of a text that is hashed and shingled,
never to the stored document. Steps run in this order, each switchable in
``NormalizeConfig``:

1. NFKC (compatibility composition): full-width letters, ligatures and
   non-breaking spaces become their plain forms;
2. lowercase (``str.lower``);
3. punctuation strip: every character of a Unicode ``P*`` category becomes a
   space, so ``a,b`` splits into two words instead of gluing into ``ab``;
4. whitespace collapse: runs of ``str.split()`` whitespace become one space
   and the ends are trimmed.

Two implementations, equal on every text
    ``normalize_text`` / ``normalize_texts`` are the Python reference.
    ``normalize_array`` is the batch path the dedup stage runs on Arrow string
    arrays and gives the same strings: documents that are pure ASCII (most of a
    technical corpus) never become Python objects; one compiled pass over the
    Arrow buffer lowercases ASCII letters, blanks ASCII punctuation and
    collapses whitespace. NFKC, ``str.lower`` and punctuation of the lines
    that are not pure ASCII go through the reference functions, because
    neither Arrow kernel agrees with them: ``pyarrow.compute.utf8_normalize``
    (pyarrow 25) returns decomposed text for NFKC (apache/arrow#51225), and
    ``utf8_lower`` applies simple case mappings only (U+0130 and a final
    capital sigma lower differently from ``str.lower``). The whitespace class
    is the shingle tokenizer's (``minhash``), i.e. exactly ``str.split()``'s;
    a compiled pass rather than ``replace_substring_regex``, which took 1.3 s
    on the 60 MB benchmark corpus against 0.2 s.

Exact hash
    ``exact_hashes`` returns xxh3-128 of the normalised text's UTF-8 bytes as a
    ``(n, 2)`` uint64 array, columns (high 64 bits, low 64 bits). Two uint64
    columns (rather than 16-byte binary) keep the hash in numpy, where
    ``np.lexsort`` groups equal hashes without a Python object per document,
    and they pickle as one contiguous buffer when Beam ships them.
"""

from __future__ import annotations

import functools
import sys
import unicodedata
from collections.abc import Iterable
from typing import Union

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from corpusmill.schemas.config import NormalizeConfig

# One whitespace definition for normalisation and shingling: a word boundary
# the collapse keeps is a word boundary the tokenizer sees.
from corpusmill.transforms.dedup.minhash_kernels import nb_whitespace_length, utf8_buffers

__all__ = ["exact_hashes", "normalize_array", "normalize_text", "normalize_texts"]

ArrowTexts = Union[pa.Array, pa.ChunkedArray]

_MASK64 = (1 << 64) - 1


@functools.lru_cache(maxsize=1)
def _punctuation_to_space() -> dict[int, int]:
    """A str.translate table mapping every Unicode punctuation code point to a space."""
    space = ord(" ")
    return {
        code: space
        for code in range(sys.maxunicode + 1)
        if unicodedata.category(chr(code)).startswith("P")
    }


def normalize_text(text: str, config: NormalizeConfig = NormalizeConfig()) -> str:
    """Normalises one text for hashing and shingling.

    Args:
        text: The document text.
        config: Which steps run.

    Returns:
        The normalised text.
    """
    text = _python_steps(text, config)
    if config.collapse_whitespace:
        text = " ".join(text.split())
    return text


def normalize_texts(texts: Iterable[str], config: NormalizeConfig = NormalizeConfig()) -> list[str]:
    """Normalises a batch of texts (see the module docstring for the steps).

    Args:
        texts: Document texts (a list, or anything iterable such as an Arrow
            string array's ``to_pylist()``).
        config: Which steps run.

    Returns:
        One normalised string per input text, in order.
    """
    if not (config.nfkc or config.lowercase or config.strip_punctuation or config.collapse_whitespace):
        return list(texts)
    return [normalize_text(text, config) for text in texts]


def _needs_python_pass(config: NormalizeConfig) -> bool:
    return config.nfkc or config.lowercase or config.strip_punctuation


def _python_steps(text: str, config: NormalizeConfig) -> str:
    """The reference's steps before the whitespace collapse."""
    if config.nfkc and not unicodedata.is_normalized("NFKC", text):
        text = unicodedata.normalize("NFKC", text)
    if config.lowercase:
        text = text.lower()
    if config.strip_punctuation:
        text = text.translate(_punctuation_to_space())
    return text


def _ascii_byte_map(config: NormalizeConfig) -> np.ndarray:
    """Byte -> byte for ASCII: lowercase letters, punctuation to space; bytes >= 0x80 unchanged."""
    table = np.arange(256, dtype=np.uint8)
    if config.lowercase:
        table[ord("A") : ord("Z") + 1] += 32
    if config.strip_punctuation:
        # The ASCII members of the Unicode P* categories (not $ + < = > ^ ` | ~, which are symbols).
        punctuation = [c for c in range(128) if unicodedata.category(chr(c)).startswith("P")]
        table[punctuation] = ord(" ")
    return table


def _python_steps_by_line(text: str, config: NormalizeConfig) -> str:
    """``_python_steps`` on the lines that are not pure ASCII; ASCII lines are left to the byte map.

    Exact because a newline ends every context these steps look at: it is a
    starter that composes with nothing (NFKC), and it is neither cased nor
    case-ignorable (the final-sigma rule of ``str.lower``).
    """
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line.isascii():
            lines[i] = _python_steps(line, config)
    return "\n".join(lines)


@numba.njit(cache=True, nogil=True)
def _nb_map_and_collapse(data, offsets, alt_data, alt_offsets, alt_of_doc, byte_map, collapse, out, out_offsets):
    position = 0
    for doc in range(offsets.shape[0] - 1):
        out_offsets[doc] = position
        start = position
        pending_space = False
        # A document the Python pass rewrote is read from the alternative buffer.
        source = data
        i = offsets[doc]
        end = offsets[doc + 1]
        if alt_of_doc[doc] >= 0:
            source = alt_data
            i = alt_offsets[alt_of_doc[doc]]
            end = alt_offsets[alt_of_doc[doc] + 1]
        while i < end:
            c = byte_map[source[i]]
            if collapse:
                # ASCII bytes are classified after mapping (punctuation became
                # a space); multi-byte whitespace is never mapped.
                if c < 128:
                    space = 1 if (c == 32 or 9 <= c <= 13 or 28 <= c <= 31) else 0
                else:
                    space = nb_whitespace_length(source, i, end)
                if space:
                    pending_space = position > start
                    i += space
                    continue
                if pending_space:
                    out[position] = 32
                    position += 1
                    pending_space = False
            out[position] = c
            position += 1
            i += 1
    out_offsets[offsets.shape[0] - 1] = position


def normalize_array(texts: ArrowTexts, config: NormalizeConfig = NormalizeConfig()) -> pa.LargeStringArray:
    """Normalises an Arrow string array; element ``i`` equals ``normalize_text(texts[i], config)``.

    Args:
        texts: string or large_string array (or chunked array) without nulls.
        config: Which steps run.

    Returns:
        A ``large_string`` array of the normalised texts, in order.
    """
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.cast(pa.large_string()).combine_chunks() if texts.num_chunks != 1 else texts.chunk(0)
    texts = texts.cast(pa.large_string())
    if texts.null_count:
        raise ValueError(f"texts contains {texts.null_count} null value(s)")
    byte_map = _ascii_byte_map(config)
    alt_of_doc = np.full(len(texts), -1, dtype=np.int64)
    alt_texts = pa.array([], type=pa.large_string())
    if _needs_python_pass(config):
        # NFKC of ASCII is the identity and its lowercase is the byte map's.
        non_ascii = np.flatnonzero(~pc.string_is_ascii(texts).to_numpy(zero_copy_only=False))
        if non_ascii.size:
            rewritten = [_python_steps_by_line(text, config)
                         for text in texts.take(pa.array(non_ascii, type=pa.int64())).to_pylist()]
            alt_texts = pa.array(rewritten, type=pa.large_string())
            alt_of_doc[non_ascii] = np.arange(non_ascii.size, dtype=np.int64)
    if not config.collapse_whitespace and np.array_equal(byte_map, np.arange(256)) and not len(alt_texts):
        return texts
    data, offsets = utf8_buffers(texts)
    alt_data, alt_offsets = utf8_buffers(alt_texts)
    lengths = np.diff(offsets)
    capacity = int(lengths[alt_of_doc < 0].sum() + alt_offsets[-1])
    out = np.empty(max(1, capacity), dtype=np.uint8)
    out_offsets = np.empty(offsets.shape[0], dtype=np.int64)
    _nb_map_and_collapse(data, offsets, alt_data, alt_offsets, alt_of_doc, byte_map,
                         bool(config.collapse_whitespace), out, out_offsets)
    return pa.LargeStringArray.from_buffers(len(texts), pa.py_buffer(out_offsets),
                                            pa.py_buffer(out[: max(1, int(out_offsets[-1]))]))


def exact_hashes(texts: Iterable[str] | ArrowTexts) -> np.ndarray:
    """128-bit xxh3 hashes of (already normalised) texts.

    Args:
        texts: Normalised texts: str, or an Arrow string array (hashed from
            its buffer, no Python string per text).

    Returns:
        uint64 array of shape ``(n, 2)``: column 0 the high and column 1 the low
        64 bits of ``xxh3_128`` of each text's UTF-8 bytes.
    """
    digest = xxhash.xxh3_128_intdigest
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.cast(pa.large_string()).combine_chunks()
    if isinstance(texts, pa.Array):
        data, offsets = utf8_buffers(texts)
        view = memoryview(data)
        bounds = offsets.tolist()
        values = [digest(view[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    else:
        values = [digest(text.encode("utf-8")) for text in texts]
    out = np.empty((len(values), 2), dtype=np.uint64)
    if values:
        out[:, 0] = np.fromiter((v >> 64 for v in values), dtype=np.uint64, count=len(values))
        out[:, 1] = np.fromiter((v & _MASK64 for v in values), dtype=np.uint64, count=len(values))
    return out
