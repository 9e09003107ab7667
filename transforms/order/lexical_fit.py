"""The lexical embedder as the order stage fits it to a corpus (Beam-free).

Two corpus-wide fits precede the embedding: the IDF over every document
(mergeable counts), and the projection (a PCA of the wide sketch,
``projection.Projection``) over a sample chosen by document key
(``plan.sample_mask``), so that every runner and shard count fits the same one.
The pipeline runs the pieces in separate steps; ``fit_lexical_embedder`` runs
them in one process (the benchmarks' reference, and the stage's meaning).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from corpusmill.transforms.order.lexical import (
    DocumentFrequencies,
    Idf,
    LexicalConfig,
    LexicalEmbedder,
    document_frequencies,
)
from corpusmill.transforms.order.plan import sample_mask
from corpusmill.transforms.order.projection import Projection

PROJECTION_SEED = 2
BATCH = 4096

__all__ = ["PROJECTION_SEED", "fit_lexical_embedder", "idf_of", "projection_of", "sketch_sample"]


def idf_of(frequencies: DocumentFrequencies | None, config: LexicalConfig) -> Idf | None:
    """The IDF of merged counts (None for an empty corpus)."""
    if frequencies is None:
        return None
    return Idf.from_document_frequencies(frequencies, config.hash_bits, config.min_df)


def sketch_sample(keys: np.ndarray, texts: Sequence[str], embedder: LexicalEmbedder, wanted: int,
                  total: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(keys, sketches)`` of the rows of one batch that fall in the projection's sample, or None."""
    if wanted <= 0:
        return None
    mask = sample_mask(keys, wanted, total, PROJECTION_SEED)
    if not mask.any():
        return None
    return keys[mask], embedder.raw([t for t, m in zip(texts, mask) if m])


def projection_of(pieces: Iterable[tuple[np.ndarray, np.ndarray]], dim: int) -> Projection | None:
    """The projection fitted on every sampled sketch, in key order; None when too few have words."""
    pieces = [p for p in pieces if p is not None]
    if not pieces:
        return None
    keys = np.concatenate([p[0] for p in pieces])
    # Rows in key order, written once into place (the sample can be 256 MiB).
    position = np.empty(keys.size, dtype=np.int64)
    position[np.argsort(keys, kind="stable")] = np.arange(keys.size)
    sketches = np.empty((keys.size, pieces[0][1].shape[1]), dtype=np.float32)
    start = 0
    for _, piece in pieces:
        sketches[position[start:start + piece.shape[0]]] = piece
        start += piece.shape[0]
    if int(np.any(sketches != 0, axis=1).sum()) < 2:
        return None
    return Projection.fit(sketches, dim)


def fit_lexical_embedder(texts: Sequence[str], keys: np.ndarray, config: LexicalConfig = LexicalConfig(),
                         projection_sample: int = 16384) -> LexicalEmbedder:
    """IDF over ``texts``, projection over the key-chosen sample: the embedder the stage would build."""
    keys = np.asarray(keys, dtype=np.int64)
    batches = range(0, len(texts), BATCH)
    frequencies = DocumentFrequencies.merge(document_frequencies(texts[i:i + BATCH], config) for i in batches) \
        if len(texts) else None
    idf = idf_of(frequencies, config)
    unfitted = LexicalEmbedder(config, idf)
    pieces = [sketch_sample(keys[i:i + BATCH], texts[i:i + BATCH], unfitted, projection_sample, len(texts))
              for i in batches]
    return LexicalEmbedder(config, idf, projection_of(pieces, config.dim))
