"""Validation of input records into document and rejected Arrow batches.

Records arrive one at a time (JSONL lines, text files) or as Arrow tables
(Parquet row groups). Both paths give the same documents and the same
rejection reasons for the same record; the columnar path only exists to keep
text out of Python objects when a whole column is valid.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from corpusmill.schemas.documents import (
    DOCUMENT_BATCH_SCHEMA,
    REJECTED_SCHEMA,
    TIMESTAMP_TYPE,
    RejectReason,
    excerpt,
)

_MISSING = object()
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
# Exactly the code points for which str.isspace() is true, i.e. what str.strip()
# removes; the columnar check must call the same texts blank as the per-row one
# (RE2's \s and Arrow's utf8 trim functions use other sets).
PYTHON_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_BLANK_TEXT_PATTERN = "^[" + "".join(f"\\x{{{ord(c):x}}}" for c in PYTHON_WHITESPACE) + "]*$"
# Compact JSON with sorted keys; built once because json.dumps with options
# constructs a new encoder on every call.
_META_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
_META_ENCODER_ASCII = json.JSONEncoder(sort_keys=True, ensure_ascii=True, default=str, separators=(",", ":"))
# Microseconds of datetime.min and datetime.max (UTC); Arrow timestamps outside
# this range cannot become Python datetimes, so the per-row path fails on them.
_MIN_MICROS = -62135596800 * 1_000_000
_MAX_MICROS = 253402300799 * 1_000_000 + 999_999
_MICROS_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1}
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


@dataclass(frozen=True)
class FieldMap:
    """Which input fields become which Document fields."""

    text: str = "text"
    id: str = "id"
    url: str = "url"
    timestamp: str = "timestamp"
    source: str = "source"

    @property
    def mapped(self) -> tuple[str, ...]:
        """The input names of the Document fields, in field order."""
        return (self.text, self.id, self.url, self.timestamp, self.source)


class UnconvertibleRows(Exception):
    """Raised when rows of a columnar input cannot become Python values.

    The per-row path converts every row with ``to_pylist``; a value it cannot
    convert (say, a timestamp beyond year 9999) makes the whole row group a
    ``corrupt_row_group`` rejection, on the fast path as much as on the slow one.
    """


class BatchBuilder:
    """Turns input records into document and rejected Arrow batches.

    Records arrive one at a time (JSONL, text) or as Arrow tables (Parquet row
    groups). Per-record validation is plain Python with the expensive parts
    (UTF-8 checks, JSON decoding) in C. Arrow input is validated a column at a
    time with pyarrow.compute; rows that pass go into the output as Arrow slices,
    and only rows that fail a check take the per-record path, so reasons and
    messages are the same whichever path saw a record. Beam only ever sees the
    batches.

    Args:
        fields: Input field names.
        max_text_bytes: Longer texts are rejected.
        batch_rows: Rows per emitted document batch (the last one may be shorter).
        count: Optional ``count(name, n)`` callback; the DoFn passes Beam counters.
        columnar: Validate Arrow input column-wise; False sends every row through
            the per-record path (the reference the columnar path must match).
    """

    def __init__(
        self,
        fields: FieldMap,
        max_text_bytes: int,
        batch_rows: int,
        count: Callable[[str, int], None] | None = None,
        columnar: bool = True,
    ):
        self.fields = fields
        self.max_text_bytes = max_text_bytes
        self.batch_rows = batch_rows
        self.columnar = columnar
        self._count = count or (lambda name, n: None)
        self._new_doc_rows()
        # Pending documents in input order: finished Arrow pieces, then the
        # per-record rows in self._docs. Each piece is (batch, owns_buffers):
        # a zero-copy slice of a row group does not own its buffers, and is
        # compacted before it is emitted (see _emit).
        self._doc_pieces: list[tuple[pa.RecordBatch, bool]] = []
        self._piece_rows = 0
        self._rejected: dict[str, list] = {name: [] for name in REJECTED_SCHEMA.names}

    def _new_doc_rows(self) -> None:
        self._docs: dict[str, list] = {name: [] for name in DOCUMENT_BATCH_SCHEMA.names}
        # Bound once: take() runs after every JSONL line and only needs a length.
        self._doc_ids = self._docs["id"]

    # -- records --------------------------------------------------------------

    def add_json_line(self, line: bytes, file: str, index: int) -> None:
        """Validates one JSONL line (already known to be non-blank), newline included."""
        locator = f"line {index + 1}"
        try:
            decoded = line.decode("utf-8")
        except UnicodeDecodeError as error:
            self.reject(RejectReason.INVALID_UTF8, file, locator, index,
                        f"invalid UTF-8 at byte {error.start} of the line", line)
            return
        try:
            record = json.loads(decoded)
        except ValueError as error:
            self.reject(RejectReason.MALFORMED_JSON, file, locator, index, str(error), line)
            return
        if type(record) is not dict:
            self.reject(RejectReason.NOT_AN_OBJECT, file, locator, index,
                        f"a JSON {type(record).__name__}, not an object", line)
            return
        self.add_record(record, file, index, locator, line)

    def add_record(self, record: dict[str, Any], file: str, index: int, locator: str,
                   raw: bytes | str | None = None, default_id: str | None = None) -> None:
        """Validates one record (a dict of input fields) and files it as kept or rejected.

        Args:
            record: Input fields; consumed (fields are popped).
            file: Relative path of the source file.
            index: 0-based record index in the file.
            locator: Human-readable place, e.g. ``line 3``.
            raw: The record's raw form, for the rejection excerpt.
            default_id: Id to use when the record has none; derived from the
                origin when not given.
        """
        f = self.fields

        def reject(reason: str, detail: str, doc_id: str | None = None) -> None:
            self.reject(reason, file, locator, index, detail,
                        raw if raw is not None else _record_excerpt(record, text), doc_id)

        text = record.pop(f.text, _MISSING)
        if text is _MISSING or text is None:
            reject(RejectReason.MISSING_TEXT, f"no '{f.text}' field" if text is _MISSING
                   else f"'{f.text}' is null")
            return
        if not isinstance(text, str):
            reject(RejectReason.INVALID_TEXT_TYPE, f"'{f.text}' is a {type(text).__name__}, not a string")
            return
        if text.isascii():
            # One byte per character; skips encoding a copy of every ASCII text.
            nbytes = len(text)
        else:
            try:
                nbytes = len(text.encode("utf-8"))
            except UnicodeEncodeError as error:
                # JSON can spell lone surrogates (\ud800) that no UTF-8 encoder accepts.
                reject(RejectReason.INVALID_UTF8, f"text is not valid Unicode: {error.reason} at {error.start}")
                return
        if nbytes > self.max_text_bytes:
            reject(RejectReason.TEXT_TOO_LONG, f"text is {nbytes} bytes; limit is {self.max_text_bytes}")
            return
        if not text.strip():
            reject(RejectReason.EMPTY_TEXT, "text is empty or whitespace only")
            return

        raw_id = record.pop(f.id, None)
        if raw_id is None:
            doc_id = default_id if default_id is not None else f"{file}#{index}"
        elif isinstance(raw_id, str) and raw_id and _encodable(raw_id):
            doc_id = raw_id
        elif isinstance(raw_id, int) and not isinstance(raw_id, bool):
            doc_id = str(raw_id)
        else:
            reject(RejectReason.INVALID_ID, f"'{f.id}' must be a non-empty string or an integer, got {raw_id!r:.80}")
            return

        url = record.pop(f.url, None)
        if url is not None and not (isinstance(url, str) and _encodable(url)):
            reject(RejectReason.INVALID_FIELD_TYPE, f"'{f.url}' must be a string, got {url!r:.80}", doc_id)
            return
        try:
            timestamp = _to_micros(record.pop(f.timestamp, None))
        except (TypeError, ValueError, OverflowError) as error:
            reject(RejectReason.INVALID_TIMESTAMP, str(error), doc_id)
            return
        source = record.pop(f.source, None)
        if source is None:
            source = file
        elif not (isinstance(source, str) and _encodable(source)):
            reject(RejectReason.INVALID_FIELD_TYPE, f"'{f.source}' must be a string, got {source!r:.80}", doc_id)
            return

        docs = self._docs
        docs["id"].append(doc_id)
        docs["text"].append(text)
        docs["source"].append(source)
        docs["url"].append(url)
        docs["timestamp"].append(timestamp)
        docs["meta"].append(_meta_json(record) if record else None)
        docs["_origin_file"].append(file)
        docs["_origin_index"].append(index)

    def add_table(self, table: pa.Table, file: str, first_index: int) -> None:
        """Validates consecutive rows of columnar input, e.g. one Parquet row group.

        Row ``i`` of ``table`` is record ``first_index + i`` of ``file``. A row
        whose string columns hold invalid UTF-8 is rejected as ``invalid_utf8``;
        the rest are checked column-wise (when ``columnar``) and the rows that
        fail a check go through :meth:`add_record`.

        All or nothing: everything is computed before anything is filed, so on
        :class:`UnconvertibleRows` the builder is unchanged and the caller can
        reject the rows as a group.

        Args:
            table: The rows, one column per input field.
            file: Relative path of the source file.
            first_index: Record index of the table's first row.

        Raises:
            UnconvertibleRows: A row the per-row path must see cannot be
                converted to Python values.
        """
        indices = np.arange(first_index, first_index + table.num_rows, dtype=np.int64)
        table, indices, bad_utf8 = _drop_invalid_utf8(table, indices)
        if self.columnar and table.num_rows:
            passed, documents = _columnar_documents(table, file, indices, self.fields, self.max_text_bytes)
        else:
            passed, documents = np.zeros(table.num_rows, dtype=bool), None
        failed = np.flatnonzero(~passed)
        slow_rows = _to_pylist(table.take(pa.array(failed))) if len(failed) else []

        for index, column, start, value in bad_utf8:
            self.reject(RejectReason.INVALID_UTF8, file, f"row {index}", index,
                        f"invalid UTF-8 at byte {start} of '{column}'", value)
        # Runs of rows that passed alternate with runs that did not; filing them
        # run by run keeps the documents in input order.
        if documents is not None and passed.all():
            # Not a slice: the batch owns its buffers and can be emitted as it is.
            self._add_piece(documents, owns_buffers=True)
            return
        rows = iter(slow_rows)
        for start, stop in _runs(passed):
            if passed[start]:
                self._add_piece(documents.slice(start, stop - start), owns_buffers=False)
                continue
            for position in range(start, stop):
                index = int(indices[position])
                self.add_record(next(rows), file, index, f"row {index}")

    def add_json_block(self, lines: list[bytes], file: str, first_index: int) -> bool:
        """Files a block of complete JSONL lines column-wise, if every line is a clean document.

        The block is parsed by pyarrow's JSON reader, the mapped fields as
        strings, and checked with the columnar checks. Any line that would not
        simply become a document (a parse error, a non-string mapped field, an
        other field that is not a string, int or bool on every line, a blank
        line, a row that fails a check, and so on)
        makes the whole block return False with nothing filed; the caller then
        files its lines one by one, so reasons and messages never depend on
        which path ran.

        Args:
            lines: Lines with their newlines, record ``first_index`` onwards.
            file: Relative path of the source file.
            first_index: Record index of the first line.

        Returns:
            Whether the block was filed.
        """
        if not self.columnar or not lines:
            return False
        mapped = self.fields.mapped
        # Two fields mapped to one name make the explicit schema invalid; the
        # parse then fails and the block goes line by line.
        if any(not line.strip() for line in lines):
            return False
        data = b"".join(lines)
        try:
            table = pa_json.read_json(
                io.BytesIO(data),
                read_options=pa_json.ReadOptions(use_threads=False, block_size=len(data) + 1),
                parse_options=pa_json.ParseOptions(
                    explicit_schema=pa.schema([(name, pa.string()) for name in mapped]),
                    unexpected_field_behavior="infer"))
        except Exception:  # pyarrow raises ArrowInvalid, and UnicodeDecodeError for bad UTF-8
            return False
        if table.num_rows != len(lines):
            return False
        # Other fields go to meta as JSON of their Python values. Arrow fills a
        # field missing from some lines with null and widens ints to doubles
        # when a column mixes them, where json.loads would omit the key or keep
        # the int; only columns where neither can have happened stay here.
        for field in table.schema:
            if field.name not in mapped and (
                    table.column(field.name).null_count
                    or not (pa.types.is_string(field.type) or pa.types.is_int64(field.type)
                            or pa.types.is_boolean(field.type))):
                return False
        indices = np.arange(first_index, first_index + len(lines), dtype=np.int64)
        try:
            passed, documents = _columnar_documents(table, file, indices, self.fields, self.max_text_bytes)
        except UnconvertibleRows:
            return False
        if documents is None or not passed.all():
            return False
        self._add_piece(documents, owns_buffers=True)
        return True

    def reject(self, reason: str, file: str, locator: str, index: int | None, detail: str,
               raw: bytes | str | None, doc_id: str | None = None) -> None:
        """Files one rejected record."""
        rows = self._rejected
        rows["reason"].append(reason)
        rows["source"].append(file)
        rows["locator"].append(locator)
        rows["record_index"].append(index)
        rows["id"].append(doc_id)
        rows["detail"].append(excerpt(detail))
        rows["excerpt"].append(excerpt(raw))
        self._count(f"rejected_{reason}", 1)

    # -- batches --------------------------------------------------------------

    def _flush_rows(self) -> None:
        """Turns the per-record rows into an Arrow piece, so pieces stay in input order."""
        if self._doc_ids:
            piece = pa.RecordBatch.from_pydict(self._docs, schema=DOCUMENT_BATCH_SCHEMA)
            self._new_doc_rows()
            self._doc_pieces.append((piece, True))
            self._piece_rows += piece.num_rows

    def _add_piece(self, piece: pa.RecordBatch, owns_buffers: bool) -> None:
        self._flush_rows()
        self._doc_pieces.append((piece, owns_buffers))
        self._piece_rows += piece.num_rows

    def take(self, final: bool = False) -> Iterator[tuple[str, pa.RecordBatch]]:
        """Yields ("docs" | "rejected", batch) once batch_rows are pending, or everything when final.

        Document batches hold at most ``batch_rows`` rows. Pending pieces are
        cut into batches of exactly ``batch_rows``, except that a piece which
        already is a compact batch of at most ``batch_rows`` rows (a valid row
        group, or the per-record rows) is emitted as it is rather than copied
        into a fuller one. Rows short of a full batch stay pending unless final.
        """
        pending = self._piece_rows + len(self._doc_ids)
        if pending and (final or pending >= self.batch_rows):
            self._flush_rows()
            yield from self._document_batches(final)
        if self._rejected["reason"] and (final or len(self._rejected["reason"]) >= self.batch_rows):
            batch = pa.RecordBatch.from_pydict(self._rejected, schema=REJECTED_SCHEMA)
            self._rejected = {name: [] for name in REJECTED_SCHEMA.names}
            yield "rejected", batch

    def _document_batches(self, final: bool) -> Iterator[tuple[str, pa.RecordBatch]]:
        """Cuts the pending pieces into batches of batch_rows; keeps the remainder unless final."""
        parts: list[tuple[pa.RecordBatch, bool]] = []
        part_rows = 0
        for piece, owns_buffers in self._doc_pieces:
            if owns_buffers and not parts and piece.num_rows <= self.batch_rows:
                yield "docs", self._emit([(piece, True)])
                continue
            offset = 0
            while offset < piece.num_rows:
                part = piece.slice(offset, self.batch_rows - part_rows)
                parts.append((part, owns_buffers and part.num_rows == piece.num_rows))
                part_rows += part.num_rows
                offset += part.num_rows
                if part_rows == self.batch_rows:
                    yield "docs", self._emit(parts)
                    parts, part_rows = [], 0
        if final and parts:
            yield "docs", self._emit(parts)
            parts, part_rows = [], 0
        self._doc_pieces = parts
        self._piece_rows = part_rows

    def _emit(self, parts: list[tuple[pa.RecordBatch, bool]]) -> pa.RecordBatch:
        # Pickling a slice serialises its parent's whole buffers (a 50-row slice
        # of a row group pickles the row group), so slices are compacted first.
        # A whole piece of per-record rows is emitted as it is, without a copy.
        if len(parts) == 1 and parts[0][1]:
            batch = parts[0][0]
        else:
            batch = pa.concat_batches([part for part, _ in parts])
        self._count("documents_read", batch.num_rows)
        return batch


def _runs(mask: np.ndarray) -> Iterator[tuple[int, int]]:
    """(start, stop) of each run of equal values in a boolean mask."""
    if not len(mask):
        return
    bounds = np.flatnonzero(mask[1:] != mask[:-1]) + 1
    starts = [0, *bounds.tolist()]
    stops = [*bounds.tolist(), len(mask)]
    yield from zip(starts, stops)


def _to_pylist(table: pa.Table) -> list[dict[str, Any]]:
    try:
        return table.to_pylist()
    except Exception as error:  # pyarrow and Python raise many types for values it cannot convert
        raise UnconvertibleRows(f"{type(error).__name__}: {error}") from error


def _is_text_type(type_: pa.DataType) -> bool:
    return pa.types.is_string(type_) or pa.types.is_large_string(type_)


def _drop_invalid_utf8(table: pa.Table, indices: np.ndarray
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
        if not _is_text_type(field.type):
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


def _columnar_documents(table: pa.Table, file: str, indices: np.ndarray, fields: FieldMap,
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
    if text is None or not _is_text_type(text.type):
        return np.zeros(n, dtype=bool), None
    text = _as_string(text)
    passed = _true_where(text.is_valid(), False)
    passed &= _true_where(pc.less_equal(pc.binary_length(text), max_text_bytes), False)
    passed &= ~_true_where(pc.match_substring_regex(text, _BLANK_TEXT_PATTERN), True)

    ids = column(fields.id)
    if ids is not None and _is_text_type(ids.type):
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

    urls = column(fields.url)
    if urls is not None and _is_text_type(urls.type):
        urls = _as_string(urls)
    elif urls is not None:
        passed &= _true_where(urls.is_null(), False)
        urls = None
    if urls is None:
        urls = pa.nulls(n, pa.string())

    sources = column(fields.source)
    if sources is not None and _is_text_type(sources.type):
        sources = pc.fill_null(_as_string(sources), file)
    else:
        if sources is not None:
            passed &= _true_where(sources.is_null(), False)
        sources = pa.repeat(pa.scalar(file, pa.string()), n)

    timestamps, timestamps_passed = _columnar_timestamps(column(fields.timestamp), n)
    passed &= timestamps_passed

    others = [name for name in names if name not in mapped]
    if others:
        meta = pa.array([_meta_json(row) for row in _to_pylist(table.select(others))], pa.string())
    else:
        meta = pa.nulls(n, pa.string())

    documents = pa.RecordBatch.from_arrays(
        [ids, text, sources, urls, timestamps, meta,
         pa.repeat(pa.scalar(file, pa.string()), n), pa.array(indices, pa.int64())],
        schema=DOCUMENT_BATCH_SCHEMA,
    )
    return passed, documents


def _columnar_timestamps(values: pa.Array | None, n: int) -> tuple[pa.Array, np.ndarray]:
    """Timestamps as microseconds since the epoch (UTC), and a mask of the rows that converted.

    Timestamp columns in s/ms/us convert exactly in Arrow: storage is UTC, and
    a zone-less value is read as UTC, as ``_to_micros`` does. Anything else
    (ISO strings, epoch numbers, dates, ns) goes through ``_to_micros`` value by
    value, so the two paths cannot disagree; timestamps are short, so this is cheap.
    """
    if values is None:
        return pa.nulls(n, TIMESTAMP_TYPE), np.ones(n, dtype=bool)
    unit = getattr(values.type, "unit", None) if pa.types.is_timestamp(values.type) else None
    if unit in _MICROS_PER_UNIT:
        storage = values.cast(pa.int64())
        factor = _MICROS_PER_UNIT[unit]
        bounds = pc.min_max(storage).as_py()
        if bounds["min"] is None or (bounds["min"] * factor >= _MIN_MICROS and bounds["max"] * factor <= _MAX_MICROS):
            micros = pc.multiply(storage, factor) if factor != 1 else storage
            return micros.cast(TIMESTAMP_TYPE), np.ones(n, dtype=bool)
        # Out of datetime's range: let the per-row path meet (and report) them.
        return pa.nulls(n, TIMESTAMP_TYPE), _true_where(values.is_null(), False)
    try:
        python_values = values.to_pylist()
    except Exception as error:  # as in _to_pylist: the per-row path would fail on these rows too
        raise UnconvertibleRows(f"{type(error).__name__}: {error}") from error
    micros: list[int | None] = []
    passed = np.ones(n, dtype=bool)
    parsed: dict[str, int | None] = {}  # corpora often repeat one timestamp string
    for row, value in enumerate(python_values):
        try:
            if type(value) is str:
                result = parsed.get(value, _MISSING)
                if result is _MISSING:
                    result = parsed[value] = _to_micros(value)
            else:
                result = _to_micros(value)
        except (TypeError, ValueError, OverflowError):
            result = None
            passed[row] = False
        if result is not None and not _INT64_MIN <= result <= _INT64_MAX:
            result = None
            passed[row] = False
        micros.append(result)
    return pa.array(micros, pa.int64()).cast(TIMESTAMP_TYPE), passed


def _encodable(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _record_excerpt(record: dict[str, Any], text: Any) -> str:
    shown = dict(record)
    if isinstance(text, str):
        shown = {"text": text[:512], **shown}
    return json.dumps(shown, ensure_ascii=True, default=str)[:2048]


def _meta_json(record: dict[str, Any]) -> str:
    """Compact JSON of the unmodelled fields, sorted keys; ASCII-escaped only if it must be."""
    text = _META_ENCODER.encode(record)
    if not _encodable(text):
        # Lone surrogates from JSON escapes cannot be stored as UTF-8.
        text = _META_ENCODER_ASCII.encode(record)
    return text


def _to_micros(value: Any) -> int | None:
    """Microseconds since the epoch (UTC) from an ISO-8601 string, epoch seconds or datetime."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"timestamp must be an ISO-8601 string or epoch seconds, got {value!r}")
    if isinstance(value, (int, float)):
        return int(round(value * 1_000_000))
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.strip())
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        delta = value - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(value, dt.date):
        return _to_micros(dt.datetime(value.year, value.month, value.day))
    raise TypeError(f"timestamp must be an ISO-8601 string or epoch seconds, got {value!r:.80}")


# ---------------------------------------------------------------------------
# One reader per format. Each yields ("docs" | "rejected", batch) and fills
# the FileStats it is given.
