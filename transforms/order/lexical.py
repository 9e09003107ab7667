"""The lexical embedder: hashed TF-IDF of word unigrams and bigrams, projected (Beam-free).

It needs no model download and gives the same float32 bytes for the same text,
configuration, IDF and projection on every machine, whatever else is in the batch.

How a document becomes a vector:

1. Words: ``re.findall(r"\\w+", text.lower())`` (Python's Unicode ``\\w``:
   letters, digits, marks counted by ``str.isalnum``, and ``_``).
2. Features: each word's xxh64 (``seed``) of its UTF-8 bytes, and each pair of
   consecutive words' xxh64 (``seed + 1``) of the two word hashes as 16
   little-endian bytes; a feature's bucket is the hash's low ``hash_bits`` bits.
3. Weights: ``(1 + log tf) * idf[bucket]`` per distinct bucket (sublinear TF);
   without an ``Idf`` every idf is 1. The IDF gives buckets in fewer than
   ``min_df`` documents weight 0.
4. Sketch: a sparse projection to ``width`` coordinates in ``s =
   nonzeros_per_bucket`` blocks of ``width / s``: for j < s, ``h =
   splitmix64(bucket * s + seed + 2 + j)`` (mod 2**64) and the bucket adds
   ``+weight`` if h's top bit is set, else ``-weight``, to coordinate ``j *
   width / s + h % (width / s)``. A sparse ±1 random projection (Kane and
   Nelson's block sparse Johnson-Lindenstrauss transform) derived from hashes:
   no ``2**hash_bits x width`` matrix exists. Every bucket gets exactly s
   nonzeros rather than Achlioptas/Li's density ``1/sqrt(2**hash_bits)``,
   which at 2**20 buckets and 256 outputs would leave a bucket 0.25 nonzeros
   on average and drop most features. The sketch is L2-normalised (sums in
   float64, the result in float32).
5. Output, two ways:

   * unfitted (no ``Projection``): the sketch with ``width = dim`` is the
     vector. It keeps cosines only to about ``1/sqrt(dim)``: on linux-doc,
     recall@10 against exact TF-IDF kNN is 0.27 at 256 dimensions;
   * fitted (the default path of the order stage): the sketch with ``width =
     sketch_dim`` (4096), centred and projected onto a PCA fitted on the
     sketches of a sample (``Projection``, from ``raw``), summed in float32 in
     sketch-coordinate order, then L2-normalised: recall@10 0.51 at 256
     dimensions with the projection fitted on the other half of the corpus,
     0.58 fitted on all of it (512 dimensions: 0.57 and 0.63;
     ``benchmarks/results/order_bench.md``).

   A document with no weighted feature gets a zero row.

IDF comes from corpus document frequencies, which merge by summation so a
pipeline can count them in parallel: ``document_frequencies`` per batch,
``DocumentFrequencies.merge``, then ``Idf.from_document_frequencies``;
``Idf.fit`` does all three in one process. The projection is fitted once, on
one worker: ``Projection.fit(embedder.raw(sample), dim)``, then shipped to
every worker (``LexicalEmbedder(config, idf, projection)``);
``LexicalEmbedder.fit_projection`` does both in one process.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, NamedTuple, Sequence

import numba
import numpy as np
import xxhash

from corpusmill.transforms.order.projection import Projection

_P1 = np.uint64(0x9E3779B185EBCA87)
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)
_P3 = np.uint64(0x165667B19E3779F9)
_P4 = np.uint64(0x85EBCA77C2B2AE63)
_P5 = np.uint64(0x27D4EB2F165667C5)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_ZERO = np.uint64(0)
_ONE = np.uint64(1)


@dataclass(frozen=True)
class LexicalConfig:
    """Parameters of the lexical embedding; every one changes the vectors.

    Attributes:
        dim: Output dimensions.
        hash_bits: Features hash into ``2**hash_bits`` buckets.
        nonzeros_per_bucket: Coordinates each bucket touches in a sparse
            projection; divides ``dim`` and ``sketch_dim``.
        seed: Seed of the feature hashes and the projection.
        bigrams: Whether pairs of consecutive words are features too.
        sketch_dim: Width of the sketch a fitted ``Projection`` reduces to
            ``dim`` (``LexicalEmbedder.raw`` gives it); unused without one.
        min_df: Buckets in fewer documents weigh 0 (applied when the ``Idf``
            is built from corpus counts): a feature of one document links it
            to no other and only adds noise to the projection.
    """

    dim: int = 256
    hash_bits: int = 20
    nonzeros_per_bucket: int = 4
    seed: int = 0
    bigrams: bool = True
    sketch_dim: int = 4096
    min_df: int = 2

    def __post_init__(self):
        if not 8 <= self.hash_bits <= 31:
            raise ValueError(f"hash_bits must be in [8, 31], got {self.hash_bits}")
        s = self.nonzeros_per_bucket
        if self.dim < 1 or self.sketch_dim < 1 or s < 1 or self.dim % s or self.sketch_dim % s:
            raise ValueError(f"nonzeros_per_bucket ({s}) must be >= 1 and divide dim ({self.dim}) "
                             f"and sketch_dim ({self.sketch_dim})")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be in [0, 2**63), got {self.seed}")
        if self.min_df < 1:
            raise ValueError(f"min_df must be >= 1, got {self.min_df}")

    @property
    def features_key(self) -> str:
        """What decides the buckets: document frequencies and IDF of one key agree."""
        return f"xxh64:bits={self.hash_bits}:seed={self.seed}:bigrams={int(self.bigrams)}"


# --- compiled kernels -------------------------------------------------------------------


@numba.njit(inline="always", cache=True)
def _rotl(x, r):
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


@numba.njit(inline="always", cache=True)
def _read_le(data, p, width):
    v = _ZERO
    for k in range(width):
        v |= np.uint64(data[p + k]) << np.uint64(8 * k)
    return v


@numba.njit(inline="always", cache=True)
def _round(acc, lane):
    return _rotl(acc + lane * _P2, 31) * _P1


@numba.njit(inline="always", cache=True)
def _avalanche(h):
    h = (h ^ (h >> np.uint64(33))) * _P2
    h = (h ^ (h >> np.uint64(29))) * _P3
    return h ^ (h >> np.uint64(32))


@numba.njit(inline="always", cache=True)
def _tail(h, data, p, end):
    """XXH64's finalisation of the bytes data[p:end] (fewer than 32)."""
    while p + 8 <= end:
        h = _rotl(h ^ _round(_ZERO, _read_le(data, p, 8)), 27) * _P1 + _P4
        p += 8
    if p + 4 <= end:
        h = _rotl(h ^ (_read_le(data, p, 4) * _P1), 23) * _P2 + _P3
        p += 4
    while p < end:
        h = _rotl(h ^ (np.uint64(data[p]) * _P5), 11) * _P1
        p += 1
    return _avalanche(h)


@numba.njit(cache=True)
def _xxh64(data, start, end, seed):
    """XXH64 of data[start:end], bit for bit ``xxhash.xxh64_intdigest`` (tested)."""
    p = start
    if end - start >= 32:
        v1, v2, v3, v4 = seed + _P1 + _P2, seed + _P2, seed, seed - _P1
        while p + 32 <= end:
            v1 = _round(v1, _read_le(data, p, 8))
            v2 = _round(v2, _read_le(data, p + 8, 8))
            v3 = _round(v3, _read_le(data, p + 16, 8))
            v4 = _round(v4, _read_le(data, p + 24, 8))
            p += 32
        h = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
        for v in (v1, v2, v3, v4):
            h = (h ^ _round(_ZERO, v)) * _P1 + _P4
    else:
        h = seed + _P5
    return _tail(h + np.uint64(end - start), data, p, end)


@numba.njit(inline="always", cache=True)
def _xxh64_pair(first, second, seed):
    """XXH64 of two uint64 as 16 little-endian bytes (a bigram from its word hashes)."""
    h = seed + _P5 + np.uint64(16)
    h = _rotl(h ^ _round(_ZERO, first), 27) * _P1 + _P4
    h = _rotl(h ^ _round(_ZERO, second), 27) * _P1 + _P4
    return _avalanche(h)


@numba.njit(inline="always", cache=True)
def _splitmix64(x):
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@numba.njit(inline="always", cache=True)
def _char_at(data, i, end, word_table):
    """(is a \\w character, its byte length) of the UTF-8 character at data[i]."""
    c = data[i]
    if c < 0x80:
        return word_table[c], 1
    width = 2 if c < 0xE0 else (3 if c < 0xF0 else 4)
    if i + width > end:
        return np.uint8(0), 1
    code = np.int64(c & (0x7F >> width))
    for k in range(1, width):
        code = (code << 6) | (data[i + k] & 0x3F)
    return word_table[min(code, word_table.shape[0] - 1)], width


@numba.njit(cache=True)
def _features(data, start, end, word_table, seed, mask, bigrams, out):
    """Writes the bucket of every word and bigram of data[start:end] into out; returns the count."""
    count = 0
    previous = _ZERO
    i = start
    while i < end:
        is_word, width = _char_at(data, i, end, word_table)
        if not is_word:
            i += width
            continue
        word_start = i
        while i < end:
            is_word, width = _char_at(data, i, end, word_table)
            if not is_word:
                break
            i += width
        h = _xxh64(data, word_start, i, seed)
        if bigrams and count > 0:
            out[count] = np.int64(_xxh64_pair(previous, h, seed + _ONE) & mask)
            count += 1
        out[count] = np.int64(h & mask)
        count += 1
        previous = h
    return count


@numba.njit(cache=True)
def _distinct(features, count, slots, tallies, order):
    """Counts distinct buckets in an open-addressing table; returns how many, in first-seen order.

    The table is the first power of two >= 2 * count slots of ``slots``, so a
    short document touches a small, cached region; its used slots are left
    for the caller to reset.
    """
    size = 16
    while size < 2 * count:
        size *= 2
    distinct = 0
    for k in range(count):
        bucket = features[k]
        slot = bucket & (size - 1)
        while slots[slot] != -1 and slots[slot] != bucket:
            slot = (slot + 1) & (size - 1)
        if slots[slot] == -1:
            slots[slot] = bucket
            tallies[slot] = 0
            order[distinct] = slot
            distinct += 1
        tallies[slot] += 1
    return distinct


@numba.njit(cache=True)
def _scratch(offsets, bigrams):
    """Buffers for the longest document: a doc of L bytes has at most (L + 1) // 2 words."""
    # Loops, not np.max / np.full / np.zeros: the same buffers, about 0.5 s less to compile.
    longest = 0
    for doc in range(offsets.shape[0] - 1):
        longest = max(longest, offsets[doc + 1] - offsets[doc])
    capacity = ((longest + 1) // 2 + 1) * (2 if bigrams else 1)
    size = 16
    while size < 2 * capacity:
        size *= 2
    slots = np.empty(size, np.int64)
    tallies = np.empty(size, np.int64)
    for slot in range(size):
        slots[slot] = -1
        tallies[slot] = 0
    return np.empty(capacity, np.int64), slots, tallies, np.empty(capacity, np.int64)


# Documents sketched before one pass over the components: each component row is
# read once per group, from L1, instead of once per document from memory.
_GROUP = 8


# Compiled once as a function of its own: inlined, numba typed and lowered it
# at both call sites in _nb_embed (about 0.8 s more on a cold start, and no faster).
@numba.njit(cache=True)
def _sketch(data, start, end, word_table, seed, mask, bigrams, idf, nonzeros, block, projection_seed,
            features, slots, tallies, order, row, out):
    """The unit sketch of one document (float64 sums, float32 result) into ``out``; returns its norm."""
    count = _features(data, start, end, word_table, seed, mask, bigrams, features)
    distinct = _distinct(features, count, slots, tallies, order)
    row[:] = 0.0
    # First-seen order fixes the float summation order from the text alone,
    # so the bytes do not depend on the batch or the table size.
    for u in range(distinct):
        slot = order[u]
        bucket = slots[slot]
        weight = (1.0 + math.log(tallies[slot])) * np.float64(idf[bucket])
        key = np.uint64(bucket) * np.uint64(nonzeros) + projection_seed
        for j in range(nonzeros):
            h = _splitmix64(key + np.uint64(j))
            coordinate = np.uint64(j) * block + h % block
            row[coordinate] += weight if (h >> np.uint64(63)) else -weight
        slots[slot] = -1
    norm = math.sqrt(np.sum(row * row))
    for c in range(row.shape[0]):
        out[c] = np.float32(row[c] / norm) if norm > 0.0 else np.float32(0.0)
    return norm


@numba.njit(cache=True, nogil=True)
def _nb_embed(data, offsets, word_table, seed, mask, bigrams, idf, nonzeros, width, components, offset, out):
    """Sketches each document into ``width`` coordinates, then (with components) projects it.

    Without components (shape (0, 0)) the unit sketch is the output (``width``
    = out's columns); with them, ``out = unit(unit sketch @ components - offset)``.
    """
    block = np.uint64(width // nonzeros)
    projection_seed = seed + np.uint64(2)
    features, slots, tallies, order = _scratch(offsets, bigrams)
    row = np.zeros(width, np.float64)
    documents = offsets.shape[0] - 1
    if components.shape[0] == 0:
        for doc in range(documents):
            _sketch(data, offsets[doc], offsets[doc + 1], word_table, seed, mask, bigrams, idf, nonzeros,
                    block, projection_seed, features, slots, tallies, order, row, out[doc])
        return
    dim = out.shape[1]
    sketches = np.zeros((_GROUP, width), np.float32)
    norms = np.zeros(_GROUP, np.float64)
    sums = np.zeros((_GROUP, dim), np.float32)
    for first in range(0, documents, _GROUP):
        group = min(_GROUP, documents - first)
        for g in range(group):
            doc = first + g
            norms[g] = _sketch(data, offsets[doc], offsets[doc + 1], word_table, seed, mask, bigrams, idf,
                               nonzeros, block, projection_seed, features, slots, tallies, order, row,
                               sketches[g])
        # Each document adds its sketch coordinates' component rows in index
        # order, whatever the group: a fixed summation order, vectorised across
        # outputs (float32: twice the lanes; the error, ~1e-6, is far below
        # the sketch's own).
        sums[:group] = 0.0
        for w in range(width):
            for g in range(group):
                value = sketches[g, w]
                for k in range(dim):
                    sums[g, k] += value * components[w, k]
        for g in range(group):
            doc = first + g
            projected = np.zeros(dim, np.float64)
            for k in range(dim):
                projected[k] = np.float64(sums[g, k]) - offset[k]
            norm = math.sqrt(np.sum(projected * projected))
            for k in range(dim):
                out[doc, k] = np.float32(projected[k] / norm) if norms[g] > 0.0 and norm > 0.0 else 0.0


@numba.njit(cache=True)
def _nb_offset(mean, components):
    """``mean @ components`` in float64, summed in index order (bit-stable)."""
    offset = np.zeros(components.shape[1], np.float64)
    for w in range(components.shape[0]):
        for c in range(components.shape[1]):
            offset[c] += np.float64(mean[w]) * np.float64(components[w, c])
    return offset


@numba.njit(cache=True, nogil=True)
def _nb_document_frequencies(data, offsets, word_table, seed, mask, bigrams, df):
    features, slots, tallies, order = _scratch(offsets, bigrams)
    for doc in range(offsets.shape[0] - 1):
        count = _features(data, offsets[doc], offsets[doc + 1], word_table, seed, mask, bigrams, features)
        distinct = _distinct(features, count, slots, tallies, order)
        for u in range(distinct):
            df[slots[order[u]]] += 1
            slots[order[u]] = -1


@numba.njit(cache=True, nogil=True)
def _nb_tfidf(data, offsets, word_table, seed, mask, bigrams, idf, indptr, buckets, weights):
    """The weighted features (nonzero weights only) of each document, CSR, buckets ascending."""
    features, slots, tallies, order = _scratch(offsets, bigrams)
    filled = 0
    for doc in range(offsets.shape[0] - 1):
        count = _features(data, offsets[doc], offsets[doc + 1], word_table, seed, mask, bigrams, features)
        distinct = _distinct(features, count, slots, tallies, order)
        start = filled
        for u in range(distinct):
            slot = order[u]
            weight = (1.0 + math.log(tallies[slot])) * np.float64(idf[slots[slot]])
            if weight != 0.0:
                buckets[filled] = slots[slot]
                weights[filled] = weight
                filled += 1
            slots[slot] = -1
        by_bucket = np.argsort(buckets[start:filled])
        buckets[start:filled] = buckets[start:filled][by_bucket]
        weights[start:filled] = weights[start:filled][by_bucket]
        indptr[doc + 1] = filled


# --- Python side ------------------------------------------------------------------------


@lru_cache(maxsize=1)
def word_character_table() -> np.ndarray:
    """uint8 per code point: 1 where ``re``'s ``\\w`` matches it (read off ``re`` itself)."""
    everything = "".join(map(chr, range(0x110000)))
    table = np.zeros(0x110000, dtype=np.uint8)
    table[[m.start() for m in re.finditer(r"\w", everything)]] = 1
    return table


def utf8_batch(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Lowercased texts (str, or an Arrow string array) as one UTF-8 buffer and int64 offsets (n + 1)."""
    texts = texts.to_pylist() if hasattr(texts, "to_pylist") else texts
    # surrogatepass: a lone surrogate (possible in str, never a word character)
    # must not fail the batch.
    encoded = [text.lower().encode("utf-8", "surrogatepass") for text in texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8) if offsets[-1] else np.zeros(1, np.uint8)
    return data, offsets


def _kernel_arguments(texts: Sequence[str], config: LexicalConfig) -> tuple:
    data, offsets = utf8_batch(texts)
    mask = np.uint64((1 << config.hash_bits) - 1)
    return data, offsets, word_character_table(), np.uint64(config.seed), mask, config.bigrams


class DocumentFrequencies(NamedTuple):
    """Document counts per feature bucket; parts of a corpus merge by summation.

    Attributes:
        buckets: Sorted distinct bucket ids (int64) with a nonzero count.
        counts: Documents containing each bucket (int64).
        num_documents: Documents counted.
        features_key: ``LexicalConfig.features_key`` of the counting config.
    """

    buckets: np.ndarray
    counts: np.ndarray
    num_documents: int
    features_key: str

    @staticmethod
    def merge(parts: Iterable["DocumentFrequencies"]) -> "DocumentFrequencies":
        """Sums parts (a combiner's merge); the result equals counting their union at once.

        Raises:
            ValueError: If there are no parts, or they were counted with different configs.
        """
        parts = list(parts)
        if not parts or len({p.features_key for p in parts}) != 1:
            raise ValueError("merge needs at least one part, all of one features_key")
        buckets, inverse = np.unique(np.concatenate([p.buckets for p in parts]), return_inverse=True)
        counts = np.zeros(buckets.shape[0], dtype=np.int64)
        np.add.at(counts, inverse, np.concatenate([p.counts for p in parts]))
        return DocumentFrequencies(buckets, counts, sum(p.num_documents for p in parts), parts[0].features_key)


def document_frequencies(texts: Sequence[str], config: LexicalConfig = LexicalConfig()) -> DocumentFrequencies:
    """Counts, per bucket, the texts containing it (the DF of the IDF).

    Args:
        texts: Documents.
        config: The embedding's config (its hashing parameters decide the buckets).

    Returns:
        The sparse counts, mergeable with ``DocumentFrequencies.merge``.
    """
    df = np.zeros(1 << config.hash_bits, dtype=np.int64)
    if len(texts):
        _nb_document_frequencies(*_kernel_arguments(texts, config), df)
    buckets = np.flatnonzero(df)
    return DocumentFrequencies(buckets, df[buckets], len(texts), config.features_key)


@dataclass(frozen=True, eq=False)
class Idf:
    """Smooth inverse document frequency per bucket: ``log((1 + N) / (1 + df)) + 1``, 0 below ``min_df``.

    With ``min_df`` 1, a bucket no counted document has gets the largest
    weight, ``log(1 + N) + 1``; with ``min_df`` m > 1, every bucket in fewer
    than m counted documents (unseen ones too) weighs 0.

    Attributes:
        weights: float32, one per bucket (``2**hash_bits``; 4 MiB at 20 bits).
        num_documents: N.
        features_key: ``LexicalConfig.features_key`` the counts were made with.
        min_df: The ``LexicalConfig.min_df`` the weights were built with.
    """

    weights: np.ndarray
    num_documents: int
    features_key: str
    min_df: int = 1

    @classmethod
    def from_document_frequencies(cls, frequencies: DocumentFrequencies, hash_bits: int,
                                  min_df: int = LexicalConfig.min_df) -> "Idf":
        """Builds the IDF from (merged) counts.

        Args:
            frequencies: Counts over the whole corpus (with ``min_df`` > 1, a
                sample's counts would zero features the corpus shares).
            hash_bits: The config's ``hash_bits``.
            min_df: The config's ``min_df``.
        """
        if f"bits={hash_bits}:" not in frequencies.features_key:
            raise ValueError(f"counts were made with {frequencies.features_key}, not hash_bits={hash_bits}")
        if min_df < 1:
            raise ValueError(f"min_df must be >= 1, got {min_df}")
        df = np.zeros(1 << hash_bits, dtype=np.float64)
        df[frequencies.buckets] = frequencies.counts
        n = frequencies.num_documents
        weights = (np.log((1.0 + n) / (1.0 + df)) + 1.0).astype(np.float32)
        if min_df > 1:
            weights[df < min_df] = 0.0
        return cls(weights, n, frequencies.features_key, min_df)

    @classmethod
    def fit(cls, texts: Sequence[str], config: LexicalConfig = LexicalConfig()) -> "Idf":
        """The IDF of ``texts`` (the whole corpus) in one process."""
        return cls.from_document_frequencies(document_frequencies(texts, config), config.hash_bits,
                                             config.min_df)

    @property
    def fingerprint(self) -> str:
        """xxh3-64 of the weights: names this IDF in a manifest."""
        return f"{xxhash.xxh3_64_hexdigest(np.ascontiguousarray(self.weights).tobytes())}:n={self.num_documents}"


_NO_COMPONENTS = np.zeros((0, 0), dtype=np.float32)
_NO_OFFSET = np.zeros(0, dtype=np.float64)


class LexicalEmbedder:
    """Hashed sublinear TF-IDF of word unigrams and bigrams, projected, L2-normalised.

    Implements ``corpusmill.transforms.order.embedders.Embedder``. Holds the
    config, the IDF weights and the optional fitted projection; thread-safe,
    picklable, fast to build.
    """

    name = "lexical"

    def __init__(self, config: LexicalConfig = LexicalConfig(), idf: Idf | None = None,
                 projection: Projection | None = None):
        """Builds the embedder (cheap: no model, no compilation until the first ``embed``).

        Args:
            config: Hashing and projection parameters.
            idf: IDF from the same ``features_key`` and ``min_df``; None weighs every bucket 1.
            projection: PCA of ``raw`` sketches (``Projection.fit``), from
                ``sketch_dim`` to ``dim``; None projects sparsely to ``dim``
                directly (the unfitted path: no sample needed, coarser).

        Raises:
            ValueError: If the IDF was counted with other hashing parameters or
                another ``min_df``, or the projection has other dimensions.
        """
        if idf is not None and idf.features_key != config.features_key:
            raise ValueError(f"idf was counted with {idf.features_key}, the config hashes with {config.features_key}")
        if idf is not None and idf.min_df != config.min_df:
            raise ValueError(f"idf was built with min_df={idf.min_df}, the config says {config.min_df}")
        if projection is not None and (projection.sketch_dim, projection.dim) != (config.sketch_dim, config.dim):
            raise ValueError(f"projection maps {projection.sketch_dim} -> {projection.dim}, the config "
                             f"{config.sketch_dim} -> {config.dim}")
        self.config = config
        self.idf = idf
        self.projection = projection
        self._weights = idf.weights if idf is not None else np.ones(1 << config.hash_bits, dtype=np.float32)
        if projection is not None:
            self._components = projection.components
            self._offset = _nb_offset(projection.mean, projection.components)
        else:
            self._components, self._offset = _NO_COMPONENTS, _NO_OFFSET

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def spec(self) -> str:
        return "lexical"

    @property
    def fingerprint(self) -> str:
        c = self.config
        idf = self.idf.fingerprint if self.idf is not None else "none"
        if self.projection is not None:
            projection = f"sketch={c.sketch_dim}:projection={self.projection.fingerprint}"
        else:
            projection = "projection=sparse"
        return (f"lexical:v2:dim={c.dim}:{c.features_key}:nonzeros={c.nonzeros_per_bucket}"
                f":tf=1+log:min_df={c.min_df}:idf={idf}:{projection}")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeds texts.

        Args:
            texts: Documents (str).

        Returns:
            float32 ``(len(texts), dim)``, rows of unit L2 norm; a text with no
            weighted feature gets a zero row. Each row depends only on its text.
        """
        out = np.zeros((len(texts), self.config.dim), dtype=np.float32)
        width = self.config.sketch_dim if self.projection is not None else self.config.dim
        if len(texts):
            _nb_embed(*_kernel_arguments(texts, self.config), self._weights, self.config.nonzeros_per_bucket,
                      width, self._components, self._offset, out)
        return out

    def raw(self, texts: Sequence[str]) -> np.ndarray:
        """The sketches a ``Projection`` is fitted on: float32 ``(len(texts), sketch_dim)``, unit rows.

        The sparse projection of the weighted features to ``sketch_dim``, as
        ``embed`` computes it before the fitted projection (zero rows for texts
        without weighted features).
        """
        out = np.zeros((len(texts), self.config.sketch_dim), dtype=np.float32)
        if len(texts):
            _nb_embed(*_kernel_arguments(texts, self.config), self._weights, self.config.nonzeros_per_bucket,
                      self.config.sketch_dim, _NO_COMPONENTS, _NO_OFFSET, out)
        return out

    def tfidf(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The exact weighted features every projection approximates: the oracle for recall.

        Returns:
            CSR arrays ``(indptr, buckets, weights)``: int64 (n + 1,), int64
            bucket ids ascending within each row, float64 ``(1 + log tf) *
            idf`` (zero weights left out), rows not normalised. Their cosines
            are what ``embed``'s inner products estimate.
        """
        data, offsets, *rest = _kernel_arguments(texts, self.config)
        indptr = np.zeros(len(texts) + 1, dtype=np.int64)
        # A document of L bytes has at most (L + 1) // 2 words and as many bigrams.
        capacity = int(offsets[-1]) + 2 * len(texts)
        buckets, weights = np.empty(capacity, np.int64), np.empty(capacity, np.float64)
        if len(texts):
            _nb_tfidf(data, offsets, *rest, self._weights, indptr, buckets, weights)
        return indptr, buckets[:indptr[-1]].copy(), weights[:indptr[-1]].copy()

    def fit_projection(self, sample_texts: Sequence[str], seed: int = 0) -> "LexicalEmbedder":
        """This embedder with a projection fitted on the sketches of ``sample_texts`` (one process)."""
        return LexicalEmbedder(self.config, self.idf,
                               Projection.fit(self.raw(sample_texts), self.config.dim, seed))
