"""Beam-free readers: raw input bytes in, Arrow document and rejected batches out.

Every input record comes out exactly once, either as a row of a document
batch or as a rejected row with a reason. A damaged file keeps the records
read before the damage; the damage itself is one rejected record, so that
input = kept + rejected holds per file.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
import zstandard

from corpusmill.schemas.documents import (
    DOCUMENT_BATCH_SCHEMA,
    REJECTED_SCHEMA,
    RejectReason,
    excerpt,
)
from corpusmill.transforms.inputs import InputFile

_MISSING = object()
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class FieldMap:
    """Which input fields become which Document fields."""

    text: str = "text"
    id: str = "id"
    url: str = "url"
    timestamp: str = "timestamp"
    source: str = "source"


@dataclass
class FileStats:
    """What reading one file saw; it feeds the manifest's accounting and fingerprint."""

    relpath: str
    size: int
    digest: str = ""
    records: int = 0
    blank_lines: int = 0
    rows_lost_in_damage: int = 0


class DamagedInput(Exception):
    """Raised by stream wrappers when compressed input ends or breaks mid-stream."""

    def __init__(self, message: str, truncated: bool):
        super().__init__(message)
        self.truncated = truncated


def _damage_reason(error: Exception) -> str:
    """A stream that stops early is truncated; one that cannot be decoded is unreadable."""
    truncated = isinstance(error, EOFError) or getattr(error, "truncated", False)
    return RejectReason.TRUNCATED_FILE if truncated else RejectReason.UNREADABLE_FILE


class HashingReader(io.RawIOBase):
    """Reads a binary stream while hashing every byte, so the fingerprint costs no extra pass."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self._hash = xxhash.xxh3_128()
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self._hash.update(data)
        self.bytes_read += n
        return n

    def drain(self) -> None:
        """Consumes the rest of the stream so the digest covers the whole file."""
        while self._raw is not None:
            data = self._raw.read(_READ_CHUNK)
            if not data:
                break
            self._hash.update(data)
            self.bytes_read += len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class _StrictZstdReader(io.RawIOBase):
    """Decompresses zstd frames, raising DamagedInput if the input stops mid-frame.

    zstandard's stream_reader reports a truncated frame as a clean end of file;
    a data pipeline must not take half a file for a whole one.
    """

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._pending = b""
        self._in_frame = False
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending and not self._done:
            chunk = self._raw.read(_READ_CHUNK)
            if not chunk:
                self._done = True
                if self._in_frame:
                    raise DamagedInput("zstd stream ends in the middle of a frame", truncated=True)
                break
            self._feed(chunk)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _feed(self, chunk: bytes) -> None:
        out = []
        while chunk:
            try:
                out.append(self._obj.decompress(chunk))
            except zstandard.ZstdError as error:
                raise DamagedInput(f"corrupt zstd data: {error}", truncated=False) from error
            self._in_frame = not self._obj.eof
            if self._obj.eof:
                chunk = self._obj.unused_data
                self._obj = self._dctx.decompressobj()
            else:
                chunk = b""
        self._pending += b"".join(out)


def _decompressed(raw: io.RawIOBase, compression: str) -> BinaryIO:
    if compression == "gzip":
        return gzip.GzipFile(fileobj=io.BufferedReader(raw, _READ_CHUNK), mode="rb")
    if compression == "zstd":
        return io.BufferedReader(_StrictZstdReader(io.BufferedReader(raw, _READ_CHUNK)), _READ_CHUNK)
    return io.BufferedReader(raw, _READ_CHUNK)


_DAMAGE_ERRORS = (DamagedInput, EOFError, gzip.BadGzipFile, zlib.error, OSError)


class BatchBuilder:
    """Turns input records into document and rejected Arrow batches.

    Validation is one pass of plain Python per record; the expensive parts
    (UTF-8 checks, JSON decoding) run in C, and Beam only ever sees the batches.

    Args:
        fields: Input field names.
        max_text_bytes: Longer texts are rejected.
        batch_rows: Rows per emitted document batch.
        count: Optional ``count(name, n)`` callback; the DoFn passes Beam counters.
    """

    def __init__(
        self,
        fields: FieldMap,
        max_text_bytes: int,
        batch_rows: int,
        count: Callable[[str, int], None] | None = None,
    ):
        self.fields = fields
        self.max_text_bytes = max_text_bytes
        self.batch_rows = batch_rows
        self._count = count or (lambda name, n: None)
        self._docs: dict[str, list] = {name: [] for name in DOCUMENT_BATCH_SCHEMA.names}
        self._rejected: dict[str, list] = {name: [] for name in REJECTED_SCHEMA.names}

    # -- records --------------------------------------------------------------

    def add_json_line(self, line: bytes, file: str, index: int) -> None:
        """Validates one JSONL line (already known to be non-blank)."""
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
        if not isinstance(record, dict):
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

    def take(self, final: bool = False) -> Iterator[tuple[str, pa.RecordBatch]]:
        """Yields ("docs" | "rejected", batch) for full batches, or everything when final."""
        if self._docs["id"] and (final or len(self._docs["id"]) >= self.batch_rows):
            batch = pa.RecordBatch.from_pydict(self._docs, schema=DOCUMENT_BATCH_SCHEMA)
            self._docs = {name: [] for name in DOCUMENT_BATCH_SCHEMA.names}
            self._count("documents_read", batch.num_rows)
            yield "docs", batch
        if self._rejected["reason"] and (final or len(self._rejected["reason"]) >= self.batch_rows):
            batch = pa.RecordBatch.from_pydict(self._rejected, schema=REJECTED_SCHEMA)
            self._rejected = {name: [] for name in REJECTED_SCHEMA.names}
            yield "rejected", batch


def _encodable(value: str) -> bool:
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
    text = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    if not _encodable(text):
        text = json.dumps(record, sort_keys=True, ensure_ascii=True, default=str, separators=(",", ":"))
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


def read_jsonl(file: InputFile, raw: HashingReader, builder: BatchBuilder,
               stats: FileStats) -> Iterator[tuple[str, pa.RecordBatch]]:
    """Reads JSON Lines (plain, gzip or zstd); a damaged tail becomes one rejected record."""
    index = 0
    try:
        for line in _decompressed(raw, file.compression):
            if not line.strip():
                stats.blank_lines += 1
                index += 1
                continue
            builder.add_json_line(line, file.relpath, index)
            stats.records += 1
            index += 1
            yield from builder.take()
    except _DAMAGE_ERRORS as error:
        reason = _damage_reason(error)
        builder.reject(reason, file.relpath, f"after line {index}", None,
                       f"{type(error).__name__}: {error} (compressed byte {raw.bytes_read} of {file.size}); "
                       f"the {stats.records} records before it were read", b"")
        stats.records += 1
    yield from builder.take()


def read_text(file: InputFile, raw: HashingReader, builder: BatchBuilder,
              stats: FileStats) -> Iterator[tuple[str, pa.RecordBatch]]:
    """Reads one text document (.txt/.md/.rst, optionally gzipped); its id is its relative path."""
    doc_id = file.relpath[: -len(".gz")] if file.compression == "gzip" else file.relpath
    stats.records += 1
    try:
        data = _decompressed(raw, file.compression).read()
    except _DAMAGE_ERRORS as error:
        reason = _damage_reason(error)
        builder.reject(reason, file.relpath, "file", 0, f"{type(error).__name__}: {error}", b"", doc_id)
        yield from builder.take()
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        builder.reject(RejectReason.INVALID_UTF8, file.relpath, "file", 0,
                       f"invalid UTF-8 at byte {error.start}", data, doc_id)
        yield from builder.take()
        return
    builder.add_record({builder.fields.text: text}, file.relpath, 0, "file", data[:2048], default_id=doc_id)
    yield from builder.take()


def read_parquet(file: InputFile, raw: BinaryIO, builder: BatchBuilder,
                 stats: FileStats) -> Iterator[tuple[str, pa.RecordBatch]]:
    """Reads Parquet row group by row group; a corrupt row group is one rejected record."""
    try:
        parquet = pq.ParquetFile(raw)
    except Exception as error:  # pyarrow raises several types for a bad footer
        builder.reject(RejectReason.UNREADABLE_FILE, file.relpath, "file", None,
                       f"{type(error).__name__}: {error}", b"")
        stats.records += 1
        return
    index = 0
    for group in range(parquet.num_row_groups):
        group_rows = parquet.metadata.row_group(group).num_rows
        try:
            table = parquet.read_row_group(group)
            rows = table.to_pylist()
        except Exception as error:
            builder.reject(RejectReason.CORRUPT_ROW_GROUP, file.relpath,
                           f"row group {group} (rows {index}..{index + group_rows - 1})", None,
                           f"{type(error).__name__}: {error}; {group_rows} rows lost", b"")
            stats.records += 1
            stats.rows_lost_in_damage += group_rows
            index += group_rows
            continue
        for row in rows:
            builder.add_record(row, file.relpath, index, f"row {index}")
            stats.records += 1
            index += 1
        yield from builder.take()


READERS = {"jsonl": read_jsonl, "text": read_text}


def read_file(file: InputFile, open_file: Callable[[str], BinaryIO], builder: BatchBuilder
              ) -> Iterator[tuple[str, Any]]:
    """Reads one input file of any supported format.

    Args:
        file: The file to read.
        open_file: Opens a path for binary reading (Beam's FileSystems.open in
            the pipeline, plain ``open`` in tests).
        builder: Collects documents and rejections.

    Yields:
        ("docs" | "rejected", RecordBatch) as batches fill, then ("stats", FileStats).
        Rows still pending in ``builder`` stay there, so that many small files
        share batches; call ``builder.take(final=True)`` after the last file.
    """
    stats = FileStats(file.relpath, file.size)
    try:
        handle = open_file(file.path)
    except Exception as error:
        builder.reject(RejectReason.UNREADABLE_FILE, file.relpath, "file", None,
                       f"cannot open: {type(error).__name__}: {error}", b"")
        stats.records += 1
        yield from builder.take()
        yield "stats", stats
        return
    with handle:
        if file.format == "parquet":
            yield from read_parquet(file, handle, builder, stats)
            handle.seek(0)
            hashing = HashingReader(handle)
            hashing.drain()
        else:
            hashing = HashingReader(handle)
            yield from READERS[file.format](file, hashing, builder, stats)
            hashing.drain()
    stats.digest = hashing.hexdigest()
    yield from builder.take()
    yield "stats", stats
