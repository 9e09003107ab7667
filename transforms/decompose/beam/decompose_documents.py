"""DecomposeDocuments: the ``decompose`` stage, tokenized documents cut into power-of-two buckets.

The stage takes the kept documents one shard at a time and, for each shard,
writes one Parquet file per bucket::

    buckets/len-00256/part-00003-of-00016.parquet
    ...
    buckets/len-08192/part-00003-of-00016.parquet

with rows ``tokens list<int32>, doc_id string, offset int64`` in the order the
documents arrive (id order; the order stage's order once documents are
ordered), each document's pieces by offset. A shard's documents are tokenized
and cut in batches of ``decompose.tokenize_batch_docs`` (see
:mod:`corpusmill.transforms.decompose.tokenizer` and
:mod:`corpusmill.transforms.decompose.decomposition`, the Beam-free kernels);
the pieces never go through a shuffle. The input is already grouped by shard,
so bucket ``k`` of shard ``s`` holds exactly the pieces of shard ``s``'s
documents, and re-grouping every token by ``(k, s)`` would only move the
largest data of the job once more.
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from corpusmill.schemas.config import ConfigError, DecomposeConfig
from corpusmill.transforms.common import METRICS_NAMESPACE
from corpusmill.schemas.documents import PATH_START
from corpusmill.transforms.decompose.chains import decompose_chains
from corpusmill.transforms.decompose.decomposition import bucket_dirname, decompose_documents
from corpusmill.transforms.decompose.stats import (
    ShardDecomposeStats,
    curriculum_config,
    merge_decompose_stats,
)
from corpusmill.transforms.decompose.tokenizer import (
    Tokenizer,
    encode_document_batches,
    encoder_problem,
    load_tokenizer,
    tokenizer_problem,
)
from corpusmill.transforms.io.beam.shards import WriteShards
from corpusmill.transforms.io.shard_files import OutputSpec, ParquetOptions
from corpusmill.transforms.stage import StageContext, StageResult

BUCKETS_DIR = "buckets"

BUCKET_SCHEMA = pa.schema(
    [
        pa.field("tokens", pa.list_(pa.int32())),
        pa.field("doc_id", pa.string()),
        pa.field("offset", pa.int64()),
    ]
)

# Tokens per Parquet row group of a bucket file (4 MiB of int32). The job's
# row_group_rows counts documents; 8,192 rows of 8,193 tokens would make one
# row group of 256 MiB that writers and readers must hold whole.
ROW_GROUP_TOKENS = 1 << 20


def bucket_output(exponent: int) -> str:
    """Output name of a bucket, e.g. ``buckets/len-00256`` for exponent 8."""
    return f"{BUCKETS_DIR}/{bucket_dirname(exponent)}"


def bucket_row_group_rows(exponent: int, config: DecomposeConfig, parquet: ParquetOptions) -> int:
    """Rows per row group of bucket ``exponent``: at most ``ROW_GROUP_TOKENS`` tokens each."""
    return max(1, min(parquet.row_group_rows, ROW_GROUP_TOKENS // config.piece_length(exponent)))


def bucket_specs(config: DecomposeConfig, parquet: ParquetOptions) -> dict[int, OutputSpec]:
    """One output per bucket exponent, shortest first; rows keep the order they are cut in."""
    return {k: OutputSpec(bucket_output(k), BUCKET_SCHEMA, sort_keys=None,
                          row_group_rows=bucket_row_group_rows(k, config, parquet))
            for k in config.exponents}


class _SharedTokenizer:
    """Holder that ``shared.Shared`` can weak-reference (any tokenizer class may lack __weakref__)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer


class _DecomposeShardDoFn(beam.DoFn):
    """(shard, documents) -> (shard, pieces table) per bucket on tag ``str(exponent)``, one stats dict on ``stats``."""

    def __init__(self, config: DecomposeConfig, shared_handle: shared.Shared) -> None:
        self._config = config
        self._curriculum = curriculum_config(config)
        self._shared_handle = shared_handle
        self._tokenizer: Tokenizer | None = None
        counter = lambda name: Metrics.counter(METRICS_NAMESPACE, name)  # noqa: E731
        self._counters = {name: counter(f"decompose_{name}") for name in
                          ("documents", "tokens_in", "tokens_kept", "tokens_dropped", "documents_too_short")}
        self._sequences = {k: counter(f"decompose_sequences_{bucket_dirname(k)}") for k in config.exponents}
        self._time = {step: counter(f"time_decompose_{step}_ms") for step in ("tokenize", "split", "write")}

    def setup(self) -> None:
        config = self._config
        threads = config.num_threads or os.cpu_count() or 1

        def load() -> _SharedTokenizer:
            return _SharedTokenizer(load_tokenizer(config.tokenizer, num_threads=threads, eot_token=config.eot_token,
                                                   encoder=config.encoder))

        tag = f"{config.tokenizer}|{threads}|{config.eot_token}|{config.encoder}"
        self._tokenizer = self._shared_handle.acquire(load, tag=tag).tokenizer

    def _timed(self, stats: ShardDecomposeStats, step: str, started: float) -> float:
        now = time.perf_counter()
        stats.add_time(step, now - started)
        self._time[step].inc(int((now - started) * 1000))
        return now

    def _batches(self, table: pa.Table) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` row ranges of about ``tokenize_batch_docs``; with ``over: order``, cut at path starts."""
        size, n = self._config.tokenize_batch_docs, table.num_rows
        if self._config.over != "order":
            yield from ((start, min(start + size, n)) for start in range(0, n, size))
            return
        if PATH_START not in table.column_names:
            raise ValueError("decompose.over = order needs documents placed by the order stage")
        starts = np.flatnonzero(table.column(PATH_START).to_numpy(zero_copy_only=False))
        cuts = np.unique(np.concatenate([[0], starts, [n]]))
        begin = 0
        for cut in cuts[1:]:
            if cut - begin >= size or cut == n:
                yield begin, int(cut)
                begin = int(cut)

    def process(self, element: tuple[int, pa.Table | pa.RecordBatch]) -> Iterator[Any]:
        shard, table = element
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        config = self._config
        chains = config.over == "order"
        table = table.select(["id", "text", PATH_START] if chains else ["id", "text"])
        stats = ShardDecomposeStats(shard=shard, config=config, tokenizer=self._tokenizer.name,
                                    curriculum=self._curriculum, encoder=self._tokenizer.encoder)
        batches: dict[int, list[pa.RecordBatch]] = {k: [] for k in config.exponents}
        lengths = []
        ranges = list(self._batches(table))
        texts = (table.column("text").slice(start, stop - start).to_pylist() for start, stop in ranges)
        # The tokenizer may encode the next batch while this one is cut (bpe-openai's
        # worker processes): "tokenize" times the wait for each batch's tokens.
        encoded = encode_document_batches(self._tokenizer, texts, config.append_eot)
        for start, stop in ranges:
            started = time.perf_counter()
            chunk = table.slice(start, stop - start)
            tokens = next(encoded)
            started = self._timed(stats, "tokenize", started)
            ids = chunk.column("id").to_pylist()
            if chains:
                flags = chunk.column(PATH_START).to_numpy(zero_copy_only=False)
                decomposition = decompose_chains(tokens, ids, flags, config)
                lengths.append(np.array([t.size for t in tokens], dtype=np.int64))
            else:
                decomposition = decompose_documents(tokens, ids, config)
                lengths.append(decomposition.document_lengths)
            del tokens
            for k, pieces in decomposition.buckets.items():
                if len(pieces):
                    batches[k].append(pieces.to_record_batch())
                    self._sequences[k].inc(len(pieces))
            stats.add(decomposition)
            self._timed(stats, "split", started)
        stats.set_baseline(np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64))
        for name, value in (("documents", stats.documents), ("tokens_in", stats.input_tokens),
                            ("tokens_kept", stats.input_tokens - stats.dropped_tokens),
                            ("tokens_dropped", stats.dropped_tokens),
                            ("documents_too_short", stats.documents_without_pieces)):
            self._counters[name].inc(value)
        started = time.perf_counter()
        for k in config.exponents:
            # Every bucket of every shard is written, empty or not, so every part exists.
            yield beam.pvalue.TaggedOutput(str(k), (shard, pa.Table.from_batches(batches.pop(k), BUCKET_SCHEMA)))
        self._timed(stats, "write", started)
        yield stats.to_dict()


def _merge_stats(records: list[dict], config: DecomposeConfig) -> dict:
    """The stage's one stats dict from the per-shard records (zeros when no shard had documents)."""
    if not records:
        empty = ShardDecomposeStats(shard=0, config=config, tokenizer=config.tokenizer,
                                    curriculum=curriculum_config(config))
        return {**merge_decompose_stats([empty.to_dict()]), "shards": 0, "timings_ms": {}, "over": config.over}
    merged = merge_decompose_stats(records)
    # With over = order the decomposed units are the order's paths: ``documents`` counts paths.
    merged["over"] = config.over
    # Times vary between identical runs; the time_decompose_* counters carry them.
    merged.pop("timings_ms", None)
    return merged


class DecomposeDocuments(beam.PTransform):
    """Tokenizes documents and writes their Dataset Decomposition buckets: the ``decompose`` stage.

    Input: ``(shard: int, pyarrow.Table | pyarrow.RecordBatch)`` with at least
    the columns ``id`` (unique) and ``text``, one element per shard, rows in
    the order to keep; a shard's documents must not be split over several
    elements (they would write the same files).

    Output: a ``StageResult`` whose ``docs`` are the input (unchanged),
    ``shards`` one record per written bucket file (every bucket of every
    input shard, empty or not), and ``stats`` the merged decompose section
    (:func:`merge_decompose_stats`).

    Args:
        config: The ``decompose`` section of the job.
        context: Shard count, staging directory and Parquet encoding; a bucket's
            ``row_group_rows`` is capped so that a row group holds at most
            ``ROW_GROUP_TOKENS`` tokens.
    """

    name = "decompose"

    def __init__(self, config: DecomposeConfig, context: StageContext) -> None:
        super().__init__()
        self._config = config
        self._context = context

    @staticmethod
    def check(config: DecomposeConfig) -> None:
        """The tokenizer must be loadable here (a known tiktoken name, a file, a Hub name), and its encoder too."""
        problem = tokenizer_problem(config.tokenizer)
        if problem:
            raise ConfigError("decompose.tokenizer", problem)
        problem = encoder_problem(config.tokenizer, config.encoder)
        if problem:
            raise ConfigError("decompose.encoder", problem)

    @staticmethod
    def output_specs(config: DecomposeConfig, context: StageContext) -> list[OutputSpec]:
        """One output per bucket, ``buckets/len-00256`` … ``buckets/len-08192``."""
        return list(bucket_specs(config, context.parquet).values())

    def expand(self, shards):
        config, context = self._config, self._context
        specs = bucket_specs(config, context.parquet)
        cut = shards | "TokenizeAndDecompose" >> beam.ParDo(
            _DecomposeShardDoFn(config, shared.Shared())).with_outputs(*map(str, specs), main="stats")
        written = [
            cut[str(k)] | f"Write{bucket_dirname(k).title().replace('-', '')}" >> WriteShards(
                spec, context.staging_dir, context.num_shards, context.parquet)
            for k, spec in specs.items()
        ]
        stats = (
            cut.stats
            | "CollectDecomposeStats" >> beam.combiners.ToList()
            | "MergeDecomposeStats" >> beam.Map(_merge_stats, config)
        )
        return StageResult(shards, None, tuple(written) | "AllBucketShards" >> beam.Flatten(), stats)
