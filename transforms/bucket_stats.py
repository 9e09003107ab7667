"""Mergeable numbers of a Dataset Decomposition run, with no Beam dependency.

Each worker decomposes one shard and reports a :class:`ShardDecomposeStats`
made only of counts and exact sums (JSON-ready, string keys); the driver
combines them with :func:`merge_decompose_stats`. Every derived number (token
retention, average context length, attention costs, the cross-document
fraction) is computed from the merged sums, never as a mean of per-shard
ratios, so a run split into any number of shards reports the same numbers as
:func:`corpusmill.transforms.decompose.decomposition_summary` on the same
documents (the cross-document fraction exactly so with one shard; see
:func:`shard_baseline_pairs`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

import numpy as np

from corpusmill.transforms.curriculum import CurriculumConfig, CurriculumReader
from corpusmill.transforms.decompose import (
    Decomposition,
    DecompositionConfig,
    attention_cost,
    average_context_length,
    bucket_dirname,
    concat_chunk_lengths,
    document_length_histogram,
)

STATS_KIND = "decompose_stats"


def shard_baseline_pairs(document_lengths: np.ndarray, sequence_length: int) -> tuple[int, int]:
    """Attention pairs of concat-and-chunk over one shard's documents.

    The baseline concatenates the shard's documents in row order and cuts
    chunks of ``sequence_length`` tokens, as
    :func:`corpusmill.transforms.decompose.cross_document_attention_fraction`
    does; the pair counts (rather than their ratio) add up across shards, so a
    run's fraction is ``1 - Σ same ÷ Σ all`` over its shards. Each shard is
    chunked on its own, which is how a trainer streaming shard files packs.

    Args:
        document_lengths: Token count of each document, in concatenation order.
        sequence_length: Chunk length.

    Returns:
        ``(all_pairs, same_document_pairs)``: causal (query, earlier key) pairs
        within chunks, and those whose query and key share a document.
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
    all_pairs = int((chunks * (chunks - 1) // 2).sum())
    same_document_pairs = int((segments * (segments - 1) // 2).sum())
    return all_pairs, same_document_pairs


@dataclasses.dataclass
class ShardDecomposeStats:
    """Running sums of one shard's decomposition, fed batch by batch.

    Attributes:
        shard: Shard number.
        config: The decomposition parameters (recorded so merging can check
            that every shard used the same ones).
        tokenizer: Spec of the tokenizer used.
        curriculum: The curriculum to describe in the merged stats, if any.
        documents: Documents decomposed.
        documents_without_pieces: Documents too short for any bucket (all of
            their tokens dropped).
        input_tokens: Tokens of the documents, end-of-text ids included.
        dropped_tokens: Tokens that went to no bucket.
        pieces_per_bucket: Sequences per bucket exponent.
        document_length_histogram: Documents per power-of-two length class.
        baseline_all_pairs: See :func:`shard_baseline_pairs`.
        baseline_same_document_pairs: See :func:`shard_baseline_pairs`.
        timings_ms: Milliseconds spent per step (tokenize, split, write).
    """

    shard: int
    config: DecompositionConfig
    tokenizer: str
    curriculum: CurriculumConfig | None = None
    documents: int = 0
    documents_without_pieces: int = 0
    input_tokens: int = 0
    dropped_tokens: int = 0
    pieces_per_bucket: dict[int, int] = dataclasses.field(default_factory=dict)
    document_length_histogram: dict[int, int] = dataclasses.field(default_factory=dict)
    baseline_all_pairs: int = 0
    baseline_same_document_pairs: int = 0
    timings_ms: dict[str, float] = dataclasses.field(default_factory=dict)

    def add(self, decomposition: Decomposition) -> None:
        """Adds one batch's decomposition.

        Call :meth:`set_baseline` once with all of the shard's document
        lengths for the baseline pair counts.
        """
        lengths = decomposition.document_lengths
        self.documents += len(lengths)
        self.input_tokens += decomposition.total_tokens
        self.dropped_tokens += int(decomposition.dropped_tokens.sum())
        for exponent, pieces in decomposition.buckets.items():
            self.pieces_per_bucket[exponent] = self.pieces_per_bucket.get(exponent, 0) + len(pieces)
        # The first cut needs 2^min_exp (+1) tokens; shorter documents are dropped whole.
        shortest = decomposition.config.piece_length(decomposition.config.min_exp)
        self.documents_without_pieces += int((lengths < shortest).sum())
        for k, count in document_length_histogram(lengths).items():
            self.document_length_histogram[k] = self.document_length_histogram.get(k, 0) + count

    def set_baseline(self, document_lengths: np.ndarray) -> None:
        """Sets the baseline pair counts from every document length of the shard, in order."""
        chunk = 1 << self.config.max_exp
        self.baseline_all_pairs, self.baseline_same_document_pairs = shard_baseline_pairs(
            document_lengths, chunk
        )

    def add_time(self, step: str, seconds: float) -> None:
        """Adds wall time spent in one step."""
        self.timings_ms[step] = self.timings_ms.get(step, 0.0) + seconds * 1000.0

    def to_dict(self) -> dict[str, Any]:
        """The stats as a JSON-ready dict (string keys), tagged ``kind: decompose_stats``."""
        return {
            "kind": STATS_KIND,
            "shard": self.shard,
            "tokenizer": self.tokenizer,
            "decomposition": dataclasses.asdict(self.config),
            "curriculum": _curriculum_dict(self.curriculum),
            "documents": self.documents,
            "documents_without_pieces": self.documents_without_pieces,
            "input_tokens": self.input_tokens,
            "dropped_tokens": self.dropped_tokens,
            "pieces_per_bucket": {str(k): v for k, v in sorted(self.pieces_per_bucket.items())},
            "document_length_histogram": {
                str(k): v for k, v in sorted(self.document_length_histogram.items())
            },
            "baseline_all_pairs": self.baseline_all_pairs,
            "baseline_same_document_pairs": self.baseline_same_document_pairs,
            "timings_ms": {k: round(v, 3) for k, v in sorted(self.timings_ms.items())},
        }


def _curriculum_dict(curriculum: CurriculumConfig | None) -> dict[str, Any] | None:
    if curriculum is None:
        return None
    odds = curriculum.odds if isinstance(curriculum.odds, str) else list(curriculum.odds)
    return {**dataclasses.asdict(curriculum), "odds": odds}


def merge_decompose_stats(
    stats: Iterable[Mapping[str, Any]],
    curriculum: CurriculumConfig | None = None,
) -> dict[str, Any]:
    """Combines per-shard stats into the manifest's ``decompose`` section.

    Args:
        stats: Dicts from :meth:`ShardDecomposeStats.to_dict` (records of other
            kinds are ignored), in any order; at least one.
        curriculum: The curriculum whose spec over the merged bucket sizes
            goes under ``curriculum``; by default the one the shards recorded
            (none when they recorded none).

    Returns:
        A JSON-ready dict: tokenizer, decomposition parameters, documents,
        input/kept/dropped tokens and retention, a ``buckets`` table, the
        histograms, and the packing metrics beside their concat-and-chunk
        baseline at ``2^max_exp`` (see the module docstring).

    Raises:
        ValueError: If there is no stats record, or shards disagree on the
            tokenizer or the decomposition parameters.
    """
    records = sorted((s for s in stats if s.get("kind") == STATS_KIND), key=lambda s: s["shard"])
    if not records:
        raise ValueError(f"no {STATS_KIND!r} records to merge")
    first = records[0]
    for record in records[1:]:
        used = [record.get(key) for key in ("tokenizer", "decomposition", "curriculum")]
        expected = [first.get(key) for key in ("tokenizer", "decomposition", "curriculum")]
        if used != expected:
            raise ValueError(
                f"shard {record['shard']} used {used}, shard {first['shard']} used {expected}"
            )
    config = DecompositionConfig(**first["decomposition"])

    def total(key: str) -> int:
        return sum(int(r[key]) for r in records)

    def summed(key: str) -> dict[str, int]:
        merged: dict[int, int] = {}
        for record in records:
            for k, v in record[key].items():
                merged[int(k)] = merged.get(int(k), 0) + int(v)
        return {str(k): merged[k] for k in sorted(merged)}

    pieces = summed("pieces_per_bucket")
    pieces = {str(k): pieces.get(str(k), 0) for k in config.exponents}
    input_tokens = total("input_tokens")
    dropped_tokens = total("dropped_tokens")
    kept_tokens = input_tokens - dropped_tokens

    # Training lengths: a bucket-k piece is one sequence of 2^k positions.
    counts = np.array([pieces[str(k)] for k in config.exponents], dtype=np.float64)
    lengths = np.exp2(np.array(list(config.exponents), dtype=np.float64))
    training_tokens = float((counts * lengths).sum())
    context_sum = float((counts * lengths * (lengths - 1) / 2).sum())
    dd_cost = float((counts * lengths * lengths).sum())
    chunk = 1 << config.max_exp
    baseline = concat_chunk_lengths(int(training_tokens), chunk)
    baseline_cost = attention_cost(baseline)
    all_pairs = total("baseline_all_pairs")
    same_pairs = total("baseline_same_document_pairs")

    timings: dict[str, float] = {}
    for record in records:
        for step, ms in record.get("timings_ms", {}).items():
            timings[step] = timings.get(step, 0.0) + float(ms)

    buckets = {
        str(k): {
            "dir": bucket_dirname(k),
            "sequence_length": 1 << k,
            "tokens_per_sequence": config.piece_length(k),
            "sequences": pieces[str(k)],
            "tokens": pieces[str(k)] * config.piece_length(k),
            "training_tokens": pieces[str(k)] << k,
        }
        for k in config.exponents
    }
    summary = {
        "tokenizer": first["tokenizer"],
        "decomposition": dict(first["decomposition"]),
        "shards": len(records),
        "documents": total("documents"),
        "documents_without_pieces": total("documents_without_pieces"),
        "input_tokens": input_tokens,
        "kept_tokens": kept_tokens,
        "dropped_tokens": dropped_tokens,
        "token_retention": kept_tokens / input_tokens if input_tokens else 1.0,
        "buckets": buckets,
        "pieces_per_bucket": pieces,
        "tokens_per_bucket": {k: b["tokens"] for k, b in buckets.items()},
        "document_length_histogram": summed("document_length_histogram"),
        "average_context_length": context_sum / training_tokens if training_tokens else 0.0,
        "baseline_sequence_length": chunk,
        "baseline_average_context_length": average_context_length(baseline),
        "attention_cost": dd_cost,
        "baseline_attention_cost": baseline_cost,
        # None rather than NaN: the manifest is strict JSON.
        "attention_cost_ratio": dd_cost / baseline_cost if baseline_cost else None,
        "baseline_cross_document_attention_fraction": 1.0 - same_pairs / all_pairs if all_pairs else 0.0,
        "timings_ms": {k: round(v, 3) for k, v in sorted(timings.items())},
    }
    if curriculum is None and first.get("curriculum") is not None:
        recorded = dict(first["curriculum"])
        if not isinstance(recorded["odds"], str):
            recorded["odds"] = tuple(recorded["odds"])
        curriculum = CurriculumConfig(**recorded)
    if curriculum is not None:
        summary["curriculum"] = curriculum_spec(config, pieces, curriculum)
    return summary


def curriculum_spec(
    config: DecompositionConfig, pieces_per_bucket: Mapping[str, int], curriculum: CurriculumConfig
) -> dict[str, Any]:
    """The curriculum reader's spec over buckets of the given sizes, without their data.

    Args:
        config: The decomposition parameters (bucket exponents, piece length).
        pieces_per_bucket: Sequences per exponent (string keys).
        curriculum: Curriculum parameters.

    Returns:
        :meth:`CurriculumReader.spec` of a single-rank reader over the buckets.
    """
    # Zero-stride views have the buckets' shapes and cost no memory; the
    # schedule and spec depend only on row counts.
    buckets = {
        k: np.broadcast_to(
            np.zeros((1, config.piece_length(k)), dtype=np.int32),
            (int(pieces_per_bucket.get(str(k), 0)), config.piece_length(k)),
        )
        for k in config.exponents
    }
    return CurriculumReader.from_arrays(buckets, curriculum).spec()
