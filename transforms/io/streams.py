"""Byte streams for the readers: hashing every byte read, and decompression that
tells a truncated or corrupt stream from a clean end of file."""

from __future__ import annotations

import gzip
import io
import zlib
from typing import BinaryIO

import xxhash
import zstandard

READ_CHUNK = 1 << 20


class DamagedInput(Exception):
    """Raised by stream wrappers when compressed input ends or breaks mid-stream."""

    def __init__(self, message: str, truncated: bool):
        super().__init__(message)
        self.truncated = truncated


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
            chunk = self._raw.read(READ_CHUNK)
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


def decompressed(raw: io.RawIOBase, compression: str) -> BinaryIO:
    if compression == "gzip":
        return gzip.GzipFile(fileobj=io.BufferedReader(raw, READ_CHUNK), mode="rb")
    if compression == "zstd":
        return io.BufferedReader(_StrictZstdReader(io.BufferedReader(raw, READ_CHUNK)), READ_CHUNK)
    return io.BufferedReader(raw, READ_CHUNK)


DAMAGE_ERRORS = (DamagedInput, EOFError, gzip.BadGzipFile, zlib.error, OSError)
