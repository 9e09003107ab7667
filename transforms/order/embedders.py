"""Document embedders of the ``order`` stage behind one interface, and the loader (Beam-free).

An ``Embedder`` turns texts into float32 rows of unit L2 norm; the kNN graph
compares documents by the inner product of these rows. Two kinds exist:

* ``lexical`` (the default, ``corpusmill.transforms.order.lexical``): hashed
  sublinear TF-IDF of word unigrams and bigrams, projected. No model,
  deterministic to the byte, thousands of documents per second per core. Its
  IDF comes from document frequencies the pipeline counts first, and its
  projection (a PCA of wide sketches, ``corpusmill.transforms.order.projection``)
  is fitted on a sample next; without one it projects sparsely (coarser).
* ``st:<model>`` (``corpusmill.transforms.order.transformer``): a
  sentence-transformers model from a local folder (``st:/models/minilm``) or a
  hub name (``st:sentence-transformers/all-MiniLM-L6-v2``, which needs the
  network once), embedding each document's first ``max_seq_length`` tokens.
  Needs ``pip install corpusmill[embed]``.

Build an embedder once per worker (it may hold a model) and call ``embed`` on
batches: each row depends only on its own text, never on the batch.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from corpusmill.transforms.order.lexical import (
    DocumentFrequencies,
    Idf,
    LexicalConfig,
    LexicalEmbedder,
    document_frequencies,
)
from corpusmill.transforms.order.projection import Projection

DEFAULT_SPEC = "lexical"
SENTENCE_TRANSFORMERS_PREFIX = "st:"

__all__ = [
    "DEFAULT_SPEC", "DocumentFrequencies", "Embedder", "Idf", "LexicalConfig", "LexicalEmbedder",
    "Projection", "document_frequencies", "load_embedder",
]


@runtime_checkable
class Embedder(Protocol):
    """What the order stage needs of an embedder.

    Attributes:
        name: The kind: ``lexical`` or ``st``.
        dim: Columns of ``embed``'s result.
        spec: The string ``load_embedder`` was given (the config's value).
        fingerprint: Everything that decides the vectors (kind, parameters,
            IDF or weights digest, precision), for the manifest: two embedders
            with one fingerprint give the same vectors (up to float rounding
            across devices for ``st``).
    """

    name: str
    dim: int
    spec: str
    fingerprint: str

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeds texts.

        Args:
            texts: Documents (str).

        Returns:
            float32 ``(len(texts), dim)``, rows of unit L2 norm, in input order;
            a text without features (no word; empty for ``st``) gets a zero row,
            which has inner product 0 with every row.
        """
        ...


def load_embedder(spec: str = DEFAULT_SPEC, device: str = "auto", *, idf: Idf | None = None,
                  lexical: LexicalConfig | None = None, projection: Projection | None = None,
                  max_seq_length: int = 256, batch_size: int = 64) -> Embedder:
    """Builds the embedder a spec names.

    Args:
        spec: ``lexical``, or ``st:<local folder or hub name>``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``st`` only; auto
            takes cuda where torch sees one). The lexical embedder runs on CPU.
        idf: IDF of the corpus or a sample, for ``lexical``; None weighs every
            feature 1 (plain sublinear TF).
        lexical: Hashing and projection parameters for ``lexical``.
        projection: The fitted projection for ``lexical`` (``Projection.fit``
            on ``LexicalEmbedder.raw`` of a sample); None projects sparsely.
        max_seq_length: Tokens embedded per document, for ``st``.
        batch_size: Texts per forward pass, for ``st``.

    Returns:
        The embedder.

    Raises:
        ValueError: For an unknown spec, or options of the other kind.
        ImportError: For ``st:`` without sentence-transformers installed.
    """
    if spec == "lexical":
        return LexicalEmbedder(lexical or LexicalConfig(), idf, projection)
    if spec.startswith(SENTENCE_TRANSFORMERS_PREFIX) and len(spec) > len(SENTENCE_TRANSFORMERS_PREFIX):
        if idf is not None or lexical is not None or projection is not None:
            raise ValueError("idf, lexical and projection apply to the lexical embedder only")
        try:
            from corpusmill.transforms.order.transformer import SentenceTransformerEmbedder

            return SentenceTransformerEmbedder(spec[len(SENTENCE_TRANSFORMERS_PREFIX):], device=device,
                                               max_seq_length=max_seq_length, batch_size=batch_size)
        except ModuleNotFoundError as error:
            if error.name and error.name.split(".")[0] in {"torch", "sentence_transformers"}:
                raise ImportError(f"{spec!r} needs sentence-transformers and torch: "
                                  "pip install 'corpusmill[embed]'") from error
            raise
    raise ValueError(f"unknown embedder spec {spec!r}: expected 'lexical' or 'st:<model folder or hub name>'")
