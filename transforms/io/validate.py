"""Validation of input records into document and rejected Arrow batches (Beam-free).

Records arrive one at a time (JSONL lines, text files) or as Arrow tables
(Parquet row groups, blocks of JSONL lines). Both paths give the same documents
and the same rejection reasons for the same record; the columnar path
(``columnar``) only exists to keep text out of Python objects when a whole
column is valid.
"""

from __future__ import annotations

import io
import json
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json

from corpusmill.schemas.documents import DOCUMENT_BATCH_SCHEMA, REJECTED_SCHEMA, RejectReason, excerpt
from corpusmill.transforms.io.columnar import columnar_documents, drop_invalid_utf8, known_ids, record_rows
from corpusmill.transforms.io.values import (
    MISSING,
    FieldMap,
    UnconvertibleRows,
    encodable,
    id_problem,
    meta_json,
    record_excerpt,
    text_problem,
    to_micros,
)

__all__ = ["BatchBuilder", "FieldMap", "UnconvertibleRows"]


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
                        raw if raw is not None else record_excerpt(record, text), doc_id)

        text = record.pop(f.text, MISSING)
        # The id is read before the text is judged, so that every rejection of
        # a record whose id is known carries it; it stays in the record (and
        # in the excerpt) until the record is kept.
        raw_id = record.get(f.id)
        bad_id = None
        if raw_id is None:
            doc_id = default_id if default_id is not None else f"{file}#{index}"
        else:
            bad_id = id_problem(raw_id, f.id)
            doc_id = None if bad_id else (raw_id if isinstance(raw_id, str) else str(raw_id))
        problem = text_problem(text, f.text, self.max_text_bytes)
        if problem is not None:
            reject(*problem, doc_id)
            return
        if bad_id is not None:
            reject(RejectReason.INVALID_ID, bad_id)
            return
        record.pop(f.id, None)

        url = record.pop(f.url, None)
        if url is not None and not (isinstance(url, str) and encodable(url)):
            reject(RejectReason.INVALID_FIELD_TYPE, f"'{f.url}' must be a string, got {url!r:.80}", doc_id)
            return
        try:
            timestamp = to_micros(record.pop(f.timestamp, None))
        except (TypeError, ValueError, OverflowError) as error:
            reject(RejectReason.INVALID_TIMESTAMP, f"'{f.timestamp}': {error}", doc_id)
            return
        source = record.pop(f.source, None)
        if source is None:
            source = file
        elif not (isinstance(source, str) and encodable(source)):
            reject(RejectReason.INVALID_FIELD_TYPE, f"'{f.source}' must be a string, got {source!r:.80}", doc_id)
            return

        docs = self._docs
        docs["id"].append(doc_id)
        docs["text"].append(text)
        docs["source"].append(source)
        docs["url"].append(url)
        docs["timestamp"].append(timestamp)
        docs["meta"].append(meta_json(record) if record else None)
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
        whole = table
        table, indices, bad_utf8 = drop_invalid_utf8(table, indices)
        bad_ids = known_ids(whole, [index - first_index for index, *_ in bad_utf8], self.fields.id, file,
                            first_index) if bad_utf8 else []
        if self.columnar and table.num_rows:
            passed, documents = columnar_documents(table, file, indices, self.fields, self.max_text_bytes)
        else:
            passed, documents = np.zeros(table.num_rows, dtype=bool), None
        failed = np.flatnonzero(~passed)
        slow_rows = record_rows(table.take(pa.array(failed)), self.fields.timestamp) if len(failed) else []

        for (index, column, start, value), doc_id in zip(bad_utf8, bad_ids):
            self.reject(RejectReason.INVALID_UTF8, file, f"row {index}", index,
                        f"invalid UTF-8 at byte {start} of '{column}'", value, doc_id)
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
            passed, documents = columnar_documents(table, file, indices, self.fields, self.max_text_bytes)
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
