"""PackContexts: the ordered documents as fixed-length training contexts, ``contexts/``.

Data flow (shards are contiguous ranges of the order)::

    (ordered shard, docs) -> tokenize -> (shard, ids, ragged tokens)
                          -> token total per shard (side input: each shard's stream start)
                          -> pack_shard -> whole contexts (shard, table)
                                         + head/tail fragments keyed by context
    fragments -> GroupByKey context -> assemble_context -> (shard of its first token, row)
    whole (each on its shard) + assembled (a side input: one per shard border at most)
          -> contexts/ (rows by context index)

Only the corpus's last context is short (padded with end-of-text); every
document appears once, cut into pieces at context borders (see
:mod:`corpusmill.transforms.order.contexts`).
"""

from __future__ import annotations

import os
import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from corpusmill.schemas.config import ContextsSectionConfig
from corpusmill.transforms.common import METRICS_NAMESPACE
from corpusmill.transforms.decompose.tokenizer import load_tokenizer
from corpusmill.transforms.io.beam import coders  # noqa: F401  (registers the Arrow coders)
from corpusmill.transforms.io.beam.shards import WriteShards
from corpusmill.transforms.io.shard_files import OutputSpec, ParquetOptions
from corpusmill.transforms.order.contexts import (
    CONTEXT_SCHEMA,
    RaggedTokens,
    assemble_context,
    context_stats,
    pack_shard,
    shard_token_total,
)

# Tokens per row group: 128 contexts of 8,192 tokens (4 MiB of int32).
ROW_GROUP_TOKENS = 1 << 20
TOKENIZE_BATCH_DOCS = 256


def contexts_spec(config: ContextsSectionConfig) -> OutputSpec:
    """``contexts/``: rows by context index, row groups of about ``ROW_GROUP_TOKENS`` tokens."""
    return OutputSpec("contexts", CONTEXT_SCHEMA, ("context",),
                      row_group_rows=max(1, ROW_GROUP_TOKENS // config.length))


class _Holder:
    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer


class _TokenizeDoFn(beam.DoFn):
    def __init__(self, config: ContextsSectionConfig, handle: shared.Shared):
        self._config = config
        self._handle = handle
        self._tokens = Metrics.counter(METRICS_NAMESPACE, "order_context_tokens")

    def setup(self):
        config, threads = self._config, os.cpu_count() or 1
        self._tokenizer = self._handle.acquire(
            lambda: _Holder(load_tokenizer(config.tokenizer, num_threads=threads, eot_token=config.eot_token)),
            tag=f"{config.tokenizer}|{threads}|{config.eot_token}").tokenizer

    def process(self, element):
        shard, table = element
        texts = table.column("text").to_pylist()
        arrays = []
        for start in range(0, len(texts), TOKENIZE_BATCH_DOCS):
            arrays.extend(self._tokenizer.encode_batch(texts[start:start + TOKENIZE_BATCH_DOCS]))
        lengths = np.array([a.size for a in arrays], dtype=np.int64)
        offsets = np.zeros(lengths.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.concatenate(arrays).astype(np.int32) if arrays else np.zeros(0, np.int32)
        tokens = RaggedTokens(values, offsets)
        self._tokens.inc(int(values.size))
        yield shard, (table.column("id").to_pylist(), tokens, int(self._tokenizer.eot_id))


def _total(element):
    shard, (_, tokens, eot) = element
    return shard, (shard_token_total(tokens), eot)


def _pack(element, totals: dict, length: int):
    shard, (ids, tokens, eot) = element
    start = sum(t for s, (t, _) in totals.items() if s < shard)
    stream_total = sum(t for t, _ in totals.values())
    table, fragments = pack_shard(tokens, ids, start, length, eot, stream_total=stream_total)
    for fragment in fragments:
        yield beam.pvalue.TaggedOutput("fragments", (fragment.context, (shard, fragment)))
    yield shard, table


def _assemble(element, totals: dict, length: int):
    context, pieces = element
    pieces = list(pieces)
    eot = next(iter(totals.values()))[1]
    stream_total = sum(t for t, _ in totals.values())
    owner = min(shard for shard, _ in pieces)  # the shard holding the context's first token
    return owner, assemble_context(context, [f for _, f in pieces], length, eot, stream_total)


def _with_assembled(element, assembled: list):
    """A shard's whole contexts and the assembled ones it owns (the writer sorts them by index)."""
    shard, table = element
    owned = [t for owner, t in assembled if owner == shard]
    return shard, pa.concat_tables([table, *owned]) if owned else table


def _stats(tables: list[dict], documents: int) -> dict:
    totals = {key: sum(t[key] for t in tables) for key in
              ("contexts", "tokens", "padding_tokens", "pieces", "attention_pairs", "same_document_pairs",
               "documents_started")}
    cross = 1 - totals["same_document_pairs"] / totals["attention_pairs"] if totals["attention_pairs"] else None
    return {**totals, "documents": int(documents), "each_document_once": totals["documents_started"] == documents,
            "cross_document_attention": cross}


def _table_stats(element) -> dict:
    _, table = element
    offsets = table.column("doc_offsets").combine_chunks().flatten().to_numpy()
    return {**context_stats(table), "documents_started": int((offsets == 0).sum())}


class PackContexts(beam.PTransform):
    """``(ordered shard, docs)`` -> ``(written shard records, stats singleton)``.

    Args:
        config: The ``order.contexts`` section.
        num_shards: Shards of the documents and of ``contexts/``.
        staging_dir: Where the job writes.
        parquet: The job's Parquet encoding.
        documents: Singleton PCollection of the documents' count (the coverage check).
    """

    def __init__(self, config: ContextsSectionConfig, num_shards: int, staging_dir: str, parquet: ParquetOptions,
                 documents):
        super().__init__()
        self._config = config
        self._num_shards = num_shards
        self._staging_dir = staging_dir
        self._parquet = parquet
        self._documents = documents

    def expand(self, docs):
        config = self._config
        tokens = docs | "TokenizeForContexts" >> beam.ParDo(_TokenizeDoFn(config, shared.Shared()))
        totals = beam.pvalue.AsDict(tokens | "TokenTotals" >> beam.Map(_total))
        packed = tokens | "PackShards" >> beam.FlatMap(_pack, totals, config.length).with_outputs(
            "fragments", main="whole")
        assembled = (packed.fragments
                     | "GroupFragments" >> beam.GroupByKey()
                     | "AssembleContexts" >> beam.Map(_assemble, totals, config.length))
        # The whole contexts stay on their shard (no shuffle of the token tables); the few
        # assembled across a shard border (at most one per border) join them as a side input.
        contexts = packed.whole | "WithAssembledContexts" >> beam.Map(
            _with_assembled, beam.pvalue.AsList(assembled)).with_output_types(typing.Tuple[int, pa.Table])
        written = contexts | "WriteContexts" >> WriteShards(contexts_spec(config), self._staging_dir,
                                                            self._num_shards, self._parquet)
        stats = (contexts | "ContextStats" >> beam.Map(_table_stats)
                 | "GatherContextStats" >> beam.combiners.ToList()
                 | "ContextsSummary" >> beam.Map(_stats, beam.pvalue.AsSingleton(self._documents)))
        return written, stats
