"""The decompose stage: tokenize kept documents and write power-of-two length buckets.

``DecomposeDocuments`` takes the kept documents one shard at a time and, for
each shard, writes one Parquet file per bucket::

    buckets/len-00256/part-00003-of-00016.parquet
    ...
    buckets/len-08192/part-00003-of-00016.parquet

with rows ``tokens list<int32>, doc_id string, offset int64`` sorted by
``(doc_id, offset)``. A shard's documents are tokenized and cut in batches of
``decompose.tokenize_batch_docs`` (see :mod:`corpusmill.transforms.tokenizer`
and :mod:`corpusmill.transforms.decompose`, the Beam-free kernels); the
pieces never go through a shuffle. The input is already grouped by shard, so
bucket ``k`` of shard ``s`` holds exactly the pieces of shard ``s``'s
documents, and re-grouping every token by ``(k, s)`` would only move the
largest data of the job once more.

Files are encoded with :func:`corpusmill.transforms.shards.encode_parquet`, so
the same documents and config give byte-identical files.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from corpusmill.schemas.config import DecomposeConfig
from corpusmill.transforms.bucket_stats import STATS_KIND, ShardDecomposeStats, merge_decompose_stats
from corpusmill.transforms.decompose import DecompositionConfig, bucket_dirname, decompose_documents
from corpusmill.transforms.read import METRICS_NAMESPACE
from corpusmill.transforms.shards import (
    ParquetOptions,
    encode_parquet,
    shard_record,
    sort_table,
    write_bytes,
)
from corpusmill.transforms.tokenizer import Tokenizer, encode_documents, load_tokenizer

__all__ = [
    "BUCKET_SCHEMA",
    "BUCKET_SORT_KEYS",
    "BUCKETS_DIR",
    "STATS_KIND",
    "DecomposeDocuments",
    "bucket_output",
    "bucket_outputs",
    "bucket_row_group_rows",
    "merge_decompose_stats",
]

BUCKETS_DIR = "buckets"

BUCKET_SCHEMA = pa.schema(
    [
        pa.field("tokens", pa.list_(pa.int32())),
        pa.field("doc_id", pa.string()),
        pa.field("offset", pa.int64()),
    ]
)
BUCKET_SORT_KEYS = ["doc_id", "offset"]

# Tokens per Parquet row group of a bucket file (4 MiB of int32). The job's
# row_group_rows counts documents; 8,192 rows of 8,193 tokens would make one
# row group of 256 MiB that writers and readers must hold whole.
ROW_GROUP_TOKENS = 1 << 20


def bucket_output(exponent: int) -> str:
    """Output name of a bucket, e.g. ``buckets/len-00256`` for exponent 8."""
    return f"{BUCKETS_DIR}/{bucket_dirname(exponent)}"


def bucket_outputs(config: DecomposeConfig) -> list[str]:
    """Output names of every bucket the config produces, shortest first."""
    return [bucket_output(k) for k in range(config.min_exp, config.max_exp + 1)]


def bucket_row_group_rows(exponent: int, config: DecompositionConfig, parquet: ParquetOptions) -> int:
    """Rows per row group of bucket ``exponent``: at most ``ROW_GROUP_TOKENS`` tokens each."""
    return max(1, min(parquet.row_group_rows, ROW_GROUP_TOKENS // config.piece_length(exponent)))


class _SharedTokenizer:
    """Holder that ``shared.Shared`` can weak-reference (any tokenizer class may lack __weakref__)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer


def _sorted_by_id(table: pa.Table) -> pa.Table:
    """The documents in id order (a no-op for shards written by ResolveDuplicateIds)."""
    if table.num_rows < 2:
        return table
    ids = table.column("id")
    ascending = pc.less(ids.slice(0, table.num_rows - 1), ids.slice(1))
    if pc.all(ascending).as_py():
        return table
    return sort_table(table, ["id"])


class _DecomposeShardDoFn(beam.DoFn):
    """(shard, documents) -> bucket shard records, plus one stats dict on tag ``stats``."""

    def __init__(
        self,
        config: DecomposeConfig,
        staging_dir: str,
        parquet: ParquetOptions,
        num_shards: int,
        shared_handle: shared.Shared,
    ) -> None:
        self._config = config
        self._decomposition = config.decomposition_config()
        self._curriculum = config.curriculum_config()
        self._staging_dir = staging_dir
        self._parquet = parquet
        self._num_shards = num_shards
        self._shared_handle = shared_handle
        self._tokenizer: Tokenizer | None = None
        self._documents = Metrics.counter(METRICS_NAMESPACE, "decompose_documents")
        self._tokens_in = Metrics.counter(METRICS_NAMESPACE, "decompose_tokens_in")
        self._tokens_kept = Metrics.counter(METRICS_NAMESPACE, "decompose_tokens_kept")
        self._tokens_dropped = Metrics.counter(METRICS_NAMESPACE, "decompose_tokens_dropped")
        self._too_short = Metrics.counter(METRICS_NAMESPACE, "decompose_documents_too_short")
        self._sequences = {
            k: Metrics.counter(METRICS_NAMESPACE, f"decompose_sequences_{bucket_dirname(k)}")
            for k in self._decomposition.exponents
        }
        self._time = {
            step: Metrics.counter(METRICS_NAMESPACE, f"time_decompose_{step}_ms")
            for step in ("tokenize", "split", "write")
        }

    def setup(self) -> None:
        config = self._config
        threads = config.num_threads or os.cpu_count() or 1

        def load() -> _SharedTokenizer:
            return _SharedTokenizer(
                load_tokenizer(config.tokenizer, num_threads=threads, eot_token=config.eot_token)
            )

        tag = f"{config.tokenizer}|{threads}|{config.eot_token}"
        self._tokenizer = self._shared_handle.acquire(load, tag=tag).tokenizer

    def _timed(self, stats: ShardDecomposeStats, step: str, started: float) -> float:
        now = time.perf_counter()
        stats.add_time(step, now - started)
        self._time[step].inc(int((now - started) * 1000))
        return now

    def process(self, element: tuple[int, pa.Table | pa.RecordBatch]) -> Iterator[Any]:
        shard, table = element
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        table = _sorted_by_id(table.select(["id", "text"]))
        config = self._decomposition
        stats = ShardDecomposeStats(
            shard=shard, config=config, tokenizer=self._tokenizer.name, curriculum=self._curriculum
        )
        batches: dict[int, list[pa.RecordBatch]] = {k: [] for k in config.exponents}
        lengths = []
        step = self._config.tokenize_batch_docs
        for start in range(0, table.num_rows, step):
            started = time.perf_counter()
            chunk = table.slice(start, step)
            tokens = encode_documents(
                self._tokenizer, chunk.column("text").to_pylist(), self._config.append_eot
            )
            started = self._timed(stats, "tokenize", started)
            decomposition = decompose_documents(tokens, chunk.column("id").to_pylist(), config)
            del tokens
            for k, pieces in decomposition.buckets.items():
                if len(pieces):
                    batches[k].append(pieces.to_record_batch())
                    self._sequences[k].inc(len(pieces))
            stats.add(decomposition)
            lengths.append(decomposition.document_lengths)
            self._timed(stats, "split", started)
        stats.set_baseline(np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64))
        self._documents.inc(stats.documents)
        self._tokens_in.inc(stats.input_tokens)
        self._tokens_kept.inc(stats.input_tokens - stats.dropped_tokens)
        self._tokens_dropped.inc(stats.dropped_tokens)
        self._too_short.inc(stats.documents_without_pieces)

        started = time.perf_counter()
        for k in config.exponents:
            yield self._write_bucket(k, shard, batches.pop(k))
        self._timed(stats, "write", started)
        yield beam.pvalue.TaggedOutput("stats", stats.to_dict())

    def _write_bucket(self, exponent: int, shard: int, batches: list[pa.RecordBatch]) -> dict:
        """Writes one bucket file of one shard (empty files too, so every part exists)."""
        table = pa.Table.from_batches(batches, schema=BUCKET_SCHEMA)
        # Documents were cut in id order, so this only sorts when ids repeat
        # across batches, which ResolveDuplicateIds rules out.
        if not _is_sorted(table):
            table = sort_table(table, BUCKET_SORT_KEYS)
        options = dataclasses.replace(
            self._parquet, row_group_rows=bucket_row_group_rows(exponent, self._decomposition, self._parquet)
        )
        data = encode_parquet(table, options)
        output = bucket_output(exponent)
        record = shard_record(output, shard, self._num_shards, table.num_rows, data)
        write_bytes(f"{self._staging_dir}/{record['path']}", data)
        return {"kind": "shard", **record}


def _is_sorted(table: pa.Table) -> bool:
    """Whether rows are in strictly ascending ``(doc_id, offset)`` order."""
    if table.num_rows < 2:
        return True
    ids = table.column("doc_id")
    offsets = table.column("offset")
    n = table.num_rows
    head_ids, tail_ids = ids.slice(0, n - 1), ids.slice(1)
    ascending = pc.or_(
        pc.less(head_ids, tail_ids),
        pc.and_(pc.equal(head_ids, tail_ids), pc.less(offsets.slice(0, n - 1), offsets.slice(1))),
    )
    return bool(pc.all(ascending).as_py())


class DecomposeDocuments(beam.PTransform):
    """Tokenizes documents and writes their Dataset Decomposition buckets.

    Input: ``(shard: int, pyarrow.Table | pyarrow.RecordBatch)`` with at least
    the columns ``id`` (unique) and ``text`` (``DOCUMENT_SCHEMA`` or
    ``DOCUMENT_BATCH_SCHEMA``), one element per shard, as
    :class:`corpusmill.transforms.shards.ShardBatches` yields; a shard's
    documents must not be split over several elements (they would write the
    same files).

    Output: a ``DoOutputsTuple`` with

    * ``shards``: one dict per written file, ``{"kind": "shard", "output":
      "buckets/len-00256", "shard", "path", "rows", "bytes", "sha256"}``; every
      bucket of every input shard is written, empty or not;
    * ``stats``: one dict per shard, ``{"kind": "decompose_stats", ...}``, to
      combine with :func:`merge_decompose_stats`.

    Args:
        config: The ``decompose`` section of the job.
        staging_dir: Where files are written under their final relative names.
        parquet: Parquet encoding; ``row_group_rows`` is capped so that a row
            group holds at most ``ROW_GROUP_TOKENS`` tokens.
        num_shards: Total shards of the job (the ``of-NNNNN`` in file names).
    """

    def __init__(
        self, config: DecomposeConfig, staging_dir: str, parquet: ParquetOptions, num_shards: int
    ) -> None:
        super().__init__()
        self._config = config
        self._staging_dir = staging_dir
        self._parquet = parquet
        self._num_shards = num_shards

    def expand(self, shards):
        return shards | "TokenizeAndDecompose" >> beam.ParDo(
            _DecomposeShardDoFn(
                self._config, self._staging_dir, self._parquet, self._num_shards, shared.Shared()
            )
        ).with_outputs("stats", main="shards")
