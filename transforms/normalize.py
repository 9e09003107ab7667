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

import numpy as np
import xxhash

from corpusmill.schemas.config import NormalizeConfig

__all__ = ["exact_hashes", "normalize_text", "normalize_texts"]

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
    if config.nfkc and not unicodedata.is_normalized("NFKC", text):
        text = unicodedata.normalize("NFKC", text)
    if config.lowercase:
        text = text.lower()
    if config.strip_punctuation:
        text = text.translate(_punctuation_to_space())
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


def exact_hashes(texts: Iterable[str]) -> np.ndarray:
    """128-bit xxh3 hashes of (already normalised) texts.

    Args:
        texts: Normalised texts.

    Returns:
        uint64 array of shape ``(n, 2)``: column 0 the high and column 1 the low
        64 bits of ``xxh3_128`` of each text's UTF-8 bytes.
    """
    digest = xxhash.xxh3_128_intdigest
    values = [digest(text.encode("utf-8")) for text in texts]
    out = np.empty((len(values), 2), dtype=np.uint64)
    if values:
        out[:, 0] = np.fromiter((v >> 64 for v in values), dtype=np.uint64, count=len(values))
        out[:, 1] = np.fromiter((v & _MASK64 for v in values), dtype=np.uint64, count=len(values))
    return out
