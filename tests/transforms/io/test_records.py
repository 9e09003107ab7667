"""Record values: numeric timestamps, ids and the id a rejected row carries, on both validation paths."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corpusmill.schemas.documents import DOCUMENT_BATCH_SCHEMA
from corpusmill.transforms.io.columnar import _columnar_timestamps
from corpusmill.transforms.io.unique_ids import resolve_duplicate_ids
from corpusmill.transforms.io.validate import BatchBuilder, FieldMap
from corpusmill.transforms.io.values import MAX_MICROS, MIN_MICROS, ArrowTimestamp, to_micros

UTC = dt.timezone.utc
# 2023-11-14T22:13:20.123456789Z in every unit a producer may write.
INSTANT = dt.datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)


def _lines(records, file="f.jsonl"):
    """Files records as JSONL lines, one by one; returns (documents, rejected rows)."""
    builder = BatchBuilder(FieldMap(), 10**6, 1000)
    for index, record in enumerate(records):
        builder.add_json_line((json.dumps(record) + "\n").encode(), file, index)
    return _taken(builder)


def _taken(builder):
    out = list(builder.take(final=True))
    docs = pa.Table.from_batches([b for t, b in out if t == "docs"], schema=DOCUMENT_BATCH_SCHEMA)
    return docs.to_pylist(), [r for t, b in out if t == "rejected" for r in b.to_pylist()]


def _table_both_ways(table, first_index=0):
    """Files one table through the columnar and the per-record path; asserts they agree."""
    results = []
    for columnar in (True, False):
        builder = BatchBuilder(FieldMap(), 10**6, 3, columnar=columnar)
        builder.add_table(table, "t.parquet", first_index)
        results.append(_taken(builder))
    assert results[0] == results[1]
    return results[0]


# -- numeric timestamps ----------------------------------------------------------


@pytest.mark.parametrize("value", [
    1_700_000_000.123456,  # seconds (float)
    1_700_000_000_123.456,  # milliseconds (float)
    1_700_000_000_123_456,  # microseconds
    1_700_000_000_123_456_789,  # nanoseconds: floored to the microsecond
    1_700_000_000_123_456_999,
])
def test_a_numeric_epoch_is_read_in_the_unit_its_magnitude_names(value):
    assert to_micros(value) == to_micros(INSTANT) == 1_700_000_000_123_456


@pytest.mark.parametrize("value, micros", [
    (10**11 - 1, (10**11 - 1) * 10**6),  # the last second (5138-11-16) ...
    (10**11, 10**11 * 10**3),  # ... and the first millisecond value (1973-03-03)
    (10**14 - 1, (10**14 - 1) * 10**3), (10**14, 10**14),
    (10**17 - 1, 10**17 - 1), (10**17, 10**14),
    (-62_135_596_800, -62_135_596_800 * 10**6),  # 0001-01-01 in seconds, the earliest allowed
    (-(10**11), -(10**11) * 10**3), (-(10**14), -(10**14)),  # negative bands mirror the positive ones
    (-5, -5_000_000), (0, 0), (-(10**17) - 1, -(10**14) - 1),  # ns floor towards the past
])
def test_band_boundaries(value, micros):
    assert to_micros(value) == micros


@pytest.mark.parametrize("value, words", [
    (10**25, "after year 9999"), (-(10**25), "before year 1"), (1e300, "after year 9999"),
    (float("nan"), "not a finite number"), (float("inf"), "not a finite number"),
    (-62_135_596_801, "before year 1"), (ArrowTimestamp(10**13, "s"), r"a timestamp\[s\] column"),
])
def test_out_of_range_numbers_raise_value_errors_that_say_why(value, words):
    with pytest.raises(ValueError, match=words):
        to_micros(value)


def test_epoch_milliseconds_and_microseconds_in_jsonl_are_kept_with_the_right_date():
    # ts_ms wrote year ~55,800; ts_us crashed the whole run with OverflowError.
    docs, rejected = _lines([
        {"id": "ms", "text": "a", "timestamp": 1_700_000_000_123},
        {"id": "us", "text": "b", "timestamp": 1_700_000_000_123_456},
        {"id": "ns", "text": "c", "timestamp": 1_700_000_000_123_456_789},
        {"id": "s", "text": "d", "timestamp": 1_700_000_000},
    ])
    assert rejected == []
    assert [d["timestamp"].year for d in docs] == [2023] * 4
    assert docs[1]["timestamp"] == docs[2]["timestamp"] == INSTANT


def test_out_of_range_epochs_are_rejected_per_record_with_their_id_and_a_detail():
    docs, rejected = _lines([
        {"id": "big", "text": "a", "timestamp": 10**25},
        {"id": "ok", "text": "b", "timestamp": 1_700_000_000},
        {"id": "huge-float", "text": "c", "timestamp": 1e300},
    ])
    assert [d["id"] for d in docs] == ["ok"]
    assert [(r["reason"], r["id"]) for r in rejected] == [
        ("invalid_timestamp", "big"), ("invalid_timestamp", "huge-float")]
    detail = rejected[0]["detail"]
    assert detail.startswith("'timestamp': 10000000000000000000000000 (read as epoch nanoseconds) is after year 9999")
    assert "milliseconds when < 1e14" in detail


def test_timestamp_columns_keep_their_declared_unit():
    # 5 in a timestamp[ms] column is 5 ms, whatever its magnitude would say.
    table = pa.table({"text": ["a", "b", "c", "d"],
                      "timestamp": pa.array([5, 1_700_000_000_123, None, -1], pa.timestamp("ms"))})
    docs, rejected = _table_both_ways(table)
    assert rejected == []
    assert [to_micros(d["timestamp"]) if d["timestamp"] else None for d in docs] == [
        5000, 1_700_000_000_123_000, None, -1000]


def test_nanosecond_columns_with_sub_microsecond_parts_are_kept():
    # Python datetimes cannot hold them; the row group used to be lost as corrupt_row_group.
    table = pa.table({"text": ["a", "b"],
                      "timestamp": pa.array([1_700_000_000_123_456_789, -1001], pa.timestamp("ns", "UTC"))})
    docs, rejected = _table_both_ways(table)
    assert rejected == [] and [d["timestamp"] for d in docs] == [
        INSTANT, dt.datetime(1969, 12, 31, 23, 59, 59, 999998, tzinfo=UTC)]


def test_timestamp_column_values_past_year_9999_are_rejected_row_by_row():
    table = pa.table({"id": ["a", "b", "c"], "text": ["x", "y", "z"],
                      "timestamp": pa.array([1, 10**13, -(10**13)], pa.timestamp("s"))})
    docs, rejected = _table_both_ways(table)
    assert [d["id"] for d in docs] == ["a"]
    assert [(r["reason"], r["id"], r["record_index"]) for r in rejected] == [
        ("invalid_timestamp", "b", 1), ("invalid_timestamp", "c", 2)]
    assert "after year 9999" in rejected[0]["detail"] and "before year 1" in rejected[1]["detail"]


_INTERESTING_INTS = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([b + d for b in (10**11, 10**14, 10**17) for d in (-1, 0, 1)]).flatmap(
        lambda v: st.sampled_from([v, -v])),
    st.integers(-(10**11), 10**11), st.integers(-(10**17), 10**17),
    st.sampled_from([MIN_MICROS, MAX_MICROS, MAX_MICROS + 1, MIN_MICROS - 1, 253402300799, 253402300800]))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.none(), _INTERESTING_INTS), min_size=1, max_size=12))
def test_vectorised_integer_epochs_equal_to_micros(values):
    micros, passed = _columnar_timestamps(pa.array(values, pa.int64()), len(values))
    expected = []
    for value in values:
        try:
            expected.append(to_micros(value))
        except ValueError:
            expected.append("rejected")
    got = [m if ok else "rejected" for m, ok in zip(micros.cast(pa.int64()).to_pylist(), passed.tolist())]
    assert got == expected


@settings(max_examples=120, deadline=None)
@given(st.sampled_from(["int64", "uint64", "float64", "s", "ms", "us", "ns"]),
       st.lists(st.one_of(st.none(), _INTERESTING_INTS), min_size=1, max_size=10),
       st.lists(st.sampled_from(["x", "", " "]), min_size=10, max_size=10))
def test_columnar_and_per_record_paths_agree_on_numeric_timestamps(kind, values, texts):
    if kind == "uint64":
        values = [None if v is None else abs(v) for v in values]
        column = pa.array(values, pa.uint64())
    elif kind == "float64":
        column = pa.array([None if v is None else float(v) for v in values], pa.float64())
    elif kind == "int64":
        column = pa.array(values, pa.int64())
    else:
        column = pa.array(values, pa.int64()).cast(pa.timestamp(kind))
    table = pa.table({"text": texts[: len(values)], "timestamp": column,
                      "id": [f"r{i}" for i in range(len(values))]})
    docs, rejected = _table_both_ways(table, first_index=7)
    assert len(docs) + len(rejected) == len(values)
    assert all(r["id"] == f"r{r['record_index'] - 7}" for r in rejected)


# -- ids -------------------------------------------------------------------------


def test_rejected_rows_carry_the_id_whenever_it_is_known_and_valid():
    docs, rejected = _lines([
        {"id": "good", "url": "u"},  # no text
        {"id": 5, "text": None},
        {"text": "   "},  # no id: the derived one
        {"id": ["a"]},  # invalid id and no text: the text reason, without an id
        {"id": "u", "text": "t", "url": 3},
    ])
    assert docs == []
    assert [(r["reason"], r["id"]) for r in rejected] == [
        ("missing_text", "good"), ("missing_text", "5"), ("empty_text", "f.jsonl#2"),
        ("missing_text", None), ("invalid_field_type", "u")]


def test_rejected_parquet_rows_carry_their_id_on_both_paths():
    bad = pa.array([b"ok", b"\xff", b"fine"], pa.binary())
    text = pa.Array.from_buffers(pa.string(), 3, bad.buffers(), 0)
    table = pa.table({"id": pa.array([1, None, 3]), "text": text, "url": pa.array([None, None, 4])})
    docs, rejected = _table_both_ways(table)
    assert [d["id"] for d in docs] == ["1"]
    assert [(r["reason"], r["id"]) for r in rejected] == [("invalid_utf8", "t.parquet#1"), ("invalid_field_type", "3")]


@pytest.mark.parametrize("blank", ["", " ", "\t\n", "\u3000", "\x1c\u2029"])
def test_whitespace_only_ids_are_invalid_on_both_paths(blank):
    docs, rejected = _lines([{"id": blank, "text": "a text"}])
    assert docs == [] and [r["reason"] for r in rejected] == ["invalid_id"]
    assert "empty or whitespace only" in rejected[0]["detail"] and rejected[0]["id"] is None
    docs, rejected = _table_both_ways(pa.table({"id": [blank, "b"], "text": ["a text", "b text"]}))
    assert [d["id"] for d in docs] == ["b"] and [r["reason"] for r in rejected] == ["invalid_id"]


def test_ids_with_surrounding_whitespace_are_kept_exactly():
    ids = [" a", "a ", "a", "\u200b"]  # U+200B is not whitespace to str.strip
    docs, rejected = _table_both_ways(pa.table({"id": ids, "text": ["t"] * 4}))
    assert rejected == [] and [d["id"] for d in docs] == ids


def test_a_duplicate_of_an_integer_looking_id_says_integers_become_strings():
    docs, _ = _lines([{"id": 5, "text": "from an int"}, {"id": "5", "text": "from a string"},
                      {"id": "a", "text": "x"}, {"id": "a", "text": "y"},
                      {"id": "05", "text": "x"}, {"id": "05", "text": "y"}])
    table = pa.Table.from_pylist(docs, schema=DOCUMENT_BATCH_SCHEMA)
    kept, rejected = resolve_duplicate_ids(table)
    assert sorted(kept.column("text").to_pylist()) == ["from an int", "x", "x"]
    details = {r["id"]: r["detail"] for r in rejected.to_pylist()}
    assert details["5"] == ("id '5' first seen in f.jsonl record 0; integer ids are stored as their decimal "
                            "string, so the integer 5 and the string '5' are the same id")
    assert details["a"] == "id 'a' first seen in f.jsonl record 2"
    assert details["05"] == "id '05' first seen in f.jsonl record 4"


def test_extreme_int64_epochs_do_not_overflow_the_vectorised_bands():
    values = [-(2**63), 2**63 - 1, -(10**17), 10**17 - 1]
    micros, passed = _columnar_timestamps(pa.array(values, pa.int64()), 4)
    assert passed.tolist() == [True, True, True, True]
    assert micros.cast(pa.int64()).to_pylist() == [-(2**63) // 1000, (2**63 - 1) // 1000, -(10**14), 10**17 - 1]
