"""Tests of corpusmill.transforms.decompose.decomposition against a transcription of the reference.

The oracle below restates ``get_binary`` of Apple's ``make_dd_buckets.py``: it
slices a Python list front to back, so it shares no code path with the
vectorised kernel.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from corpusmill.schemas.config import DecomposeConfig
from corpusmill.transforms.decompose.decomposition import (
    attention_cost,
    average_context_length,
    bucket_dirname,
    concat_chunk_lengths,
    cross_document_attention_fraction,
    decompose_documents,
    decompose_ragged,
    decomposition_summary,
    document_length_histogram,
    plan_document,
    random_exponent_probabilities,
    token_retention,
)
from hypothesis import given, settings
from hypothesis import strategies as st


def reference_decomposition(tokens, min_exp, max_exp, drawn_exponents=None, plus_one=True):
    """The reference algorithm, restated.

    Args:
        tokens: One document's tokens as a list.
        min_exp, max_exp: Bucket exponent range.
        drawn_exponents: Iterator of exponents to use whenever the remainder is
            longer than 2^max_exp (the reference draws them at random); None
            caps them at max_exp.
        plus_one: Pieces of 2^k + 1 tokens (the reference); False: 2^k.

    Returns:
        (dict exponent -> list of pieces in document order, dropped token count)
    """
    extra = 1 if plus_one else 0
    buckets = {}
    rest = list(tokens)
    while len(rest) > extra:
        exponent = int(math.log2(len(rest) - extra))
        if exponent < min_exp:
            break
        if exponent > max_exp:
            exponent = max_exp if drawn_exponents is None else next(drawn_exponents)
        size = 2**exponent + extra
        buckets.setdefault(exponent, []).append(rest[:size])
        rest = rest[size:]
    return buckets, len(rest)


def pieces_of_document(decomposition, doc_id):
    """The kernel's pieces of one document, as the oracle lays them out."""
    result = {}
    for exponent, pieces in decomposition.buckets.items():
        mine = [
            (offset, row.tolist())
            for row, owner, offset in zip(pieces.tokens, pieces.doc_ids, pieces.offsets)
            if owner == doc_id
        ]
        if mine:
            result[exponent] = [row for _, row in sorted(mine)]
    return result


def drawn_exponents_of(length, config, doc_id):
    """Exponents the kernel drew for one document, in draw order."""
    pieces, _ = plan_document(length, config, doc_id)
    drawn = []
    remaining = length
    for _, exponent in pieces:
        if (remaining - config.extra).bit_length() - 1 > config.max_exp:
            drawn.append(exponent)
        remaining -= (1 << exponent) + config.extra
    return drawn


@pytest.mark.parametrize("plus_one", [True, False])
@pytest.mark.parametrize("mode", ["cap", "random"])
def test_matches_reference_on_real_documents(real_documents, mode, plus_one):
    config = DecomposeConfig(mode=mode, plus_one=plus_one, seed=7)
    doc_ids = [f"doc-{i}" for i in range(len(real_documents))]
    decomposition = decompose_documents(real_documents, doc_ids, config)
    lengths = [len(d) for d in real_documents]
    # The sample must exercise both long documents and dropped remainders.
    assert max(lengths) > 2**14 and min(lengths) < 2**8
    for document, doc_id, dropped in zip(real_documents, doc_ids, decomposition.dropped_tokens):
        drawn = None
        if mode == "random":
            drawn = iter(drawn_exponents_of(len(document), config, doc_id))
        expected, expected_dropped = reference_decomposition(
            document.tolist(), 8, 13, drawn, plus_one=plus_one
        )
        assert pieces_of_document(decomposition, doc_id) == expected
        assert dropped == expected_dropped
    assert decomposition.kept_tokens == sum(p.tokens.size for p in decomposition.buckets.values())


def test_bucket_shapes_and_offsets(real_documents):
    config = DecomposeConfig(mode="cap")
    decomposition = decompose_documents(real_documents, list(range(len(real_documents))), config)
    assert sorted(decomposition.buckets) == list(range(8, 14))
    for exponent, pieces in decomposition.buckets.items():
        assert pieces.tokens.shape == (len(pieces), 2**exponent + 1)
        assert pieces.tokens.dtype == np.int32
        for row, doc_id, offset in zip(pieces.tokens[:20], pieces.doc_ids, pieces.offsets):
            document = real_documents[doc_id]
            assert np.array_equal(row, document[offset : offset + len(row)])


@settings(max_examples=300, deadline=None)
@given(
    length=st.integers(0, 6000),
    min_exp=st.integers(0, 5),
    span=st.integers(0, 5),
    plus_one=st.booleans(),
)
def test_cap_mode_plan_matches_reference(length, min_exp, span, plus_one):
    config = DecomposeConfig(
        min_exp=min_exp, max_exp=min_exp + span, mode="cap", plus_one=plus_one
    )
    tokens = list(range(length))
    expected, expected_dropped = reference_decomposition(
        tokens, config.min_exp, config.max_exp, plus_one=plus_one
    )
    pieces, dropped = plan_document(length, config)
    got = {}
    for offset, exponent in pieces:
        got.setdefault(exponent, []).append(tokens[offset : offset + config.piece_length(exponent)])
    assert got == expected
    assert dropped == expected_dropped


@settings(max_examples=200, deadline=None)
@given(length=st.integers(0, 40000), seed=st.integers(0, 2**32), plus_one=st.booleans())
def test_random_mode_plan_obeys_the_rules(length, seed, plus_one):
    config = DecomposeConfig(min_exp=4, max_exp=8, mode="random", seed=seed, plus_one=plus_one)
    pieces, dropped = plan_document(length, config, doc_id="d")
    remaining, position = length, 0
    for offset, exponent in pieces:
        assert offset == position  # contiguous, no shared boundary token
        natural = (remaining - config.extra).bit_length() - 1
        if natural <= config.max_exp:
            assert exponent == natural
        else:
            assert config.min_exp <= exponent <= config.max_exp
        position += config.piece_length(exponent)
        remaining -= config.piece_length(exponent)
    assert dropped == remaining == length - position
    assert dropped <= config.extra or (dropped - config.extra).bit_length() - 1 < config.min_exp


def test_random_draws_follow_reference_distribution():
    config = DecomposeConfig(min_exp=8, max_exp=13, mode="random", seed=3)
    drawn = list(
        itertools.chain.from_iterable(
            drawn_exponents_of(200_000, config, doc_id) for doc_id in range(200)
        )
    )
    counts = np.bincount(drawn, minlength=14)[8:14]
    expected = random_exponent_probabilities(config) * len(drawn)
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    assert len(drawn) > 20_000
    assert chi_square < 30  # 5 degrees of freedom: p < 1e-5 for a correct sampler


def test_random_mode_is_deterministic_per_document(real_documents):
    documents = real_documents
    half = len(documents) // 2
    ids = [f"doc-{i}" for i in range(len(documents))]
    config = DecomposeConfig(mode="random", seed=11)
    whole = decompose_documents(documents, ids, config)
    # Split into other batches and reversed order: each document's pieces only
    # depend on (seed, doc_id), never on its batch or position.
    halves = [
        decompose_documents(documents[half:][::-1], ids[half:][::-1], config),
        decompose_documents(documents[:half], ids[:half], config),
    ]
    for doc_id in ids:
        expected = pieces_of_document(whole, doc_id)
        got = pieces_of_document(halves[0], doc_id) or pieces_of_document(halves[1], doc_id)
        assert got == expected
    other_seed = decompose_documents(documents, ids, DecomposeConfig(mode="random", seed=12))
    long_ids = [i for i, d in zip(ids, documents) if len(d) > 2**14 + 1]
    assert long_ids
    assert any(pieces_of_document(other_seed, i) != pieces_of_document(whole, i) for i in long_ids)


def test_ragged_input_equals_list_input(real_documents):
    documents = real_documents[:30]
    lengths = np.array([len(d) for d in documents])
    row_splits = np.concatenate([[0], np.cumsum(lengths)])
    config = DecomposeConfig(mode="cap")
    a = decompose_ragged(np.concatenate(documents), row_splits, list(range(30)), config)
    b = decompose_documents(documents, list(range(30)), config)
    for k in config.exponents:
        assert np.array_equal(a.buckets[k].tokens, b.buckets[k].tokens)
        assert np.array_equal(a.buckets[k].offsets, b.buckets[k].offsets)
    with pytest.raises(ValueError, match="row_splits"):
        decompose_ragged(np.zeros(3), np.array([0, 3]), ["a", "b"], config)


def test_edge_documents():
    config = DecomposeConfig(min_exp=2, max_exp=3, mode="cap")
    documents = [np.zeros(0, np.int32), np.array([7], np.int32), np.arange(5, dtype=np.int32)]
    decomposition = decompose_documents(documents, ["empty", "eot-only", "five"], config)
    assert decomposition.dropped_tokens.tolist() == [0, 1, 0]
    assert decomposition.buckets[2].tokens.tolist() == [[0, 1, 2, 3, 4]]
    assert len(decomposition.buckets[3]) == 0
    assert token_retention(decomposition) == pytest.approx(5 / 6)


def test_record_batch_columns(real_documents):
    decomposition = decompose_documents(real_documents[:20], [f"d{i}" for i in range(20)])
    pieces = next(p for p in decomposition.buckets.values() if len(p))
    batch = pieces.to_record_batch()
    assert batch.schema.names == ["tokens", "doc_id", "offset"]
    assert str(batch.schema.field("tokens").type) == "list<item: int32>"
    assert batch.column(0).to_pylist() == pieces.tokens.tolist()
    assert bucket_dirname(8) == "len-00256" and bucket_dirname(13) == "len-08192"


# -- metrics ------------------------------------------------------------------


def brute_force_cross_fraction(document_lengths, sequence_length):
    """Counts (query, earlier key) pairs token by token."""
    owners = np.repeat(np.arange(len(document_lengths)), document_lengths)
    cross = total = 0
    for start in range(0, len(owners), sequence_length):
        chunk = owners[start : start + sequence_length]
        for query in range(len(chunk)):
            total += query
            cross += int((chunk[:query] != chunk[query]).sum())
    return cross / total if total else 0.0


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(0, 40), max_size=12),
    st.integers(1, 32),
)
def test_cross_document_fraction_matches_brute_force(document_lengths, sequence_length):
    assert cross_document_attention_fraction(
        np.array(document_lengths, dtype=np.int64), sequence_length
    ) == pytest.approx(brute_force_cross_fraction(document_lengths, sequence_length))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 3000), max_size=20))
def test_length_metrics_match_definitions(lengths):
    lengths_array = np.array(lengths, dtype=np.int64)
    tokens = sum(lengths)
    pairs = sum(n * (n - 1) // 2 for n in lengths)
    assert average_context_length(lengths_array) == pytest.approx(pairs / tokens if tokens else 0.0)
    assert attention_cost(lengths_array) == sum(n * n for n in lengths)
    histogram = document_length_histogram(lengths_array)
    expected = {}
    for n in lengths:
        key = -1 if n == 0 else int(math.floor(math.log2(n)))
        expected[key] = expected.get(key, 0) + 1
    assert histogram == expected


def test_concat_chunk_lengths():
    assert concat_chunk_lengths(10, 4).tolist() == [4, 4, 2]
    assert concat_chunk_lengths(8, 4).tolist() == [4, 4]


def test_summary_on_real_documents(real_documents):
    decomposition = decompose_documents(real_documents, list(range(len(real_documents))))
    summary = decomposition_summary(decomposition)
    json.dumps(summary)
    assert summary["kept_tokens"] + summary["dropped_tokens"] == summary["input_tokens"]
    assert 0.9 < summary["token_retention"] <= 1.0
    # Short pieces cost less attention than full 8192-token chunks...
    assert summary["attention_cost_ratio"] < 1.0
    assert summary["average_context_length"] < summary["baseline_average_context_length"]
    # ...and concat-and-chunk mixes documents that DD keeps apart.
    assert 0.0 < summary["baseline_cross_document_attention_fraction"] < 1.0
    assert sum(summary["tokens_per_bucket"].values()) == summary["kept_tokens"]
