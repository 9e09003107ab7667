"""Beam-free readers: raw input bytes in, Arrow document and rejected batches out.

Every input record comes out exactly once, either as a row of a document
batch or as a rejected row with a reason. A truncated or broken file keeps the
records read before the damage; the damage itself is one rejected record, so
that input = kept + rejected holds per file. Records decoded from a compressed
unit whose checksum fails are rejected one by one (``corrupt_file``), never
kept as if clean. A path listed as unreadable (a FIFO, an unreadable folder)
is one rejected record and is never opened. A leading UTF-8 byte-order mark is
not part of the first record or of a text document.
"""

from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from corpusmill.schemas.documents import RejectReason
from corpusmill.transforms.io.compression import decoded_blocks
from corpusmill.transforms.io.inputs import REJECTED_FORMAT, InputFile, strip_compression_suffix
from corpusmill.transforms.io.listing import special_kind
from corpusmill.transforms.io.streams import DAMAGE_ERRORS, UTF8_BOM, DamagedInput, HashingReader
from corpusmill.transforms.io.validate import BatchBuilder, FieldMap, UnconvertibleRows

__all__ = ["BatchBuilder", "FieldMap", "FileStats", "read_file"]


def damage_reason(error: Exception) -> str:
    """The reason of a damaged rest of a file: the decoder's own, else truncated or unreadable."""
    if isinstance(error, DamagedInput):
        return error.reason
    return RejectReason.TRUNCATED_FILE if isinstance(error, EOFError) else RejectReason.UNREADABLE_FILE


@dataclass
class FileStats:
    """What reading one file saw; it feeds the manifest's accounting and fingerprint."""

    relpath: str
    size: int
    digest: str = ""
    records: int = 0
    blank_lines: int = 0
    rows_lost_in_damage: int = 0

# Complete lines are filed in blocks of about this many bytes.
JSON_BLOCK_BYTES = 1 << 20
# Parquet files up to this size are read into memory once; larger ones are read
# row group by row group through the filesystem, then again for their digest.
PARQUET_IN_MEMORY_BYTES = 256 << 20


class _JsonlLines:
    """Splits decoded blocks into lines and files them, clean lines in blocks, damaged ones one by one.

    A line is damaged when any of its bytes came from a damaged block (a gzip
    member whose CRC failed, say); it is rejected as ``corrupt_file`` with
    the block's damage as detail, and counted like any record.
    """

    def __init__(self, file: InputFile, builder: BatchBuilder, stats: FileStats):
        self._file, self._builder, self._stats = file, builder, stats
        self.index = 0  # record index of the next line
        self._tail = b""  # an incomplete line
        self._tail_damage: str | None = None
        self._pending: list[bytes] = []  # clean complete lines not yet filed
        self._pending_bytes = 0
        self._at_start = True  # a leading byte-order mark is still to be stripped

    def add(self, block: bytes, damage: str | None) -> Iterator[tuple[str, pa.RecordBatch]]:
        data = self._tail + block if self._tail else block
        if self._at_start:
            if len(data) < len(UTF8_BOM) and UTF8_BOM.startswith(data):
                self._tail, self._tail_damage = data, self._tail_damage or damage
                return
            data, self._at_start = data.removeprefix(UTF8_BOM), False
        # readlines splits on b"\n" only and keeps it, as line iteration did.
        lines = io.BytesIO(data).readlines()
        first_damage = self._tail_damage or damage
        tail = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
        self._tail_damage = (first_damage if not lines else damage) if tail else None
        self._tail = tail
        if first_damage is None and damage is None:
            self._pending.extend(lines)
            self._pending_bytes += len(block)
        else:
            for position, line in enumerate(lines):
                line_damage = first_damage if position == 0 else damage
                if line_damage is None:
                    self._pending.append(line)
                    self._pending_bytes += len(line)
                else:
                    self.flush()
                    self._corrupt_line(line, line_damage)
        # Lines are filed about JSON_BLOCK_BYTES at a time: each columnar parse has a fixed cost.
        if self._pending_bytes >= JSON_BLOCK_BYTES:
            self.flush()
        # Full batches leave as they fill, rejections of a damaged unit included.
        yield from self._builder.take()

    def flush(self) -> None:
        """Files the clean complete lines held so far."""
        if self._pending:
            self.index = _file_lines(self._pending, self.index, self._file, self._builder, self._stats)
        self._pending, self._pending_bytes = [], 0

    def finish(self) -> None:
        """Files everything left, the last line without a newline included."""
        self.flush()
        tail, self._tail = self._tail, b""
        if self._at_start:
            tail = tail.removeprefix(UTF8_BOM)
        if tail and self._tail_damage is not None:
            self._corrupt_line(tail, self._tail_damage)
        elif tail:
            _file_line(tail, self.index, self._file, self._builder, self._stats)
            self.index += 1

    def _corrupt_line(self, line: bytes, damage: str) -> None:
        if line.strip():
            self._builder.reject(RejectReason.CORRUPT_FILE, self._file.relpath, f"line {self.index + 1}",
                                 self.index, damage, line)
            self._stats.records += 1
        else:
            self._stats.blank_lines += 1
        self.index += 1


def _file_line(line: bytes, index: int, file: InputFile, builder: BatchBuilder, stats: FileStats) -> None:
    """Validates one JSONL line, or counts it as blank."""
    if line.strip():
        builder.add_json_line(line, file.relpath, index)
        stats.records += 1
    else:
        stats.blank_lines += 1


def _file_lines(lines: list[bytes], index: int, file: InputFile, builder: BatchBuilder,
                stats: FileStats) -> int:
    """Files complete JSONL lines from record ``index`` on; returns the next record index."""
    # A block of clean documents is parsed in C, column-wise; any other block
    # goes line by line (see BatchBuilder.add_json_block).
    if builder.add_json_block(lines, file.relpath, index):
        stats.records += len(lines)
        return index + len(lines)
    for line in lines:
        _file_line(line, index, file, builder, stats)
        index += 1
    return index


def _damage_detail(error: Exception, raw: HashingReader, file: InputFile) -> str:
    if isinstance(error, DamagedInput):
        return f"{error} (file of {file.size} bytes)"
    return f"{type(error).__name__}: {error} (compressed byte {raw.bytes_read} of {file.size})"


def read_jsonl(file: InputFile, raw: HashingReader, builder: BatchBuilder,
               stats: FileStats) -> Iterator[tuple[str, pa.RecordBatch]]:
    """Reads JSON Lines (plain or compressed); a damaged tail becomes one rejected record.

    Lines of a compressed unit whose checksum fails are rejected one by one
    as ``corrupt_file`` (see ``compression.decoded_blocks``).
    """
    lines = _JsonlLines(file, builder, stats)
    try:
        for block, damage in decoded_blocks(raw, file.compression):
            yield from lines.add(block, damage)
        lines.finish()
    except DAMAGE_ERRORS as error:
        lines.flush()
        records = stats.records
        builder.reject(damage_reason(error), file.relpath, f"after line {lines.index}", None,
                       f"{_damage_detail(error, raw, file)}; the {records} records before it were read", b"")
        stats.records += 1
    yield from builder.take()


def _decoded(raw: HashingReader, compression: str) -> tuple[bytes, str | None]:
    """A whole file decoded, and the first damage in it (None: clean)."""
    data, damage = [], None
    for block, block_damage in decoded_blocks(raw, compression):
        data.append(block)
        damage = damage or block_damage
    return b"".join(data), damage


def read_text(file: InputFile, raw: HashingReader, builder: BatchBuilder,
              stats: FileStats) -> Iterator[tuple[str, pa.RecordBatch]]:
    """Reads one text document (.txt/.md/.rst, plain or compressed); its id is its relative path
    without the compression suffix. A leading byte-order mark is not part of the text."""
    doc_id = strip_compression_suffix(file.relpath)
    stats.records += 1
    try:
        data, damage = _decoded(raw, file.compression)
    except DAMAGE_ERRORS as error:
        builder.reject(damage_reason(error), file.relpath, "file", 0, _damage_detail(error, raw, file), b"", doc_id)
        yield from builder.take()
        return
    if damage is not None:
        builder.reject(RejectReason.CORRUPT_FILE, file.relpath, "file", 0, damage, data, doc_id)
        yield from builder.take()
        return
    data = data.removeprefix(UTF8_BOM)
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
        damage = None
        try:
            # Arrow's reader threads and a Python file object can abort the
            # process at exit (pyarrow 25: "terminate called without an active
            # exception"); an in-memory buffer has no such problem.
            table = parquet.read_row_group(group, use_threads=isinstance(raw, pa.BufferReader))
        except Exception as error:  # pyarrow raises several types for damaged pages
            damage = error
        else:
            try:
                builder.add_table(table, file.relpath, index)
            except UnconvertibleRows as error:
                damage = error.__cause__ or error
        if damage is not None:
            builder.reject(RejectReason.CORRUPT_ROW_GROUP, file.relpath,
                           f"row group {group} (rows {index}..{index + group_rows - 1})", None,
                           f"{type(damage).__name__}: {damage}; {group_rows} rows lost", b"")
            stats.records += 1
            stats.rows_lost_in_damage += group_rows
            index += group_rows
            continue
        stats.records += group_rows
        index += group_rows
        yield from builder.take()


READERS = {"jsonl": read_jsonl, "text": read_text}


def _unopenable(file: InputFile) -> tuple[str, str] | None:
    """(reason, detail) for a path that must not be opened: listed as such, or a local
    path that is no longer a regular file (opening a FIFO would wait forever)."""
    if file.format == REJECTED_FORMAT:
        return file.reject_reason, file.reject_detail
    if "://" in file.path:
        return None
    try:
        mode = os.stat(file.path).st_mode
    except OSError:
        return None  # opening it says what is wrong
    if stat.S_ISREG(mode):
        return None
    return RejectReason.NOT_A_REGULAR_FILE, f"{special_kind(mode)}, not a regular file: not opened"


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
    problem = _unopenable(file)
    handle = None
    if problem is None:
        try:
            handle = open_file(file.path)
        except Exception as error:
            problem = RejectReason.UNREADABLE_FILE, f"cannot open: {type(error).__name__}: {error}"
    if handle is None:
        builder.reject(problem[0], file.relpath, "folder" if problem[0] == RejectReason.UNREADABLE_DIRECTORY
                       else "file", None, problem[1], b"")
        stats.records += 1
        yield from builder.take()
        yield "stats", stats
        return
    with handle:
        if file.format == "parquet" and file.size <= PARQUET_IN_MEMORY_BYTES:
            # Read once, for both the digest and the row groups, which Arrow
            # then decodes from its own buffer instead of through a Python file.
            data = handle.read()
            hashing = HashingReader(io.BytesIO(data))
            hashing.drain()
            yield from read_parquet(file, pa.BufferReader(data), builder, stats)
        elif file.format == "parquet":
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
