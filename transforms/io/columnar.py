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
    EPOCH_BANDS,
    INT64_MAX,
    INT64_MIN,
    MAX_MICROS,
    MICROS_PER_UNIT,
    MIN_MICROS,
    MISSING,
    ArrowTimestamp,
    FieldMap,
    UnconvertibleRows,
    id_problem,
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


def known_ids(table: pa.Table, positions: list[int], id_field: str, file: str,
              first_index: int) -> list[str | None]:
    """The id each given row would have had as a document, None where its id is invalid or unreadable.

    For rows rejected before the per-record path sees them (invalid UTF-8 in
    another column), so that their rejections carry the id all the same.
    """
    found = table.schema.get_all_field_indices(id_field)
    if len(found) > 1:
        return [None] * len(positions)
    values: list = [None] * len(positions)
    if found:
        column = table.column(found[0]).take(pa.array(positions, pa.int64()))
        if is_text_type(column.type):
            binary = pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary()
            values = [_decoded(value) for value in column.cast(binary).to_pylist()]
        else:
            try:
                values = column.to_pylist()
            except Exception:  # as in to_pylist: a value Python cannot hold
                values = [_UNREADABLE] * len(positions)
    ids: list[str | None] = []
    for position, value in zip(positions, values):
        if value is None:
            ids.append(f"{file}#{first_index + position}")
        elif value is _UNREADABLE or id_problem(value, id_field):
            ids.append(None)
        else:
            ids.append(value if isinstance(value, str) else str(value))
    return ids


_UNREADABLE = object()


def _decoded(value: bytes | None) -> object:
    try:
        return None if value is None else value.decode("utf-8")
    except UnicodeDecodeError:
        return _UNREADABLE


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
        # Empty or whitespace-only ids are invalid (str.strip's whitespace, as per row).
        passed &= ~_true_where(pc.match_substring_regex(ids, BLANK_TEXT_PATTERN), False)
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

    The rules are :func:`values.to_micros`'s. Timestamp columns keep their
    declared unit (s/ms/us exactly, ns floored to the microsecond; storage is
    UTC and a zone-less value is UTC); integer columns are epochs whose unit is
    read off each value's magnitude. Both are converted in numpy, and a value
    outside years 1..9999 fails its row, which the per-record path then
    rejects. Anything else (ISO strings, floats, dates) goes through
    ``to_micros`` value by value, so the two paths cannot disagree.
    """
    if values is None:
        return pa.nulls(n, TIMESTAMP_TYPE), np.ones(n, dtype=bool)
    if pa.types.is_timestamp(values.type):
        storage, valid = _int64_values(values.cast(pa.int64()))
        micros = _unit_micros(storage, values.type.unit)
    elif pa.types.is_integer(values.type):
        try:
            storage, valid = _int64_values(values.cast(pa.int64()))
        except pa.ArrowInvalid:  # uint64 beyond int64: Python ints have no such limit
            return _python_timestamps(values, n)
        micros = _epoch_micros(storage)
    else:
        return _python_timestamps(values, n)
    in_range = (micros >= MIN_MICROS) & (micros <= MAX_MICROS)
    keep = valid & in_range
    array = pa.array(np.where(keep, micros, 0), pa.int64(), mask=~keep)
    return array.cast(TIMESTAMP_TYPE), in_range | ~valid


def _int64_values(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """An int64 column as numpy values (nulls as 0) and a mask of its non-null rows."""
    valid = _true_where(values.is_valid(), False)
    return pc.fill_null(values, 0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False), valid


def _unit_micros(storage: np.ndarray, unit: str) -> np.ndarray:
    """Microseconds from numbers of ``unit``; a value whose product would overflow becomes out of range."""
    if unit == "ns":
        return storage // 1000
    factor = MICROS_PER_UNIT[unit]
    fits = (storage >= -(-MIN_MICROS // factor)) & (storage <= MAX_MICROS // factor)
    micros = np.where(fits, storage, 0) * factor
    micros[~fits] = np.where(storage[~fits] < 0, INT64_MIN, INT64_MAX)
    return micros


def _epoch_micros(storage: np.ndarray) -> np.ndarray:
    """Microseconds from integer epochs, each value's unit read off its magnitude (``EPOCH_BANDS``)."""
    micros = storage // 1000  # nanoseconds, unless a narrower band claims the value
    unassigned = np.ones(len(storage), dtype=bool)
    for bound, unit in EPOCH_BANDS:
        band = unassigned & (storage > -bound) & (storage < bound)
        micros[band] = storage[band] * MICROS_PER_UNIT[unit]
        unassigned &= ~band
    return micros


def _python_timestamps(values: pa.Array, n: int) -> tuple[pa.Array, np.ndarray]:
    """Timestamps converted value by value with ``to_micros``."""
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
        micros.append(result)
    return pa.array(micros, pa.int64()).cast(TIMESTAMP_TYPE), passed


def record_rows(table: pa.Table, timestamp_field: str) -> list[dict]:
    """Rows as the per-record path takes them: Python dicts, one per row.

    A timestamp-typed column under ``timestamp_field`` becomes
    :class:`values.ArrowTimestamp` values (storage integer and declared unit)
    rather than datetimes, which cannot hold nanoseconds or years past 9999;
    ``to_micros`` then converts or rejects each one, as the columnar path does.

    Raises:
        UnconvertibleRows: Another value cannot become a Python value.
    """
    position = table.schema.get_field_index(timestamp_field)
    if position < 0 or not pa.types.is_timestamp(table.schema.field(position).type):
        return to_pylist(table)
    column = table.column(position)
    unit = column.type.unit
    stored = column.cast(pa.int64()).to_pylist()
    rows = to_pylist(table.set_column(position, timestamp_field, pa.nulls(table.num_rows)))
    for row, value in zip(rows, stored):
        row[timestamp_field] = None if value is None else ArrowTimestamp(value, unit)
    return rows
