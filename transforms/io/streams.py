"""Byte streams for the readers: hashing every byte read, the errors a damaged
input raises, and a spool for decompressed data awaiting its checksum (Beam-free)."""

from __future__ import annotations

import io
import tempfile
import zlib
from typing import BinaryIO, Iterator

import xxhash

from corpusmill.schemas.documents import RejectReason

READ_CHUNK = 1 << 20
UTF8_BOM = b"\xef\xbb\xbf"


class DamagedInput(Exception):
    """Raised by the decoders when compressed input ends, breaks or is not compressed at all.

    Attributes:
        reason: The ``RejectReason`` of the damaged rest of the file
            (``truncated_file``, ``corrupt_file``, ``unreadable_file``, ``empty_file``).
        offset: Compressed byte offset where the damage was found.
    """

    def __init__(self, message: str, reason: str, offset: int = 0):
        super().__init__(message)
        self.reason = reason
        self.offset = offset

    @property
    def truncated(self) -> bool:
        return self.reason == RejectReason.TRUNCATED_FILE


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
            data = self._raw.read(READ_CHUNK)
            if not data:
                break
            self._hash.update(data)
            self.bytes_read += len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


# Decompressed data of one checksummed unit (a gzip member, a zstd frame with a
# content checksum, a bzip2 or xz stream) is held until the checksum at the
# unit's end is checked; up to this many bytes in memory, the rest on local disk.
SPOOL_MEMORY_BYTES = 64 << 20


class Spool:
    """Holds decompressed bytes until they are known to be clean, in memory up to a bound."""

    def __init__(self, memory_bytes: int | None = None):
        self._memory_bytes = SPOOL_MEMORY_BYTES if memory_bytes is None else memory_bytes
        self._chunks: list[bytes] = []
        self._file = None
        self.size = 0

    def append(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if self._file is not None:
            self._file.write(data)
            return
        self._chunks.append(data)
        if self.size > self._memory_bytes:
            self._file = tempfile.TemporaryFile(prefix="corpusmill-spool-")
            for chunk in self._chunks:
                self._file.write(chunk)
            self._chunks = []

    def blocks(self, block_bytes: int = READ_CHUNK) -> Iterator[bytes]:
        """The held bytes in order, in blocks of about ``block_bytes``; empties the spool."""
        self.size = 0
        if self._file is None:
            chunks, self._chunks = self._chunks, []
            yield from join_blocks(chunks, block_bytes)
            return
        handle, self._file = self._file, None
        with handle:
            handle.seek(0)
            while block := handle.read(block_bytes):
                yield block

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._chunks = []


def join_blocks(chunks: list[bytes], block_bytes: int) -> Iterator[bytes]:
    """Joins small chunks into blocks of at least ``block_bytes`` (the last may be shorter)."""
    pending: list[bytes] = []
    size = 0
    for chunk in chunks:
        pending.append(chunk)
        size += len(chunk)
        if size >= block_bytes:
            yield b"".join(pending)
            pending, size = [], 0
    if size:
        yield b"".join(pending)


# What a reader catches around decoding: the decoders' own error, and what
# reading the raw file can raise (an unreadable file, a failed network read).
DAMAGE_ERRORS = (DamagedInput, EOFError, zlib.error, OSError)
