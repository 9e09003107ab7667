"""Mergeable numbers of a Dataset Decomposition run, with no Beam dependency.

Each worker decomposes one shard and reports a :class:`ShardDecomposeStats`
made only of counts and exact sums (JSON-ready, string keys); the stage
combines them with :func:`merge_decompose_stats` into its one stats dict. Every derived number (token
retention, average context length, attention costs, the cross-document
fraction) is computed from the merged sums, never as a mean of per-shard
ratios, so a run split into any number of shards reports the same numbers as
:func:`corpusmill.transforms.decompose.decomposition_summary` on the same
documents (the cross-document fraction exactly so with one shard; see
:func:`corpusmill.transforms.decompose.decomposition.attention_pairs`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

import numpy as np

from corpusmill.schemas.config import DecomposeConfig
from corpusmill.training.curriculum import CurriculumConfig, CurriculumReader
from corpusmill.transforms.decompose.decomposition import (
    Decomposition,
    attention_cost,
    attention_pairs,
    average_context_length,
    bucket_dirname,
    concat_chunk_lengths,
    cross_document_fraction,
    decomposition_params,
    document_length_histogram,
)

STATS_KIND = "decompose_stats"


def curriculum_config(config: DecomposeConfig) -> CurriculumConfig:
    """The curriculum reader's config for the job's ``decompose.curriculum`` section."""
    section = config.curriculum
    odds = section.custom_odds if section.odds == "custom" else section.odds
    return CurriculumConfig(tokens_per_step=section.tokens_per_step, odds=odds, num_cycles=section.num_cycles,
                            seed=section.seed)


@dataclasses.dataclass
class ShardDecomposeStats:
    """Running sums of one shard's decomposition, fed batch by batch.

    Attributes:
        shard: Shard number.
        config: The decomposition parameters (recorded so merging can check
            that every shard used the same ones).
        tokenizer: Spec of the tokenizer used.
        curriculum: The curriculum to describe in the merged stats, if any.
        encoder: The library that encoded (``Tokenizer.encoder``, e.g.
            ``bpe-openai 0.1.4``); shards may differ, their tokens do not.
        documents: Documents decomposed.
        documents_without_pieces: Documents too short for any bucket (all of
            their tokens dropped).
        input_tokens: Tokens of the documents, end-of-text ids included.
        dropped_tokens: Tokens that went to no bucket.
        pieces_per_bucket: Sequences per bucket exponent.
        document_length_histogram: Documents per power-of-two length class.
        baseline_all_pairs: See :func:`attention_pairs`.
        baseline_same_document_pairs: See :func:`attention_pairs`.
        timings_ms: Milliseconds spent per step (tokenize, split, write).
    """

    shard: int
    config: DecomposeConfig
    tokenizer: str
    curriculum: CurriculumConfig | None = None
    encoder: str | None = None
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
        self.baseline_all_pairs, self.baseline_same_document_pairs = attention_pairs(document_lengths, chunk)

    def add_time(self, step: str, seconds: float) -> None:
        """Adds wall time spent in one step."""
        self.timings_ms[step] = self.timings_ms.get(step, 0.0) + seconds * 1000.0

    def to_dict(self) -> dict[str, Any]:
        """The stats as a JSON-ready dict (string keys), tagged ``kind: decompose_stats``."""
        return {
            "kind": STATS_KIND,
            "shard": self.shard,
            "tokenizer": self.tokenizer,
            "encoder": self.encoder,
            "decomposition": decomposition_params(self.config),
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


def _consistent_records(stats: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The decompose records in shard order, checked to share tokenizer, parameters and curriculum."""
    records = sorted((s for s in stats if s.get("kind") == STATS_KIND), key=lambda s: s["shard"])
    if not records:
        raise ValueError(f"no {STATS_KIND!r} records to merge")
    keys = ("tokenizer", "decomposition", "curriculum")
    expected = [records[0].get(key) for key in keys]
    for record in records[1:]:
        used = [record.get(key) for key in keys]
        if used != expected:
            raise ValueError(f"shard {record['shard']} used {used}, shard {records[0]['shard']} used {expected}")
    return records


def _summed(records: list[Mapping[str, Any]], key: str) -> dict[str, int]:
    merged: dict[int, int] = {}
    for record in records:
        for k, v in record[key].items():
            merged[int(k)] = merged.get(int(k), 0) + int(v)
    return {str(k): merged[k] for k in sorted(merged)}


def _packing_metrics(config: DecomposeConfig, pieces: Mapping[str, int], all_pairs: int,
                     same_pairs: int) -> dict[str, Any]:
    """Average context and attention cost of the buckets beside concat-and-chunk at ``2^max_exp``."""
    # Training lengths: a bucket-k piece is one sequence of 2^k positions.
    counts = np.array([pieces[str(k)] for k in config.exponents], dtype=np.float64)
    lengths = np.exp2(np.array(list(config.exponents), dtype=np.float64))
    training_tokens = float((counts * lengths).sum())
    context_sum = float((counts * lengths * (lengths - 1) / 2).sum())
    dd_cost = float((counts * lengths * lengths).sum())
    chunk = 1 << config.max_exp
    baseline = concat_chunk_lengths(int(training_tokens), chunk)
    baseline_cost = attention_cost(baseline)
    return {
        "average_context_length": context_sum / training_tokens if training_tokens else 0.0,
        "baseline_sequence_length": chunk,
        "baseline_average_context_length": average_context_length(baseline),
        "attention_cost": dd_cost,
        "baseline_attention_cost": baseline_cost,
        # None rather than NaN: the manifest is strict JSON.
        "attention_cost_ratio": dd_cost / baseline_cost if baseline_cost else None,
        "baseline_cross_document_attention_fraction": cross_document_fraction(all_pairs, same_pairs),
    }


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
        A JSON-ready dict: tokenizer, encoder (the shards' encoders joined by
        `` + `` when they differ; None when no shard recorded one), decomposition parameters, documents,
        input/kept/dropped tokens and retention, a ``buckets`` table, the
        histograms, the packing metrics beside their concat-and-chunk
        baseline at ``2^max_exp`` (see the module docstring), and the summed
        step times (``timings_ms``).

    Raises:
        ValueError: If there is no stats record, or shards disagree on the
            tokenizer or the decomposition parameters.
    """
    records = _consistent_records(stats)
    first = records[0]
    config = DecomposeConfig(**first["decomposition"])

    def total(key: str) -> int:
        return sum(int(r[key]) for r in records)

    # The encoder is not checked for consistency: every encoder gives the tokenizer's exact tokens.
    encoders = sorted({r["encoder"] for r in records if r.get("encoder")})
    pieces = _summed(records, "pieces_per_bucket")
    pieces = {str(k): pieces.get(str(k), 0) for k in config.exponents}
    input_tokens, dropped_tokens = total("input_tokens"), total("dropped_tokens")
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
        "encoder": " + ".join(encoders) if encoders else None,
        "decomposition": dict(first["decomposition"]),
        "shards": len(records),
        "documents": total("documents"),
        "documents_without_pieces": total("documents_without_pieces"),
        "input_tokens": input_tokens,
        "kept_tokens": input_tokens - dropped_tokens,
        "dropped_tokens": dropped_tokens,
        "token_retention": (input_tokens - dropped_tokens) / input_tokens if input_tokens else 1.0,
        "buckets": buckets,
        "pieces_per_bucket": pieces,
        "tokens_per_bucket": {k: b["tokens"] for k, b in buckets.items()},
        "document_length_histogram": _summed(records, "document_length_histogram"),
        **_packing_metrics(config, pieces, total("baseline_all_pairs"), total("baseline_same_document_pairs")),
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
    config: DecomposeConfig, pieces_per_bucket: Mapping[str, int], curriculum: CurriculumConfig
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
