"""Tests of the packed-context kernel: shards packed apart and assembled equal one stream cut whole.

The oracle builds the stream as a Python list, one token at a time, and cuts it
with slices, so it shares no code path with the vectorised kernel.
"""

from __future__ import annotations

import collections

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus_files import sample_records
from corpusmill.transforms.decompose.tokenizer import load_tokenizer
from corpusmill.transforms.order.contexts import (
    CONTEXT_SCHEMA,
    Fragment,
    RaggedTokens,
    assemble_context,
    context_count,
    context_stats,
    pack_shard,
    shard_token_total,
    stream_offsets,
)

EOT = 99


def oracle_contexts(documents: list[list[int]], doc_ids: list[str], L: int, eot: int) -> list[dict]:
    """Context rows of the whole stream, built token by token."""
    stream, owners = [], []
    for index, document in enumerate(documents):
        for offset, token in enumerate(list(document) + [eot]):
            stream.append(int(token))
            owners.append((index, offset))
    rows = []
    for context in range(0, (len(stream) + L - 1) // L):
        tokens = stream[context * L:(context + 1) * L]
        owned = owners[context * L:(context + 1) * L]
        ids, offsets, starts = [], [], []
        for position, (index, offset) in enumerate(owned):
            if position == 0 or owned[position - 1][0] != index:
                ids.append(doc_ids[index])
                offsets.append(offset)
                starts.append(position)
        rows.append({"context": context, "tokens": tokens + [eot] * (L - len(tokens)), "num_tokens": len(tokens),
                     "doc_ids": ids, "doc_offsets": offsets, "piece_starts": starts})
    return rows


def pack_in_shards(documents, doc_ids, cuts, L, eot=EOT, ragged=False, tell_total=False) -> pa.Table:
    """Packs the documents split at ``cuts`` (document indices) and assembles the fragments, as the stage does."""
    bounds = [0, *cuts, len(documents)]
    shards = [(documents[a:b], doc_ids[a:b]) for a, b in zip(bounds, bounds[1:])]
    starts = stream_offsets([shard_token_total(tokens) for tokens, _ in shards])
    total = int(starts[-1])
    tables, by_context = [], collections.defaultdict(list)
    for (tokens, ids), start in zip(shards, starts):
        if ragged:
            lengths = [len(t) for t in tokens]
            values = np.concatenate(tokens) if tokens else np.zeros(0, np.int32)
            tokens = RaggedTokens(values, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
        table, fragments = pack_shard(tokens, ids, int(start), L, eot,
                                      stream_total=total if tell_total else None)
        assert table.schema.equals(CONTEXT_SCHEMA)
        assert len(fragments) <= 2
        tables.append(table)
        for fragment in fragments:
            by_context[fragment.context].append(fragment)
    for context, fragments in by_context.items():
        tables.append(assemble_context(context, fragments, L, eot, total))
    table = pa.concat_tables(tables)
    return table.sort_by("context")


def rebuild_documents(table: pa.Table) -> dict[str, list[list]]:
    """Each document's pieces, from the rows alone: ``{id: [(offset, tokens), ...]}``."""
    pieces = collections.defaultdict(list)
    for row in table.to_pylist():
        ends = row["piece_starts"][1:] + [row["num_tokens"]]
        for doc_id, offset, start, end in zip(row["doc_ids"], row["doc_offsets"], row["piece_starts"], ends):
            pieces[doc_id].append((offset, row["tokens"][start:end]))
    return pieces


def assert_well_formed(table: pa.Table, documents, doc_ids, L, eot):
    """Contexts 0..n-1, all full but the last, and every document's tokens once, in order, EOT last."""
    rows = table.to_pylist()
    total = sum(len(d) + 1 for d in documents)
    assert [row["context"] for row in rows] == list(range(context_count(total, L)))
    for row in rows[:-1]:
        assert row["num_tokens"] == L and len(row["tokens"]) == L
    if rows:
        last = rows[-1]
        assert 0 < last["num_tokens"] <= L and len(last["tokens"]) == L
        assert last["tokens"][last["num_tokens"]:] == [eot] * (L - last["num_tokens"])
    pieces = rebuild_documents(table)
    assert sorted(pieces) == sorted(doc_ids)
    for document, doc_id in zip(documents, doc_ids):
        got = sorted(pieces[doc_id], key=lambda piece: piece[0])
        offsets = [offset for offset, _ in got]
        lengths = np.cumsum([0] + [len(tokens) for _, tokens in got])[:-1].tolist()
        assert offsets == lengths, doc_id  # contiguous, no repeat, starting at 0
        assert [t for _, tokens in got for t in tokens] == [int(t) for t in document] + [eot], doc_id


@st.composite
def split_streams(draw):
    """Documents (empty ones, ones several contexts long), a context length and shard cuts (empty shards too)."""
    L = draw(st.integers(1, 12))
    lengths = draw(st.lists(st.one_of(st.integers(0, 3), st.integers(0, 5 * L)), min_size=0, max_size=25))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    documents = [rng.integers(0, 1000, n).astype(np.int32) for n in lengths]
    cuts = sorted(draw(st.lists(st.integers(0, len(lengths)), max_size=12)))
    return documents, [f"doc-{i:03d}" for i in range(len(lengths))], cuts, L


@settings(max_examples=400, deadline=None)
@given(case=split_streams(), ragged=st.booleans(), tell_total=st.booleans())
def test_shards_assemble_to_the_oracle(case, ragged, tell_total):
    documents, doc_ids, cuts, L = case
    table = pack_in_shards(documents, doc_ids, cuts, L, ragged=ragged, tell_total=tell_total)
    assert table.to_pylist() == oracle_contexts(documents, doc_ids, L, EOT)
    assert_well_formed(table, documents, doc_ids, L, EOT)


def test_many_shards_equal_one_shard_at_scale():
    """L = 8192, documents from 0 to 5 L tokens, 60 shards cut at random (some empty, many under L)."""
    rng = np.random.default_rng(7)
    L = 8192
    lengths = np.concatenate([rng.geometric(1 / 900, 600) - 1, [0, 0, 5 * L + 17, 3 * L, L - 1, L, L + 1]])
    rng.shuffle(lengths)
    documents = [rng.integers(0, 100_000, n).astype(np.int32) for n in lengths]
    doc_ids = [f"d{i}" for i in range(len(documents))]
    total = int(lengths.sum()) + len(lengths)
    whole, fragments = pack_shard(documents, doc_ids, 0, L, EOT, stream_total=total)
    assert fragments == []
    cuts = np.sort(rng.integers(0, len(documents), 60)).tolist()
    split = pack_in_shards(documents, doc_ids, cuts, L)
    assert split.equals(whole)
    assert_well_formed(whole, documents, doc_ids, L, EOT)
    # Without stream_total the one shard leaves its short final context as a fragment.
    rows, (tail,) = pack_shard(documents, doc_ids, 0, L, EOT)
    assert rows.num_rows == whole.num_rows - 1 and tail.context == whole.num_rows - 1 and tail.start == 0
    assert pa.concat_tables([rows, assemble_context(tail.context, [tail], L, EOT, total)]).equals(whole)
    stats = context_stats(whole)
    assert stats["tokens"] == total and stats["contexts"] == context_count(total, L)
    assert stats["padding_tokens"] == whole.num_rows * L - total
    assert stats["pieces"] == sum(len(ids) for ids in whole.column("doc_ids").to_pylist())


def test_a_shard_shorter_than_a_context_gives_one_inner_fragment():
    documents = [np.arange(3, dtype=np.int32), np.zeros(0, np.int32)]  # 3 + 1 + 0 + 1 = 5 tokens
    table, (fragment,) = pack_shard(documents, ["a", "b"], stream_start=10 * 16 + 4, context_length=16, eot=EOT)
    assert table.num_rows == 0
    assert fragment.context == 10 and fragment.start == 4
    assert fragment.tokens.tolist() == [0, 1, 2, EOT, EOT]
    assert fragment.doc_ids == ("a", "b")
    assert fragment.doc_offsets.tolist() == [0, 0] and fragment.piece_starts.tolist() == [4, 8]
    assert fragment.tokens.dtype == np.int32 and fragment.piece_starts.dtype == np.int32


def test_head_and_tail_fragments_around_whole_contexts():
    # Tokens 6..29 of the stream with L = 8: head [6, 8), contexts 1 and 2, tail [24, 30).
    documents = [np.arange(23, dtype=np.int32)]
    table, (head, tail) = pack_shard(documents, ["x"], 6, 8, EOT)
    assert table.column("context").to_pylist() == [1, 2]
    assert table.column("doc_offsets").to_pylist() == [[2], [10]]
    assert (head.context, head.start, head.doc_offsets.tolist()) == (0, 6, [0])
    assert (tail.context, tail.start, tail.doc_offsets.tolist()) == (3, 0, [18])
    assert tail.tokens.tolist() == [18, 19, 20, 21, 22, EOT]


def test_empty_shard_and_inputs():
    table, fragments = pack_shard([], [], 123, 8, EOT)
    assert table.num_rows == 0 and table.schema.equals(CONTEXT_SCHEMA) and fragments == []
    assert shard_token_total([]) == 0
    assert shard_token_total([np.zeros(0, np.int32), np.arange(4)]) == 6
    assert stream_offsets([3, 0, 5]).tolist() == [0, 3, 3, 8]
    with pytest.raises(ValueError, match="doc_ids"):
        pack_shard([np.arange(3)], ["a", "b"], 0, 8, EOT)
    with pytest.raises(ValueError, match="values, offsets"):
        pack_shard((np.arange(3), np.arange(3), np.arange(3)), ["a"], 0, 8, EOT)
    with pytest.raises(ValueError, match="stream_total"):
        pack_shard([np.arange(3)], ["a"], 0, 8, EOT, stream_total=3)


def test_arrow_list_column_and_sliced_column_are_accepted():
    rng = np.random.default_rng(3)
    documents = [rng.integers(0, 50, n).astype(np.int32) for n in (5, 0, 17, 9, 30, 2)]
    ids = [f"d{i}" for i in range(len(documents))]
    column = pa.array([d.tolist() for d in documents], type=pa.list_(pa.int32()))
    total = sum(len(d) + 1 for d in documents)
    want, _ = pack_shard(documents, ids, 0, 7, EOT, stream_total=total)
    got, _ = pack_shard(pa.chunked_array([column]), ids, 0, 7, EOT, stream_total=total)
    assert got.equals(want)
    id_column = pa.chunked_array([pa.array(ids[:2], pa.large_string()), pa.array(ids[2:], pa.large_string())])
    got, _ = pack_shard(column, id_column, 0, 7, EOT, stream_total=total)
    assert got.equals(want)
    # A slice keeps its parent's values buffer; offsets must be read relative to it.
    tail_total = sum(len(d) + 1 for d in documents[2:])
    want, want_fragments = pack_shard(documents[2:], ids[2:], 100, 7, EOT)
    got, got_fragments = pack_shard(column.slice(2), ids[2:], 100, 7, EOT)
    assert got.equals(want) and shard_token_total(column.slice(2)) == tail_total
    assert [f.tokens.tolist() for f in got_fragments] == [f.tokens.tolist() for f in want_fragments]


def fragments_of(documents, ids, cuts, L):
    bounds = [0, *cuts, len(documents)]
    starts = stream_offsets([shard_token_total(documents[a:b]) for a, b in zip(bounds, bounds[1:])])
    out = []
    for (a, b), start in zip(zip(bounds, bounds[1:]), starts):
        out += pack_shard(documents[a:b], ids[a:b], int(start), L, EOT)[1]
    return out, int(starts[-1])


def test_bad_tiling_raises_naming_the_context():
    documents = [np.arange(n, dtype=np.int32) for n in (3, 2, 4, 1, 3)]  # 18 tokens
    ids = list("abcde")
    fragments, total = fragments_of(documents, ids, [1, 2, 3, 4], L=16)
    first = [f for f in fragments if f.context == 0]
    assert len(first) == 5 and total == 18
    assert assemble_context(0, first[::-1], 16, EOT, total).column("num_tokens").to_pylist() == [16]
    with pytest.raises(ValueError, match="context 0: gap"):
        assemble_context(0, first[:2] + first[3:], 16, EOT, total)
    with pytest.raises(ValueError, match="context 0: overlap"):
        assemble_context(0, first + first[2:3], 16, EOT, total)
    with pytest.raises(ValueError, match=r"context 0: fragments cover \[0, 14\), expected \[0, 16\)"):
        assemble_context(0, first[:-1], 16, EOT, total)
    with pytest.raises(ValueError, match="context 0: gap"):
        assemble_context(0, first[1:], 16, EOT, total)
    with pytest.raises(ValueError, match="context 1: got a fragment of context 0"):
        assemble_context(1, first, 16, EOT, total)
    with pytest.raises(ValueError, match="context 2 lies outside"):
        assemble_context(2, [], 16, EOT, total)
    with pytest.raises(ValueError, match="context 0: fragments cover"):
        assemble_context(0, [], 16, EOT, total)
    empty = Fragment(0, 0, np.zeros(0, np.int32), (), np.zeros(0, np.int64), np.zeros(0, np.int32))
    with pytest.raises(ValueError, match="context 0: empty fragment"):
        assemble_context(0, [empty, *first], 16, EOT, total)


def test_fragments_pickle():
    import pickle

    (fragment,) = pack_shard([np.arange(3, dtype=np.int32)], ["a"], 2, 16, EOT)[1]
    back = pickle.loads(pickle.dumps(fragment))
    assert back.context == fragment.context and back.doc_ids == fragment.doc_ids
    assert np.array_equal(back.tokens, fragment.tokens)


def test_context_stats_add_up_and_count_pairs():
    documents = [np.arange(n, dtype=np.int32) for n in (2, 6, 0)]  # stream: 3 + 7 + 1 = 11 tokens
    table, _ = pack_shard(documents, ["a", "b", "c"], 0, 8, EOT, stream_total=11)
    # Context 0 = a(3) b(5); context 1 = b(2) c(1), 3 real tokens.
    assert context_stats(table) == {"contexts": 2, "tokens": 11, "padding_tokens": 5, "pieces": 4,
                                    "attention_pairs": 28 + 3, "same_document_pairs": 3 + 10 + 1 + 0}
    assert context_stats(CONTEXT_SCHEMA.empty_table())["contexts"] == 0


def test_real_text_with_cl100k():
    """Real documentation tokenized by cl100k, cut into 23 shards; decoding the pieces gives the texts back."""
    tokenizer = load_tokenizer("tiktoken:cl100k_base", num_threads=2)
    records = sample_records(400)
    texts = [r["text"] for r in records]
    ids = [r["id"] for r in records]
    documents = tokenizer.encode_batch(texts)
    L = 2048
    rng = np.random.default_rng(11)
    cuts = np.sort(rng.integers(0, len(documents), 22)).tolist()
    table = pack_in_shards(documents, ids, cuts, L, eot=tokenizer.eot_id)
    total = sum(len(d) + 1 for d in documents)
    whole, _ = pack_shard(documents, ids, 0, L, tokenizer.eot_id, stream_total=total)
    assert table.equals(whole)
    assert_well_formed(table, documents, ids, L, tokenizer.eot_id)
    pieces = rebuild_documents(table)
    for doc_id, text in zip(ids[:50], texts[:50]):
        tokens = [t for _, part in sorted(pieces[doc_id], key=lambda p: p[0]) for t in part]
        assert tokens[-1] == tokenizer.eot_id
        assert tokenizer.decode(tokens[:-1]) == text
