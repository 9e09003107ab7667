"""Files on any Beam filesystem (local, gs://, ...): listing, opening, writing, removing."""

from __future__ import annotations

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from corpusmill.transforms.io import inputs


def match(pattern: str) -> list[tuple[str, int]]:
    """(path, size in bytes) of every file a glob matches."""
    return [(m.path, m.size_in_bytes) for m in FileSystems.match([pattern])[0].metadata_list]


def list_inputs(patterns: tuple[str, ...] | list[str], forced_format: str = "auto") -> inputs.InputListing:
    """``inputs.list_inputs``: local paths listed directly, other schemes through Beam's filesystems.

    Returns:
        ``InputListing(files, skipped)``: the files to read, and ``SkippedFile(path, reason)``
        for every matched file that is not read.
    """
    return inputs.list_inputs(patterns, forced_format, match)


def open_raw(path: str):
    """Opens a path as raw bytes; corpusmill decompresses itself so that a
    truncated stream is detected instead of read as a short file."""
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def read_bytes(path: str) -> bytes:
    """The whole content of one file."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return handle.read()


def write_bytes(path: str, data) -> None:
    """Writes bytes (or any buffer, e.g. a Parquet file from ``encode_parquet``) to a path."""
    with FileSystems.create(path) as handle:
        # A memoryview is the bytes-like object every file handle accepts
        # without a copy; some would not take a pyarrow Buffer itself.
        handle.write(memoryview(data))


def exists(path: str) -> bool:
    """Whether a file or folder exists."""
    return FileSystems.exists(path)


def delete_tree(prefix: str) -> None:
    """Removes a folder and everything below it."""
    matched = FileSystems.match([prefix.rstrip("/") + "/**"])[0].metadata_list
    if matched:
        FileSystems.delete([m.path for m in matched])
    if FileSystems.exists(prefix):
        FileSystems.delete([prefix])
