"""Dataset Decomposition (Pouransari et al., 2024), with no Beam dependency.

Each tokenized document (end-of-text id included) is cut, front to back, into
pieces whose lengths are powers of two, and each piece goes to the bucket of
its length. With ``n`` tokens left (``n`` starts at the document length)::

    while n > extra:
        k = floor(log2(n - extra))
        if k < min_exp: stop              # the remaining n tokens are dropped
        if k > max_exp: k = max_exp       # mode "cap"
                    or  k ~ p(k) ∝ 2^(max_exp - k), k in [min_exp, max_exp]
                                          # mode "random"
        emit the next 2^k + extra tokens to bucket k; n -= 2^k + extra

``extra`` is 1 when ``plus_one`` is set (the default, as in Apple's reference
``make_dd_buckets.py``): a bucket-k piece then holds ``2^k + 1`` tokens, so a
trainer that shifts inputs and targets by one gets exactly ``2^k`` positions.
Consecutive pieces do not share a token: the next piece starts right after the
last token of the previous one, so every kept token is the target of exactly
one position except each piece's first token, which is only an input.
With ``plus_one=False`` pieces hold ``2^k`` tokens and consume ``2^k``.

In mode "random", long documents (``k > max_exp``) are cut into pieces of random
length with ``p(k) ∝ 2^(max_exp - k)``: every bucket then receives the same
expected number of tokens from them, whereas capping sends them all to the
longest bucket. The reference draws from numpy's global generator; here each
draw is a hash of ``(seed, doc_id, draw index)`` so reruns, worker placement and
numpy upgrades never change the output. Mode "cap" needs no randomness.

Documents are processed as a ragged batch: the piece plan is computed per
document in Python (a handful of integer steps each; tokenizing costs far more)
and the tokens of all pieces of a bucket are gathered with one numpy fancy
index over a sliding-window view into a ``(pieces, 2^k + extra)`` array.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
import pyarrow as pa
import xxhash

from corpusmill.schemas.config import DecomposeConfig


def decomposition_params(config: DecomposeConfig) -> dict:
    """The parameters that shape the pieces, as recorded in stats and the manifest."""
    return {"min_exp": config.min_exp, "max_exp": config.max_exp, "mode": config.mode, "seed": config.seed,
            "plus_one": config.plus_one}


def random_exponent_probabilities(config: DecomposeConfig) -> np.ndarray:
    """``p(k) ∝ 2^(max_exp - k)`` for k = min_exp..max_exp (mode "random")."""
    weights = np.exp2(config.max_exp - np.arange(config.min_exp, config.max_exp + 1))
    return weights / weights.sum()


def bucket_dirname(exponent: int) -> str:
    """Folder name of a bucket in a snapshot, e.g. ``len-00256`` for exponent 8."""
    return f"len-{1 << exponent:05d}"


@dataclasses.dataclass
class BucketPieces:
    """The pieces of one bucket.

    Attributes:
        exponent: k; pieces hold ``2^k`` (+1 with ``plus_one``) tokens.
        tokens: int32 array of shape ``(pieces, piece_length)``.
        doc_ids: Id of the source document of each piece.
        offsets: int64 position of each piece's first token in its document's
            token sequence.
    """

    exponent: int
    tokens: np.ndarray
    doc_ids: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets)

    def to_record_batch(self) -> pa.RecordBatch:
        """Rows ``tokens list<int32>, doc_id string, offset int64`` for the bucket shards."""
        flat = pa.array(self.tokens.reshape(-1), type=pa.int32())
        width = self.tokens.shape[1]
        list_offsets = pa.array(np.arange(len(self) + 1, dtype=np.int32) * width, type=pa.int32())
        return pa.RecordBatch.from_arrays(
            [
                pa.ListArray.from_arrays(list_offsets, flat),
                pa.array([str(doc_id) for doc_id in self.doc_ids], type=pa.string()),
                pa.array(self.offsets, type=pa.int64()),
            ],
            names=["tokens", "doc_id", "offset"],
        )


@dataclasses.dataclass
class Decomposition:
    """Result of decomposing a batch of documents.

    Attributes:
        config: The configuration used.
        buckets: Exponent to pieces, for every exponent of the config (possibly
            empty).
        document_lengths: int64 token count of each input document.
        dropped_tokens: int64 tokens of each document that went to no bucket.
    """

    config: DecomposeConfig
    buckets: dict[int, BucketPieces]
    document_lengths: np.ndarray
    dropped_tokens: np.ndarray

    @property
    def total_tokens(self) -> int:
        """Tokens in the input documents."""
        return int(self.document_lengths.sum())

    @property
    def kept_tokens(self) -> int:
        """Tokens stored in some bucket."""
        return self.total_tokens - int(self.dropped_tokens.sum())

    def sequence_lengths(self) -> np.ndarray:
        """Training sequence length (``2^k``) of every piece, bucket by bucket."""
        return np.concatenate(
            [np.full(len(pieces), 1 << k, dtype=np.int64) for k, pieces in self.buckets.items()]
        )


def _document_key(seed: int, doc_id: object) -> bytes:
    return f"{seed}\x1f{doc_id}".encode("utf-8")


def _uniform(document_key: bytes, draw_index: int) -> float:
    """A uniform float in [0, 1) that depends only on its arguments."""
    # 53 bits: the mantissa of a double, so every value is exact.
    bits = xxhash.xxh3_64_intdigest(document_key + draw_index.to_bytes(8, "little")) >> 11
    return bits / float(1 << 53)


def plan_document(
    length: int, config: DecomposeConfig, doc_id: object = None
) -> tuple[list[tuple[int, int]], int]:
    """Plans the pieces of one document from its token count.

    Args:
        length: Tokens in the document (end-of-text id included).
        config: Decomposition parameters.
        doc_id: Document id; seeds the draws of mode "random".

    Returns:
        ``(pieces, dropped)``: ``(offset, exponent)`` of each piece in document
        order, and the number of trailing tokens that went to no bucket.
    """
    extra = config.extra
    max_length_piece = (1 << config.max_exp) + extra
    pieces: list[tuple[int, int]] = []
    cumulative = None
    document_key = b""
    draws = 0
    position = 0
    remaining = length
    while remaining > extra:
        exponent = (remaining - extra).bit_length() - 1  # exact floor(log2)
        if exponent < config.min_exp:
            break
        if exponent > config.max_exp:
            if config.mode == "cap":
                # All pieces until the remainder drops below 2^(max_exp+1) are
                # max-length pieces: count them instead of looping.
                count = (remaining - extra - (2 << config.max_exp)) // max_length_piece + 1
                pieces.extend(
                    (position + i * max_length_piece, config.max_exp) for i in range(count)
                )
                position += count * max_length_piece
                remaining -= count * max_length_piece
                continue
            if cumulative is None:
                # Largest exponent first, as the reference orders its choices.
                cumulative = np.cumsum(random_exponent_probabilities(config)[::-1])
                document_key = _document_key(config.seed, doc_id)
            choice = int(np.searchsorted(cumulative, _uniform(document_key, draws), side="right"))
            exponent = config.max_exp - min(choice, len(cumulative) - 1)
            draws += 1
        pieces.append((position, exponent))
        size = (1 << exponent) + extra
        position += size
        remaining -= size
    return pieces, remaining


def decompose_ragged(
    values: np.ndarray,
    row_splits: np.ndarray,
    doc_ids: Sequence[object] | np.ndarray,
    config: DecomposeConfig = DecomposeConfig(),
    *,
    seed_ids: Sequence[object] | np.ndarray | None = None,
) -> Decomposition:
    """Decomposes a batch of documents stored as one flat token array.

    This is the layout of an Arrow ``list<int32>`` column (``values`` and
    ``offsets``), so an Arrow batch is decomposed without copying it first.

    Args:
        values: All documents' tokens, concatenated.
        row_splits: int array of length ``documents + 1``; document i is
            ``values[row_splits[i]:row_splits[i + 1]]``.
        doc_ids: One id per document.
        config: Decomposition parameters.
        seed_ids: One id per document that seeds its draws in mode "random";
            ``doc_ids`` when None. Lets a caller name pieces by something else
            (``decompose_chains`` names them by chain index).

    Returns:
        The pieces of every bucket and the per-document dropped-token counts.

    Raises:
        ValueError: If the arguments disagree in length.
    """
    values = np.asarray(values)
    row_splits = np.asarray(row_splits, dtype=np.int64)
    doc_ids = np.asarray(doc_ids, dtype=object)
    if row_splits.ndim != 1 or len(row_splits) != len(doc_ids) + 1:
        raise ValueError(
            f"row_splits has {len(row_splits)} entries for {len(doc_ids)} documents; "
            "expected documents + 1"
        )
    seed_ids = doc_ids if seed_ids is None else np.asarray(seed_ids, dtype=object)
    if len(seed_ids) != len(doc_ids):
        raise ValueError(f"{len(seed_ids)} seed_ids for {len(doc_ids)} documents")
    lengths = np.diff(row_splits)
    dropped = np.zeros(len(lengths), dtype=np.int64)
    starts: dict[int, list[int]] = {k: [] for k in config.exponents}
    owners: dict[int, list[int]] = {k: [] for k in config.exponents}
    offsets: dict[int, list[int]] = {k: [] for k in config.exponents}
    for index, (length, seed_id) in enumerate(zip(lengths.tolist(), seed_ids)):
        pieces, dropped[index] = plan_document(length, config, seed_id)
        base = int(row_splits[index])
        for offset, exponent in pieces:
            starts[exponent].append(base + offset)
            owners[exponent].append(index)
            offsets[exponent].append(offset)
    buckets = {}
    for exponent in config.exponents:
        start = np.asarray(starts[exponent], dtype=np.int64)
        width = config.piece_length(exponent)
        if len(start):
            # Row i of the window view is values[i : i + width] (no copy), so
            # one fancy index copies exactly the pieces' tokens and needs no
            # (pieces × width) index matrix.
            windows = np.lib.stride_tricks.sliding_window_view(values, width)
            tokens = windows[start].astype(np.int32, copy=False)
        else:
            tokens = np.zeros((0, width), dtype=np.int32)
        buckets[exponent] = BucketPieces(
            exponent=exponent,
            tokens=tokens,
            doc_ids=doc_ids[np.asarray(owners[exponent], dtype=np.int64)],
            offsets=np.asarray(offsets[exponent], dtype=np.int64),
        )
    return Decomposition(
        config=config, buckets=buckets, document_lengths=lengths, dropped_tokens=dropped
    )


def decompose_documents(
    documents: Sequence[np.ndarray],
    doc_ids: Sequence[object] | np.ndarray,
    config: DecomposeConfig = DecomposeConfig(),
) -> Decomposition:
    """Decomposes a batch of tokenized documents.

    Args:
        documents: One token array per document (end-of-text id included, see
            :func:`corpusmill.transforms.decompose.tokenizer.encode_documents`).
        doc_ids: One id per document.
        config: Decomposition parameters.

    Returns:
        The pieces of every bucket and the per-document dropped-token counts.
    """
    lengths = np.fromiter(
        (len(document) for document in documents), dtype=np.int64, count=len(documents)
    )
    row_splits = np.concatenate([[0], np.cumsum(lengths)])
    values = np.concatenate(documents) if len(documents) else np.zeros(0, dtype=np.int32)
    return decompose_ragged(values, row_splits, doc_ids, config)


# ---------------------------------------------------------------------------
# Metrics. Sequence lengths below are training lengths: the positions a model
# processes (2^k for a bucket-k piece), not the stored 2^k + 1 tokens.
# ---------------------------------------------------------------------------


def token_retention(decomposition: Decomposition) -> float:
    """Fraction of input tokens kept in some bucket (1.0 for an empty input)."""
    total = decomposition.total_tokens
    return decomposition.kept_tokens / total if total else 1.0


def bucket_token_histogram(decomposition: Decomposition) -> dict[int, int]:
    """Stored tokens per bucket exponent (``pieces × (2^k + extra)``)."""
    return {k: int(pieces.tokens.size) for k, pieces in decomposition.buckets.items()}


def document_length_histogram(lengths: np.ndarray) -> dict[int, int]:
    """Number of documents per power-of-two length class.

    Args:
        lengths: Token count of each document.

    Returns:
        ``{k: count}`` for documents with ``2^k <= length < 2^(k+1)``; empty
        documents count under ``-1``. Only non-empty classes appear.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    empty = int((lengths == 0).sum())
    nonzero = lengths[lengths > 0]
    # floor(log2) of integers without float rounding near powers of two.
    exponents = np.frexp(nonzero.astype(np.float64))[1] - 1
    classes, counts = np.unique(exponents, return_counts=True)
    histogram = {int(k): int(c) for k, c in zip(classes, counts)}
    if empty:
        histogram = {-1: empty, **histogram}
    return histogram


def average_context_length(sequence_lengths: np.ndarray) -> float:
    """Mean number of earlier tokens a token attends to within its sequence.

    A token at position i (from 0) of a causal sequence sees i earlier tokens,
    so a sequence of length l contributes ``l(l-1)/2`` over ``l`` tokens and the
    mean is ``Σ l(l-1)/2 ÷ Σ l``.

    Args:
        sequence_lengths: Lengths of the training sequences.

    Returns:
        The mean context length (0.0 for no tokens).
    """
    lengths = np.asarray(sequence_lengths, dtype=np.float64)
    total = lengths.sum()
    return float((lengths * (lengths - 1) / 2).sum() / total) if total else 0.0


def attention_cost(sequence_lengths: np.ndarray) -> float:
    """Σ l², a proxy for the quadratic cost of self-attention over the sequences."""
    lengths = np.asarray(sequence_lengths, dtype=np.float64)
    return float((lengths * lengths).sum())


def concat_chunk_lengths(total_tokens: int, sequence_length: int) -> np.ndarray:
    """Sequence lengths of concat-and-chunk: full chunks, then the partial rest."""
    full, rest = divmod(int(total_tokens), sequence_length)
    lengths = np.full(full, sequence_length, dtype=np.int64)
    return np.append(lengths, rest) if rest else lengths


def attention_pairs(document_lengths: np.ndarray, sequence_length: int) -> tuple[int, int]:
    """Causal attention pairs of concat-and-chunk, all and within one document.

    The baseline concatenates the documents in the given order (each already
    ending in its end-of-text id) and cuts the stream into chunks of
    ``sequence_length`` tokens (the last one may be shorter). Within a chunk
    each token attends to every earlier token of the chunk: a chunk of length
    c has ``c(c-1)/2`` (query, earlier key) pairs; a segment (a maximal run of
    one document's tokens inside one chunk) of length s has ``s(s-1)/2`` pairs
    within one document. Counts (rather than their ratio) add up across
    shards, so a run's fraction is ``1 - Σ same ÷ Σ all`` over its shards.

    Args:
        document_lengths: Token count of each document, in concatenation order.
        sequence_length: Chunk length.

    Returns:
        ``(all_pairs, same_document_pairs)``.
    """
    lengths = np.asarray(document_lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return 0, 0
    document_ends = np.cumsum(lengths)
    chunk_ends = np.arange(sequence_length, total, sequence_length, dtype=np.int64)
    boundaries = np.union1d(np.concatenate([document_ends, chunk_ends]), [0, total])
    segments = np.diff(boundaries)
    chunks = concat_chunk_lengths(total, sequence_length)
    # int64 is exact here: a chunk contributes under 2^61 pairs for any chunk below 2^31.
    return int((chunks * (chunks - 1) // 2).sum()), int((segments * (segments - 1) // 2).sum())


def cross_document_fraction(all_pairs: int, same_document_pairs: int) -> float:
    """Share of attention pairs that cross documents (0.0 when there is no pair at all)."""
    return 1.0 - same_document_pairs / all_pairs if all_pairs else 0.0


def cross_document_attention_fraction(document_lengths: np.ndarray, sequence_length: int) -> float:
    """Share of causal attention pairs that cross documents under concat-and-chunk (``attention_pairs``).

    Decomposed sequences, cut inside single documents, have fraction 0.
    """
    return cross_document_fraction(*attention_pairs(document_lengths, sequence_length))


def decomposition_summary(
    decomposition: Decomposition, baseline_sequence_length: int | None = None
) -> dict:
    """The numbers of one decomposition, JSON-ready, for the manifest and report.

    The concat-and-chunk baseline is measured on the same number of training
    tokens (Σ 2^k over the pieces) cut into ``baseline_sequence_length`` chunks,
    by default ``2^max_exp``.

    Args:
        decomposition: Output of :func:`decompose_documents` or
            :func:`decompose_ragged`.
        baseline_sequence_length: Chunk length of the baseline.

    Returns:
        A dict of plain ints, floats and dicts.
    """
    config = decomposition.config
    chunk = baseline_sequence_length or (1 << config.max_exp)
    lengths = decomposition.sequence_lengths()
    baseline = concat_chunk_lengths(int(lengths.sum()), chunk)
    dd_cost = attention_cost(lengths)
    baseline_cost = attention_cost(baseline)
    return {
        "documents": int(len(decomposition.document_lengths)),
        "input_tokens": decomposition.total_tokens,
        "kept_tokens": decomposition.kept_tokens,
        "dropped_tokens": int(decomposition.dropped_tokens.sum()),
        "token_retention": token_retention(decomposition),
        "pieces_per_bucket": {str(k): len(p) for k, p in decomposition.buckets.items()},
        "tokens_per_bucket": {str(k): v for k, v in bucket_token_histogram(decomposition).items()},
        "document_length_histogram": {
            str(k): v for k, v in document_length_histogram(decomposition.document_lengths).items()
        },
        "average_context_length": average_context_length(lengths),
        "baseline_sequence_length": chunk,
        "baseline_average_context_length": average_context_length(baseline),
        "attention_cost": dd_cost,
        "baseline_attention_cost": baseline_cost,
        "attention_cost_ratio": dd_cost / baseline_cost if baseline_cost else math.nan,
        "baseline_cross_document_attention_fraction": cross_document_attention_fraction(
            decomposition.document_lengths, chunk
        ),
    }
