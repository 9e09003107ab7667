"""Dataset Decomposition over In-Context Pretraining chains, with no Beam dependency.

With ``decompose.over: order``, the unit cut into power-of-two pieces is not one
document but a *chain*: the consecutive documents of one traversal path (from
one path start to the next, in ``position`` order), concatenated, each with its
end-of-text id when ``append_eot`` is on. A long bucket then holds related
documents rather than the tail of a single one.

The cutting is :func:`~corpusmill.transforms.decompose.decomposition.decompose_ragged`
itself, run over the chains (the chain boundaries are its row splits), with the
draws of mode "random" seeded by each chain's first document id, just as a lone
document is seeded by its own id. Afterwards each piece is named by the
document holding its first token and that token's offset within the document,
so a piece reads like a piece of ``decompose_documents`` except that it may run
on into the next documents of its chain. With every document its own chain the
result equals ``decompose_documents``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from corpusmill.schemas.config import DecomposeConfig
from corpusmill.transforms.decompose.decomposition import BucketPieces, Decomposition, decompose_ragged


def chain_first_documents(chain_starts: np.ndarray) -> np.ndarray:
    """Index of each chain's first document.

    Args:
        chain_starts: bool per document, True where a document starts a chain.
            The first document starts one whatever its flag says: a batch that
            begins in the middle of a traversal path treats its first documents
            as a chain of their own.

    Returns:
        int64 indices, increasing, starting at 0 (empty for no documents).
    """
    starts = np.asarray(chain_starts, dtype=bool)
    if starts.ndim != 1:
        raise ValueError(f"chain_starts must be one-dimensional, got shape {starts.shape}")
    return np.flatnonzero(np.concatenate([[True], starts[1:]])) if len(starts) else np.zeros(0, np.int64)


def decompose_chains(
    tokens: Sequence[np.ndarray],
    doc_ids: Sequence[str] | np.ndarray,
    chain_starts: np.ndarray,
    config: DecomposeConfig = DecomposeConfig(),
) -> Decomposition:
    """Decomposes chains of consecutive documents, concatenated, into power-of-two buckets.

    Args:
        tokens: One token array per document in position order, the
            end-of-text id already appended when ``config.append_eot`` is on
            (as ``encode_documents`` returns them).
        doc_ids: One id per document.
        chain_starts: bool per document, True where a document starts a new
            chain (a traversal path start). The first document always starts a
            chain, whatever its flag says, so a batch that begins in the middle
            of a path treats its first documents as a chain of their own.
        config: Decomposition parameters.

    Returns:
        A :class:`Decomposition` whose units are the chains: a piece's
        ``doc_ids`` entry is the id of the document holding its first token and
        its ``offsets`` entry that token's offset within that document (a piece
        may continue into the chain's next documents); ``document_lengths`` and
        ``dropped_tokens`` hold one entry per *chain* (its token count, and its
        trailing tokens that went to no bucket). The draws of mode "random" are
        seeded by each chain's first document id.

    Raises:
        ValueError: If the arguments disagree in length.
    """
    lengths = np.fromiter((len(document) for document in tokens), dtype=np.int64, count=len(tokens))
    doc_ids = np.asarray(doc_ids, dtype=object)
    if len(doc_ids) != len(lengths):
        raise ValueError(f"{len(doc_ids)} doc_ids for {len(lengths)} documents")
    if len(chain_starts) != len(lengths):
        raise ValueError(f"chain_starts has {len(chain_starts)} entries for {len(lengths)} documents")
    first_documents = chain_first_documents(chain_starts)
    document_splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    chain_splits = np.append(document_splits[first_documents], document_splits[-1])
    values = np.concatenate(tokens) if len(tokens) else np.zeros(0, dtype=np.int32)
    # Pieces are named by chain index here and renamed below.
    by_chain = decompose_ragged(
        values, chain_splits, np.arange(len(chain_splits) - 1), config, seed_ids=doc_ids[first_documents]
    )
    buckets = {}
    for exponent, pieces in by_chain.buckets.items():
        chain = pieces.doc_ids.astype(np.int64)
        first_token = chain_splits[chain] + pieces.offsets
        # The last document starting at or before the token holds it (an empty
        # document shares its start with the next one and holds nothing).
        document = np.searchsorted(document_splits, first_token, side="right") - 1
        buckets[exponent] = BucketPieces(
            exponent=exponent,
            tokens=pieces.tokens,
            doc_ids=doc_ids[document],
            offsets=first_token - document_splits[document],
        )
    return Decomposition(
        config=config,
        buckets=buckets,
        document_lengths=by_chain.document_lengths,
        dropped_tokens=by_chain.dropped_tokens,
    )
