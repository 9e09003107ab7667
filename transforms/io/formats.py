"""Beam-free readers: raw input bytes in, Arrow document and rejected batches out.

Every input record comes out exactly once, either as a row of a document
batch or as a rejected row with a reason. A damaged file keeps the records
read before the damage; the damage itself is one rejected record, so that
input = kept + rejected holds per file.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from corpusmill.schemas.documents import RejectReason
from corpusmill.transforms.io.inputs import InputFile
from corpusmill.transforms.io.streams import DAMAGE_ERRORS, READ_CHUNK, HashingReader, decompressed
from corpusmill.transforms.io.validate import BatchBuilder, FieldMap, UnconvertibleRows

__all__ = ["BatchBuilder", "FieldMap", "FileStats", "read_file"]


def damage_reason(error: Exception) -> str:
    """A stream that stops early is truncated; one that cannot be decoded is unreadable."""
    truncated = isinstance(error, EOFError) or getattr(error, "truncated", False)
    return RejectReason.TRUNCATED_FILE if truncated else RejectReason.UNREADABLE_FILE


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


def read_jsonl(file: InputFile, raw: HashingReader, builder: BatchBuilder,
               stats: FileStats) -> Iterator[tuple[str, pa.RecordBatch]]:
    """Reads JSON Lines (plain, gzip or zstd); a damaged tail becomes one rejected record."""
    index = 0
    stream = decompressed(raw, file.compression)
    tail = b""
    pending: list[bytes] = []
    pending_bytes = 0
    try:
        while True:
            # read1 does at most one read of the underlying stream, so when the
            # stream breaks, every line decompressed before the break is in
            # hand; splitting a block in C beats readline per line.
            block = stream.read1(READ_CHUNK)
            if not block:
                break
            # readlines splits on b"\n" only and keeps it, as line iteration did.
            lines = io.BytesIO(tail + block if tail else block).readlines()
            tail = lines.pop() if not lines[-1].endswith(b"\n") else b""
            # Lines are filed about JSON_BLOCK_BYTES at a time: a decompressor's
            # read1 returns a few dozen KB, and each columnar parse has a fixed cost.
            pending.extend(lines)
            pending_bytes += len(block)
            if pending_bytes >= JSON_BLOCK_BYTES:
                index = _file_lines(pending, index, file, builder, stats)
                pending, pending_bytes = [], 0
                yield from builder.take()
        index = _file_lines(pending, index, file, builder, stats)
        pending = []
        if tail:
            _file_line(tail, index, file, builder, stats)
            index += 1
    except DAMAGE_ERRORS as error:
        index = _file_lines(pending, index, file, builder, stats)
        reason = damage_reason(error)
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
        data = decompressed(raw, file.compression).read()
    except DAMAGE_ERRORS as error:
        reason = damage_reason(error)
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
