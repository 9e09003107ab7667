"""Column-wise validation of Arrow input (Parquet row groups, JSONL blocks) (Beam-free).

Mirrors ``validate.BatchBuilder.add_record`` check for check, with
pyarrow.compute over whole columns, so that text never becomes Python objects
when a whole column is valid. Rows that fail any check are handed back to the
per-record path, which gives the reason and message.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from corpusmill.schemas.documents import DOCUMENT_BATCH_SCHEMA, TIMESTAMP_TYPE
from corpusmill.transforms.io.values import (
    BLANK_TEXT_PATTERN,
    INT64_MAX,
    INT64_MIN,
    MAX_MICROS,
    MICROS_PER_UNIT,
    MIN_MICROS,
    MISSING,
    FieldMap,
    UnconvertibleRows,
    is_text_type,
    meta_json,
    to_micros,
    to_pylist,
)


def drop_invalid_utf8(table: pa.Table, indices: np.ndarray
                       ) -> tuple[pa.Table, np.ndarray, list[tuple[int, str, int, bytes]]]:
    """Takes out rows whose string columns hold invalid UTF-8.

    Parquet readers do not check that string columns are UTF-8, and such a row
    cannot become Python values. Valid columns cost one C pass each; only an
    invalid column is decoded row by row to find the bad rows.

    Returns:
        The remaining rows, their record indices, and (record index, column,
        byte offset, raw value) of the first bad value of each dropped row.
    """
    bad = np.zeros(table.num_rows, dtype=bool)
    found: list[tuple[int, str, int, bytes]] = []
    for position, field in enumerate(table.schema):
        if not is_text_type(field.type):
            continue
        column = table.column(position)
        try:
            column.validate(full=True)
            continue
        except pa.ArrowInvalid:
            pass
        binary = pa.large_binary() if pa.types.is_large_string(field.type) else pa.binary()
        for row, value in enumerate(column.cast(binary).to_pylist()):
            if value is None or bad[row]:
                continue
            try:
                value.decode("utf-8")
            except UnicodeDecodeError as error:
                bad[row] = True
                found.append((int(indices[row]), field.name, error.start, value))
    if not found:
        return table, indices, []
    found.sort()
    keep = ~bad
    return table.filter(pa.array(keep)), indices[keep], found


def _true_where(condition: pa.Array | pa.ChunkedArray, null_as: bool) -> np.ndarray:
    """A boolean Arrow result as a numpy mask, nulls counted as ``null_as``."""
    return pc.fill_null(condition, null_as).to_numpy(zero_copy_only=False)


def _as_string(column: pa.Array) -> pa.Array:
    return column if pa.types.is_string(column.type) else column.cast(pa.string())


def columnar_documents(table: pa.Table, file: str, indices: np.ndarray, fields: FieldMap,
                        max_text_bytes: int) -> tuple[np.ndarray, pa.RecordBatch | None]:
    """Validates a table column-wise, mirroring BatchBuilder.add_record's checks.

    Args:
        table: Rows with valid UTF-8 in every string column.
        file: Relative path of the source file.
        indices: Record index of each row.
        fields: Input field names.
        max_text_bytes: Longer texts are rejected.

    Returns:
        A mask of the rows that pass every check, and a document batch with one
        row per input row; rows that fail hold placeholders and must be taken
        from the per-record path instead.

    Raises:
        UnconvertibleRows: A column that must be read as Python values cannot be.
    """
    n = table.num_rows
    names = table.column_names
    mapped = fields.mapped
    if len(set(names)) != len(names) or len(set(mapped)) != len(mapped):
        # Duplicate names make to_pylist and the per-record pops drop columns in
        # ways not worth mirroring; such input is rare, so it takes the slow path.
        return np.zeros(n, dtype=bool), None

    def column(name: str) -> pa.Array | None:
        if name not in names:
            return None
        values = table.column(name)
        values = values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()
        return None if pa.types.is_null(values.type) else values

    text = column(fields.text)
    if text is None or not is_text_type(text.type):
        return np.zeros(n, dtype=bool), None
    text = _as_string(text)
    passed = _true_where(text.is_valid(), False)
    passed &= _true_where(pc.less_equal(pc.binary_length(text), max_text_bytes), False)
    passed &= ~_true_where(pc.match_substring_regex(text, BLANK_TEXT_PATTERN), True)

    ids = column(fields.id)
    if ids is not None and is_text_type(ids.type):
        ids = _as_string(ids)
        passed &= ~_true_where(pc.equal(ids, ""), False)
    elif ids is not None and pa.types.is_integer(ids.type):
        ids = ids.cast(pa.string())
    elif ids is not None:
        passed &= _true_where(ids.is_null(), False)
        ids = None
    if ids is None or ids.null_count:
        derived = pc.binary_join_element_wise(f"{file}#", pa.array(indices).cast(pa.string()), "")
        ids = derived if ids is None else pc.if_else(ids.is_null(), derived, ids)

    urls, urls_passed = _string_field(column(fields.url), n, None)
    sources, sources_passed = _string_field(column(fields.source), n, file)
    passed &= urls_passed & sources_passed

    timestamps, timestamps_passed = _columnar_timestamps(column(fields.timestamp), n)
    passed &= timestamps_passed

    others = [name for name in names if name not in mapped]
    if others:
        meta = pa.array([meta_json(row) for row in to_pylist(table.select(others))], pa.string())
    else:
        meta = pa.nulls(n, pa.string())

    documents = pa.RecordBatch.from_arrays(
        [ids, text, sources, urls, timestamps, meta,
         pa.repeat(pa.scalar(file, pa.string()), n), pa.array(indices, pa.int64())],
        schema=DOCUMENT_BATCH_SCHEMA,
    )
    return passed, documents


def _string_field(values: pa.Array | None, n: int, fill: str | None) -> tuple[pa.Array, np.ndarray]:
    """An optional string field as a string column, and a mask of the rows that pass.

    A string column passes whole, its nulls replaced by ``fill``; a column of
    another type passes only on its null rows (the per-record path rejects
    the others), and a missing column passes whole. Rows without a value get
    ``fill`` (None: null).
    """
    if values is not None and is_text_type(values.type):
        values = _as_string(values)
        return (values if fill is None else pc.fill_null(values, fill)), np.ones(n, dtype=bool)
    passed = np.ones(n, dtype=bool) if values is None else _true_where(values.is_null(), False)
    filled = pa.nulls(n, pa.string()) if fill is None else pa.repeat(pa.scalar(fill, pa.string()), n)
    return filled, passed


def _columnar_timestamps(values: pa.Array | None, n: int) -> tuple[pa.Array, np.ndarray]:
    """Timestamps as microseconds since the epoch (UTC), and a mask of the rows that converted.

    Timestamp columns in s/ms/us convert exactly in Arrow: storage is UTC, and
    a zone-less value is read as UTC, as ``to_micros`` does. Anything else
    (ISO strings, epoch numbers, dates, ns) goes through ``to_micros`` value by
    value, so the two paths cannot disagree; timestamps are short, so this is cheap.
    """
    if values is None:
        return pa.nulls(n, TIMESTAMP_TYPE), np.ones(n, dtype=bool)
    unit = getattr(values.type, "unit", None) if pa.types.is_timestamp(values.type) else None
    if unit in MICROS_PER_UNIT:
        storage = values.cast(pa.int64())
        factor = MICROS_PER_UNIT[unit]
        bounds = pc.min_max(storage).as_py()
        if bounds["min"] is None or (bounds["min"] * factor >= MIN_MICROS and bounds["max"] * factor <= MAX_MICROS):
            micros = pc.multiply(storage, factor) if factor != 1 else storage
            return micros.cast(TIMESTAMP_TYPE), np.ones(n, dtype=bool)
        # Out of datetime's range: let the per-row path meet (and report) them.
        return pa.nulls(n, TIMESTAMP_TYPE), _true_where(values.is_null(), False)
    try:
        python_values = values.to_pylist()
    except Exception as error:  # as in to_pylist: the per-row path would fail on these rows too
        raise UnconvertibleRows(f"{type(error).__name__}: {error}") from error
    micros: list[int | None] = []
    passed = np.ones(n, dtype=bool)
    parsed: dict[str, int | None] = {}  # corpora often repeat one timestamp string
    for row, value in enumerate(python_values):
        try:
            if type(value) is str:
                result = parsed.get(value, MISSING)
                if result is MISSING:
                    result = parsed[value] = to_micros(value)
            else:
                result = to_micros(value)
        except (TypeError, ValueError, OverflowError):
            result = None
            passed[row] = False
        if result is not None and not INT64_MIN <= result <= INT64_MAX:
            result = None
            passed[row] = False
        micros.append(result)
    return pa.array(micros, pa.int64()).cast(TIMESTAMP_TYPE), passed
