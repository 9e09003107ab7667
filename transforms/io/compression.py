"""Decompression that tells clean, damaged and truncated data apart (Beam-free).

A compressed file is a sequence of units: gzip members, zstd frames, bzip2 or
xz streams. ``decoded_blocks`` yields the decompressed bytes of a file in
blocks, each with ``damage``: None for clean data, else a sentence saying why
the bytes cannot be trusted.

- A unit with a checksum (every gzip member, bzip2 and xz stream, a zstd frame
  written with a content checksum) is held in a ``Spool`` until its checksum
  is checked: a garbled byte in the middle of a gzip member decodes into
  plausible text and is only caught by the CRC at the member's end. If the
  checksum fails, or the data breaks inside the unit, the unit's bytes come
  out with ``damage`` set; the reader rejects every record in them.
- A zstd frame without a checksum cannot be checked; it is decoded in small
  steps and passed on as it comes, so a break keeps what was decoded before it.
- When the input stops inside a unit, what was decoded is passed on as clean
  (truncation does not garble the bytes before it), then ``DamagedInput``
  with ``truncated_file`` is raised. A break that leaves the rest of the file
  unreadable raises ``DamagedInput`` with ``corrupt_file``; a file that is not
  in its format at all, ``unreadable_file``; a file of zero bytes, ``empty_file``.
"""

from __future__ import annotations

import bz2
import io
import lzma
import struct
import zlib
from typing import BinaryIO, Iterator, NamedTuple

import zstandard

from corpusmill.schemas.documents import RejectReason
from corpusmill.transforms.io.streams import READ_CHUNK, DamagedInput, Spool, join_blocks

# Compressed bytes handed to a decompressor at a time: a break loses at most
# the output of one step of an unchecked zstd frame.
STEP = 1 << 14

_NAMES = {"gzip": "gzip member", "zstd": "zstd frame", "bzip2": "bzip2 stream", "xz": "xz stream"}
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class Block(NamedTuple):
    """Decompressed bytes; ``damage`` says why they cannot be trusted (None: clean)."""

    data: bytes
    damage: str | None


class BadData(Exception):
    """A decompressor met bytes it cannot decode."""


class _Input:
    """Compressed bytes read ahead from a raw stream, with the offset of each byte."""

    def __init__(self, raw: io.BufferedReader):
        self._raw = raw
        self._buf = b""
        self._pos = 0
        self.offset = 0  # file offset of the next byte to take

    def available(self) -> int:
        return len(self._buf) - self._pos

    def fill(self, n: int) -> bool:
        """Reads until ``n`` bytes are available; False if the file ends first."""
        while self.available() < n:
            chunk = self._raw.read1(READ_CHUNK)
            if not chunk:
                return False
            self._buf = self._buf[self._pos:] + chunk
            self._pos = 0
        return True

    def peek(self, n: int) -> bytes:
        return self._buf[self._pos: self._pos + n]

    def take(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer only at the end of the file; empty at its end)."""
        if not self.available():
            self.fill(1)
        data = self._buf[self._pos: self._pos + n]
        self._pos += len(data)
        self.offset += len(data)
        return data

    def give_back(self, data: bytes) -> None:
        """Returns the bytes a decompressor did not use (they followed its unit)."""
        if data:
            self._buf = data + self._buf[self._pos:]
            self._pos = 0
            self.offset -= len(data)


def _gzip_header_length(head: bytes) -> int | None:
    """Length of the gzip member header at the start of ``head``; None if more bytes are needed."""
    if head[:3] != b"\x1f\x8b\x08"[: len(head[:3])]:
        raise BadData(f"not a gzip member (starts with {head[:3]!r})")
    if len(head) < 10:
        return None
    flags, pos = head[3], 10
    if flags & 4:  # FEXTRA
        if len(head) < pos + 2:
            return None
        pos += 2 + struct.unpack("<H", head[pos: pos + 2])[0]
    for flag in (8, 16):  # FNAME, FCOMMENT: zero-terminated
        if flags & flag:
            end = head.find(b"\0", pos)
            if end < 0:
                return None
            pos = end + 1
    if flags & 2:  # FHCRC
        pos += 2
    return pos if len(head) >= pos else None


class _GzipMember:
    """One gzip member: header, deflate data, then CRC-32 and length, checked here."""

    checked = True

    def __init__(self):
        self._state = "header"
        self._pending = b""
        self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        self._crc = 0
        self._size = 0
        self.eof = False
        self.unused = b""
        self.mismatch: str | None = None

    def decompress(self, data: bytes) -> bytes:
        out = b""
        if self._state == "header":
            self._pending += data
            length = _gzip_header_length(self._pending)
            if length is None:
                return b""
            data, self._pending, self._state = self._pending[length:], b"", "body"
        if self._state == "body":
            try:
                out = self._inflate.decompress(data)
            except zlib.error as error:
                raise BadData(f"corrupt deflate data ({error})") from error
            self._crc = zlib.crc32(out, self._crc)
            self._size += len(out)
            if not self._inflate.eof:
                return out
            data, self._state = self._inflate.unused_data, "trailer"
        self._pending += data
        if len(self._pending) >= 8:
            crc, size = struct.unpack("<II", self._pending[:8])
            self.unused, self.eof = self._pending[8:], True
            if crc != self._crc:
                self.mismatch = f"gzip CRC-32 check failed (stored {crc:08x}, computed {self._crc:08x})"
            elif size != self._size & 0xFFFFFFFF:
                self.mismatch = f"gzip length check failed (stored {size}, decoded {self._size & 0xFFFFFFFF})"
        return out


class _ZstdFrameBounds:
    """Finds where a zstd frame ends by walking its block headers, so that the
    decoder of one frame never sees the bytes of the next one."""

    def __init__(self):
        self._head = b""
        self._want = 4
        self._state = "magic"
        self._skip = 0
        self.checksum = False
        self.done = False

    def take(self, data: bytes) -> int:
        """How many leading bytes of ``data`` belong to the frame, stopping before its checksum.

        The checksum's four bytes come alone from a later call, so that a
        decoder that fails on them has already given out all the frame's data.
        """
        used = 0
        while not self.done and used < len(data):
            if self._skip:
                n = min(self._skip, len(data) - used)
                used += n
                self._skip -= n
                if not self._skip and self._state == "checksum":
                    self._skip, self._state = 4, "end"
                    return used
                self.done = not self._skip and self._state == "end"
                continue
            n = min(self._want - len(self._head), len(data) - used)
            self._head += data[used: used + n]
            used += n
            if len(self._head) == self._want:
                head, self._head = self._head, b""
                self._parse(head)
        return used

    def _parse(self, head: bytes) -> None:
        if self._state == "magic":
            skippable = head[0] & 0xF0 == 0x50 and head[1:] == b"\x2a\x4d\x18"
            self._state, self._want = ("descriptor", 1) if head == _ZSTD_MAGIC else ("skippable", 4)
            self.done = head != _ZSTD_MAGIC and not skippable  # no frame: its decoder says so
        elif self._state == "descriptor":
            fhd = head[0]
            single_segment = fhd >> 5 & 1
            self.checksum = bool(fhd & 4)
            content_size = (single_segment, 2, 4, 8)[fhd >> 6]
            self._skip = (1 - single_segment) + (0, 1, 2, 4)[fhd & 3] + content_size
            self._state, self._want = "block", 3
        elif self._state == "skippable":
            self._skip, self._state = int.from_bytes(head, "little"), "end"
            self.done = not self._skip
        else:  # a block header: last-block bit, type, size
            value = int.from_bytes(head, "little")
            self._skip = 1 if (value >> 1 & 3) == 1 else value >> 3  # an RLE block holds one byte
            if value & 1:
                self._state = "checksum" if self.checksum else "end"
                if not self._skip and self.checksum:
                    self._skip, self._state = 4, "end"
                self.done = not self._skip


class _ZstdFrame:
    """One zstd frame (or skippable frame); checked when it carries a content
    checksum, which libzstd verifies at the frame's end."""

    def __init__(self, head: bytes):
        self.checked = head[:4] == _ZSTD_MAGIC and len(head) > 4 and bool(head[4] & 4)
        self._bounds = _ZstdFrameBounds()
        # A decompressor per frame: one shared by the threads of a worker would mix their states.
        self._obj = zstandard.ZstdDecompressor().decompressobj()
        self.eof = False
        self.unused = b""
        self.mismatch: str | None = None

    def decompress(self, data: bytes) -> bytes:
        out = []
        while data and not self.eof:
            n = self._bounds.take(data)
            part, data = data[:n], data[n:]
            try:
                out.append(self._obj.decompress(part))
            except zstandard.ZstdError as error:
                if not (self._bounds.done and self.checked and "checksum" in str(error)):
                    raise BadData(f"corrupt zstd data ({error})") from error
                self.mismatch = f"zstd content checksum check failed ({error})"
            if self._obj.eof or self.mismatch:
                self.eof, self.unused = True, (b"" if self.mismatch else self._obj.unused_data) + data
            elif self._bounds.done:
                raise BadData("zstd frame ends, by its block headers, before its data does")
        return b"".join(out)


class _StdlibStream:
    """One bzip2 or xz stream, decoded by the standard library, which checks its checksums."""

    checked = True

    def __init__(self, compression: str):
        self._obj = bz2.BZ2Decompressor() if compression == "bzip2" else lzma.LZMADecompressor(lzma.FORMAT_XZ)
        self.eof = False
        self.unused = b""
        self.mismatch: str | None = None

    def decompress(self, data: bytes) -> bytes:
        try:
            out = self._obj.decompress(data)
        except (OSError, lzma.LZMAError, EOFError) as error:
            raise BadData(f"corrupt data ({error})") from error
        if self._obj.eof:
            self.eof, self.unused = True, self._obj.unused_data
        return out


def _is_unit_start(compression: str, head: bytes) -> bool:
    """Whether ``head`` (the first bytes of a unit, maybe fewer than a magic number) can start one."""
    if compression == "gzip":
        magics = [b"\x1f\x8b"]
    elif compression == "bzip2":
        magics = [b"BZh"]
    elif compression == "xz":
        magics = [b"\xfd7zXZ\x00"]
    else:
        # A zstd frame, or a skippable frame (magic 0x184D2A5?, little-endian).
        return _ZSTD_MAGIC.startswith(head[:4]) or (
            head[0] & 0xF0 == 0x50 and b"\x2a\x4d\x18".startswith(head[1:4]))
    return any(magic.startswith(head[: len(magic)]) for magic in magics)


def _new_unit(compression: str, source: _Input):
    if compression == "gzip":
        return _GzipMember()
    if compression == "zstd":
        source.fill(5)
        return _ZstdFrame(source.peek(5))
    return _StdlibStream(compression)


def decoded_blocks(raw: BinaryIO, compression: str) -> Iterator[Block]:
    """The decompressed bytes of a file in blocks of about READ_CHUNK bytes, each marked clean or damaged.

    Args:
        raw: The file's bytes.
        compression: ``none``, ``gzip``, ``zstd``, ``bzip2`` or ``xz``.

    Raises:
        DamagedInput: the rest of the file cannot be read (see the module docstring).
    """
    # read1 on a buffer of READ_CHUNK reads straight into the returned bytes.
    buffered = io.BufferedReader(raw, READ_CHUNK)
    if compression == "none":
        while block := buffered.read1(READ_CHUNK):
            yield Block(block, None)
        return
    source = _Input(buffered)
    if not source.fill(1):
        raise DamagedInput(f"empty {compression} file: 0 bytes, not even a header", RejectReason.EMPTY_FILE, 0)
    first = True
    while True:
        if not first and compression in ("gzip", "xz"):
            _skip_padding(source)  # zero bytes between or after units, as gzip and xz allow
        if not source.fill(1):
            return
        _check_unit_start(compression, source, first)
        yield from _decode_unit(compression, source)
        first = False


def _skip_padding(source: _Input) -> None:
    while source.fill(1) and source.peek(1) == b"\0":
        source.take(1)


def _check_unit_start(compression: str, source: _Input, first: bool) -> None:
    source.fill(6)
    head = source.peek(6)
    if _is_unit_start(compression, head):
        return
    where = f"compressed byte {source.offset}"
    if first:
        raise DamagedInput(f"not a {compression} file (starts with {head[:4]!r})",
                           RejectReason.UNREADABLE_FILE, source.offset)
    raise DamagedInput(f"bytes that are not a {_NAMES[compression]} at {where} (starting {head[:4]!r}); "
                       f"the rest of the file was not read", RejectReason.CORRUPT_FILE, source.offset)


def _decode_unit(compression: str, source: _Input) -> Iterator[Block]:
    """Decodes one unit; yields its bytes, held until checked when it has a checksum."""
    start = source.offset
    name = _NAMES[compression]
    unit = _new_unit(compression, source)
    spool = Spool() if unit.checked else None
    pending: list[bytes] = []
    pending_bytes = 0
    try:
        while not unit.eof:
            data = source.take(STEP)
            if not data:
                yield from _release(spool, pending, None)
                raise DamagedInput(f"{compression} file ends inside the {name} that starts at compressed byte "
                                   f"{start} (at byte {source.offset})", RejectReason.TRUNCATED_FILE, source.offset)
            try:
                out = unit.decompress(data)
            except BadData as error:
                detail = (f"{error} in the {name} that starts at compressed byte {start}, found by compressed "
                          f"byte {source.offset}")
                yield from _release(spool, pending, f"{detail}; no record of the {name} is kept"
                                    if spool is not None else None)
                raise DamagedInput(f"{detail}; the rest of the file was not read", RejectReason.CORRUPT_FILE,
                                   source.offset) from error
            if spool is not None:
                spool.append(out)
            elif out:
                pending.append(out)
                pending_bytes += len(out)
                if pending_bytes >= READ_CHUNK:
                    yield Block(b"".join(pending), None)
                    pending, pending_bytes = [], 0
        source.give_back(unit.unused)
        damage = None
        if unit.mismatch:
            damage = (f"{unit.mismatch}: the {name} at compressed bytes {start}..{source.offset} "
                      f"does not decode to what was compressed; no record of it is kept")
        yield from _release(spool, pending, damage)
    finally:
        if spool is not None:
            spool.close()


def _release(spool: Spool | None, pending: list[bytes], damage: str | None) -> Iterator[Block]:
    blocks = spool.blocks() if spool is not None else join_blocks(pending, READ_CHUNK)
    for block in blocks:
        yield Block(block, damage)
    pending.clear()
