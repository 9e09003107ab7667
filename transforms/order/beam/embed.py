"""EmbedDocuments: every kept document's vector, the IDF counted over the whole corpus first.

For the lexical embedder the IDF is one combine over per-shard document
frequencies (a few MB of counts per shard, merged); a sentence-transformers
model needs none. The embedder is built once per worker process through
``apache_beam.utils.shared`` (a model is loaded once, not once per bundle).
"""

from __future__ import annotations

import time
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from corpusmill.schemas.config import EmbedSectionConfig
from corpusmill.transforms.common import METRICS_NAMESPACE, document_keys, key_collisions
from corpusmill.transforms.order.beam.reuse import StoredEmbeddings, take_stored
from corpusmill.transforms.order.embedders import DocumentFrequencies, Idf, LexicalConfig, document_frequencies, load_embedder
from corpusmill.transforms.order.lexical import LexicalEmbedder
from corpusmill.transforms.order.lexical_fit import idf_of, projection_of, sketch_sample


class EmbeddedShard(NamedTuple):
    """One id shard's documents as the order stage carries them, rows in id order.

    Attributes:
        keys: int64 (m,) stable document keys (``common.document_keys``).
        ids: object (m,) document ids.
        vectors: float32 (m, d) L2-normalised (zero rows for texts without features).
        lengths: int64 (m,) UTF-8 bytes of each text (the semantic keep policy).
        timestamps: int64 (m,) microseconds, -1 when unknown.
        text_hashes: int64 (m,) xxh3-64 of each text (a stored vector is reused only for the same text).
    """

    keys: np.ndarray
    ids: np.ndarray
    vectors: np.ndarray
    lengths: np.ndarray
    timestamps: np.ndarray
    text_hashes: np.ndarray


class KeyCollisionError(RuntimeError):
    """Two document ids share a 64-bit key (about n^2 / 2^65 pairs expected); the order cannot name them."""


class _Holder:
    """What ``shared.Shared`` keeps per worker (it needs an object that takes a weak reference)."""

    def __init__(self, embedder) -> None:
        self.embedder = embedder


class _FrequenciesCombineFn(beam.CombineFn):
    """Sums per-shard document frequencies; None when the corpus is empty."""

    def create_accumulator(self):
        return None

    def add_input(self, accumulator, frequencies):
        return frequencies if accumulator is None else DocumentFrequencies.merge([accumulator, frequencies])

    def merge_accumulators(self, accumulators):
        present = [a for a in accumulators if a is not None]
        return DocumentFrequencies.merge(present) if present else None

    def extract_output(self, accumulator):
        return accumulator


def _sketches(element, idf: Idf | None, documents: int, lexical: LexicalConfig, wanted: int):
    _, table = element
    if table.num_rows:
        keys = document_keys(table.column("id"))
        piece = sketch_sample(keys, table.column("text").to_pylist(), LexicalEmbedder(lexical, idf), wanted,
                              documents)
        if piece is not None:
            yield piece


class _EmbedShardDoFn(beam.DoFn):
    def __init__(self, config: EmbedSectionConfig, lexical: LexicalConfig, handle: shared.Shared):
        self._config = config
        self._lexical = lexical
        self._handle = handle
        self._documents = Metrics.counter(METRICS_NAMESPACE, "order_embedded_documents")
        self._time = Metrics.counter(METRICS_NAMESPACE, "time_order_embed_ms")

    def _embedder(self, idf: Idf | None, projection):
        config = self._config
        if config.model == "lexical":
            tag = (f"lexical|{idf.fingerprint if idf is not None else 'none'}"
                   f"|{projection.fingerprint if projection is not None else 'none'}")
            load = lambda: _Holder(load_embedder("lexical", idf=idf, lexical=self._lexical,  # noqa: E731
                                                 projection=projection))
        else:
            tag = f"{config.model}|{config.device}|{config.max_tokens}|{config.batch_size}"
            load = lambda: _Holder(load_embedder(config.model, config.device, max_seq_length=config.max_tokens,  # noqa: E731
                                                 batch_size=config.batch_size))
        return self._handle.acquire(load, tag=tag).embedder

    def process(self, element, idf, projection):
        shard, value = element
        if isinstance(value, dict):  # joined with the reused snapshot's vectors
            if not value["docs"]:
                return
            table, stored = value["docs"][0], list(value["stored"])
        else:
            table, stored = value, []
        started = time.perf_counter()
        embedder = self._embedder(idf, projection)
        ids = table.column("id")
        keys = document_keys(ids)
        clash = key_collisions(keys)
        if clash.any():
            row = int(np.flatnonzero(clash)[0])
            other = int(np.flatnonzero(keys == keys[row])[0])
            raise KeyCollisionError(f"document ids {ids[other].as_py()!r} and {ids[row].as_py()!r} share the "
                                    "64-bit key the order stage names documents by; rename one")
        texts = table.column("text").to_pylist()
        text_hashes = document_keys(texts)
        found, reused = take_stored(keys, text_hashes, stored, int(embedder.dim))
        vectors = np.zeros((len(texts), int(embedder.dim)), dtype=np.float32)
        vectors[found] = reused
        if not found.all():
            vectors[~found] = embedder.embed([t for t, f in zip(texts, found) if not f])
        lengths = pc.binary_length(pc.cast(table.column("text"), pa.binary())).to_numpy(zero_copy_only=False)
        stamps = pc.cast(table.column("timestamp"), pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False)
        self._documents.inc(table.num_rows)
        self._time.inc(int((time.perf_counter() - started) * 1000))
        yield beam.pvalue.TaggedOutput("info", {"spec": embedder.spec, "fingerprint": embedder.fingerprint,
                                                "dim": int(embedder.dim), "reused": int(found.sum()),
                                                "embedded": int((~found).sum())})
        yield shard, EmbeddedShard(keys, np.asarray(ids.to_pylist(), dtype=object), vectors,
                                   lengths.astype(np.int64), stamps.astype(np.int64), text_hashes)


def _fit_projection(element, dim: int):
    _, pieces = element
    return projection_of(pieces, dim)


def _frequencies(element, lexical: LexicalConfig):
    _, table = element
    if table.num_rows:
        yield document_frequencies(table.column("text").to_pylist(), lexical)


class EmbedDocuments(beam.PTransform):
    """``(shard, documents table)`` -> ``(shard, EmbeddedShard)``, one per input element.

    Returns the embedded shards and, on ``info``, the embedder's spec,
    fingerprint and dimensions (one per shard, all equal).

    Args:
        config: The ``order.embed`` section.
        documents: Singleton PCollection of the document count (the sample's size).
        lexical: The lexical embedder's hashing and projection parameters.
        reuse: ``reuse.reuse_plan``'s result: stored vectors to take where
            id and text match (None: embed every document).
        num_shards: Shards of the documents (to key the stored vectors).
    """

    def __init__(self, config: EmbedSectionConfig, documents, lexical: LexicalConfig = LexicalConfig(),
                 reuse: dict | None = None, num_shards: int = 1):
        super().__init__()
        self._documents = documents
        self._config = config
        self._lexical = lexical
        self._reuse = reuse
        self._num_shards = num_shards

    def expand(self, shards):
        if self._config.model == "lexical":
            idf = (
                shards
                | "CountDocumentFrequencies" >> beam.FlatMap(_frequencies, self._lexical)
                | "MergeDocumentFrequencies" >> beam.CombineGlobally(_FrequenciesCombineFn())
                | "InverseDocumentFrequencies" >> beam.Map(idf_of, self._lexical)
            )
            # One GroupByKey, not a ToList combine: the sample's sketches (up to 16,384 x 4096
            # float32, 256 MiB) are then encoded once on their way to the fit, not twice
            # (accumulator, then the gathered list).
            projection = (
                shards
                | "SketchSample" >> beam.FlatMap(_sketches, beam.pvalue.AsSingleton(idf),
                                                 beam.pvalue.AsSingleton(self._documents), self._lexical,
                                                 self._config.projection_sample)
                | "KeySketches" >> beam.Map(lambda piece: (0, piece))
                | "GatherSketches" >> beam.GroupByKey()
                | "FitProjection" >> beam.Map(_fit_projection, self._lexical.dim)
            )
            projection_side = beam.pvalue.AsSingleton(projection, default_value=None)
        else:
            idf = projection = shards.pipeline | "NoIdf" >> beam.Create([None])
            projection_side = beam.pvalue.AsSingleton(projection)
        inputs = shards
        if self._reuse is not None:
            stored = shards.pipeline | "StoredEmbeddings" >> StoredEmbeddings(self._reuse, self._num_shards)
            inputs = {"docs": shards, "stored": stored} | "JoinStoredEmbeddings" >> beam.CoGroupByKey()
        embedded = inputs | "Embed" >> beam.ParDo(
            _EmbedShardDoFn(self._config, self._lexical, shared.Shared()), beam.pvalue.AsSingleton(idf),
            projection_side).with_outputs("info", main="embedded")
        return embedded.embedded, embedded.info
