"""Tests of Dataset Decomposition over ICP chains: one-document chains equal decompose_documents,
and every chain is rebuilt from its pieces (doc_id, offset) up to its dropped remainder."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus_files import sample_records
from corpusmill.schemas.config import DecomposeConfig
from corpusmill.transforms.decompose.chains import chain_first_documents, decompose_chains
from corpusmill.transforms.decompose.decomposition import decompose_documents, plan_document
from corpusmill.transforms.decompose.tokenizer import encode_documents, load_tokenizer


def assert_same_decomposition(got, want):
    assert sorted(got.buckets) == sorted(want.buckets)
    for k in want.buckets:
        np.testing.assert_array_equal(got.buckets[k].tokens, want.buckets[k].tokens)
        assert got.buckets[k].tokens.dtype == want.buckets[k].tokens.dtype
        assert got.buckets[k].doc_ids.tolist() == want.buckets[k].doc_ids.tolist()
        np.testing.assert_array_equal(got.buckets[k].offsets, want.buckets[k].offsets)
    np.testing.assert_array_equal(got.document_lengths, want.document_lengths)
    np.testing.assert_array_equal(got.dropped_tokens, want.dropped_tokens)


def rebuild_chains(decomposition, documents, doc_ids, chain_starts):
    """Checks that each chain's pieces, placed by (doc_id, offset), tile the chain up to its dropped tail."""
    lengths = [len(d) for d in documents]
    splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    where = {doc_id: int(splits[i]) for i, doc_id in enumerate(doc_ids)}
    stream = np.concatenate(documents) if documents else np.zeros(0, np.int32)
    placed = []  # (global start, tokens)
    for pieces in decomposition.buckets.values():
        for tokens, doc_id, offset in zip(pieces.tokens, pieces.doc_ids, pieces.offsets):
            document = doc_ids.index(doc_id)
            assert 0 <= offset < lengths[document], (doc_id, offset)  # the first token lies in that document
            placed.append((where[doc_id] + int(offset), tokens))
    placed.sort(key=lambda p: p[0])
    firsts = chain_first_documents(np.asarray(chain_starts))
    chain_bounds = list(zip(splits[firsts].tolist(), [*splits[firsts[1:]].tolist(), int(splits[-1])]))
    assert decomposition.document_lengths.tolist() == [b - a for a, b in chain_bounds]
    shortest = decomposition.config.piece_length(decomposition.config.min_exp)
    cursor = 0
    for (a, b), dropped in zip(chain_bounds, decomposition.dropped_tokens.tolist()):
        assert 0 <= dropped < shortest
        position = a
        while cursor < len(placed) and placed[cursor][0] < b:
            start, tokens = placed[cursor]
            assert start == position, "pieces of a chain must follow one another without gap or overlap"
            np.testing.assert_array_equal(tokens, stream[start:start + len(tokens)])
            position += len(tokens)
            cursor += 1
        assert position == b - dropped, "a chain's pieces end where its dropped remainder begins"
        assert position <= b
    assert cursor == len(placed)


CONFIGS = st.builds(
    lambda min_exp, span, mode, plus_one, seed: DecomposeConfig(
        min_exp=min_exp, max_exp=min_exp + span, mode=mode, plus_one=plus_one, seed=seed),
    min_exp=st.integers(0, 4), span=st.integers(0, 3), mode=st.sampled_from(["random", "cap"]),
    plus_one=st.booleans(), seed=st.integers(0, 2**20))


@st.composite
def chained_documents(draw):
    lengths = draw(st.lists(st.one_of(st.integers(0, 4), st.integers(0, 200)), max_size=30))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    documents = [rng.integers(0, 1000, n).astype(np.int32) for n in lengths]
    starts = draw(st.lists(st.booleans(), min_size=len(lengths), max_size=len(lengths)))
    return documents, [f"doc-{i}" for i in range(len(lengths))], np.asarray(starts, dtype=bool)


@settings(max_examples=300, deadline=None)
@given(case=chained_documents(), config=CONFIGS)
def test_one_document_chains_equal_decompose_documents(case, config):
    documents, doc_ids, _ = case
    got = decompose_chains(documents, doc_ids, np.ones(len(documents), dtype=bool), config)
    assert_same_decomposition(got, decompose_documents(documents, doc_ids, config))


@settings(max_examples=300, deadline=None)
@given(case=chained_documents(), config=CONFIGS)
def test_pieces_rebuild_every_chain(case, config):
    documents, doc_ids, starts = case
    decomposition = decompose_chains(documents, doc_ids, starts, config)
    rebuild_chains(decomposition, documents, doc_ids, starts)


@settings(max_examples=100, deadline=None)
@given(case=chained_documents(), config=CONFIGS)
def test_chains_are_cut_as_single_documents_seeded_by_their_first_id(case, config):
    """Each chain gets exactly the plan of one document as long as the chain, under its first document's id."""
    documents, doc_ids, starts = case
    decomposition = decompose_chains(documents, doc_ids, starts, config)
    firsts = chain_first_documents(starts)
    lengths = decomposition.document_lengths.tolist()
    splits = np.concatenate([[0], np.cumsum([len(d) for d in documents])])
    planned = []
    for first, length in zip(firsts.tolist(), lengths):
        pieces, _ = plan_document(length, config, doc_ids[first])
        planned += [(int(splits[first]) + offset, exponent) for offset, exponent in pieces]
    where = {doc_id: int(splits[i]) for i, doc_id in enumerate(doc_ids)}
    got = sorted((where[d] + int(o), k) for k, p in decomposition.buckets.items() for d, o in zip(p.doc_ids, p.offsets))
    assert got == sorted(planned)


def test_pieces_span_documents_and_name_the_first_tokens_document():
    documents = [np.arange(100 * i, 100 * i + 100, dtype=np.int32) for i in range(6)]  # 600 tokens, one chain
    ids = [f"d{i}" for i in range(6)]
    config = DecomposeConfig(min_exp=4, max_exp=8, mode="cap", plus_one=True)
    decomposition = decompose_chains(documents, ids, np.array([True, False, False, False, False, False]), config)
    bucket = decomposition.buckets[8]
    # 600 = 257 + 257 + 86: two 2^8 + 1 pieces, then 86 left -> 2^6 + 1 = 65 -> 21 left -> 2^4 + 1 = 17 -> 4 dropped.
    assert bucket.doc_ids.tolist() == ["d0", "d2"] and bucket.offsets.tolist() == [0, 57]
    assert bucket.tokens[0].tolist() == list(range(257))  # runs through d0, d1 into d2
    assert bucket.tokens[1].tolist() == list(range(257, 514))
    assert decomposition.buckets[6].doc_ids.tolist() == ["d5"] and decomposition.buckets[6].offsets.tolist() == [14]
    assert decomposition.buckets[4].doc_ids.tolist() == ["d5"] and decomposition.buckets[4].offsets.tolist() == [79]
    assert decomposition.dropped_tokens.tolist() == [4] and decomposition.document_lengths.tolist() == [600]


def test_first_document_always_starts_a_chain_and_empty_documents_hold_nothing():
    config = DecomposeConfig(min_exp=2, max_exp=3, mode="cap", plus_one=False)
    documents = [np.zeros(0, np.int32), np.arange(5, dtype=np.int32), np.zeros(0, np.int32),
                 np.arange(5, 11, dtype=np.int32)]
    ids = ["e0", "a", "e1", "b"]
    flagged = decompose_chains(documents, ids, np.array([True, False, True, False]), config)
    unflagged = decompose_chains(documents, ids, np.array([False, False, True, False]), config)
    assert_same_decomposition(unflagged, flagged)
    # Chains: [e0 a] = 5 tokens, [e1 b] = 6 tokens; each cut into one 4-piece, remainders dropped.
    assert flagged.buckets[2].doc_ids.tolist() == ["a", "b"]
    assert flagged.buckets[2].offsets.tolist() == [0, 0]
    assert flagged.document_lengths.tolist() == [5, 6] and flagged.dropped_tokens.tolist() == [1, 2]
    empty = decompose_chains([], [], np.zeros(0, dtype=bool), config)
    assert empty.total_tokens == 0 and all(len(p) == 0 for p in empty.buckets.values())
    with pytest.raises(ValueError, match="chain_starts"):
        decompose_chains(documents, ids, np.ones(3, dtype=bool), config)
    with pytest.raises(ValueError, match="doc_ids"):
        decompose_chains(documents, ids[:3], np.ones(4, dtype=bool), config)


def test_deterministic_and_independent_of_the_batch():
    """Same output on every call, and a chain's pieces do not depend on the chains around it."""
    rng = np.random.default_rng(5)
    lengths = rng.integers(0, 3000, 40)
    documents = [rng.integers(0, 50_000, n).astype(np.int32) for n in lengths]
    ids = [f"d{i}" for i in range(40)]
    starts = rng.random(40) < 0.3
    config = DecomposeConfig(min_exp=6, max_exp=9, mode="random", seed=3)
    once = decompose_chains(documents, ids, starts, config)
    assert_same_decomposition(decompose_chains(documents, ids, starts, config), once)
    firsts = chain_first_documents(starts).tolist()
    a, b = firsts[1], (firsts[2] if len(firsts) > 2 else 40)
    alone = decompose_chains(documents[a:b], ids[a:b], starts[a:b], config)
    for k, pieces in alone.buckets.items():
        mine = np.isin(once.buckets[k].doc_ids.astype(str), ids[a:b])
        np.testing.assert_array_equal(once.buckets[k].tokens[mine], pieces.tokens)
        np.testing.assert_array_equal(once.buckets[k].offsets[mine], pieces.offsets)
    # Another seed moves the random cuts of chains longer than 2^max_exp.
    reseeded = decompose_chains(documents, ids, starts, DecomposeConfig(min_exp=6, max_exp=9, mode="random", seed=4))
    assert [len(p) for p in reseeded.buckets.values()] != [len(p) for p in once.buckets.values()]


def test_real_text_chains_with_cl100k():
    tokenizer = load_tokenizer("tiktoken:cl100k_base", num_threads=2)
    records = sample_records(120)
    documents = encode_documents(tokenizer, [r["text"] for r in records])
    ids = [r["id"] for r in records]
    starts = np.random.default_rng(2).random(len(ids)) < 0.25
    config = DecomposeConfig(min_exp=8, max_exp=11)
    decomposition = decompose_chains(documents, ids, starts, config)
    rebuild_chains(decomposition, documents, ids, starts)
    # Some piece carries an end-of-text id before its last token: it crosses into the next document.
    crossing = sum(int((pieces.tokens[:, :-1] == tokenizer.eot_id).any(axis=1).sum())
                   for pieces in decomposition.buckets.values())
    assert crossing > 0
    assert decomposition.total_tokens == sum(len(d) for d in documents)
