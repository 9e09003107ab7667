"""Build text corpora from the Linux kernel documentation that Debian installs.

The Debian packages ``linux-doc-6.1`` and ``linux-doc-6.12`` install the kernel's
``Documentation/`` tree as gzipped reStructuredText and plain-text files. The same
file in two kernel versions is a natural near-duplicate (a few lines edited, a
section added), which is exactly what a MinHash-LSH stage must find, and the files
that exist in only one version are natural singletons. This module turns those trees
into records in corpusmill's input shape:

    {"id": "linux-6.1/Documentation/admin-guide/README.rst",
     "text": "...", "source": "linux-doc-6.1", "url": null,
     "timestamp": "2026-11-16T10:17:40+00:00", "kernel_version": "6.1.192-2"}

``kernel_version`` is not a Document field; the reader carries it into ``meta``.

Two products are built from the records:

* the bundled sample, ``jobs/sample/linux-doc-sample.jsonl.zst`` (a few thousand
  documents, whole subtrees from both versions, under 5 MB), and
* the full corpus for benchmarks (every .rst/.txt of both versions, optionally
  repeated N times under fresh ids) as JSONL.gz, Parquet and/or JSONL.zst.

Everything here is Beam-free and deterministic: files are visited in sorted order
and every writer produces byte-identical output for the same input.

Run ``python -m corpusmill.jobs.linux_doc --help`` for the command line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import zstandard

from corpusmill.jobs.linux_doc_packages import (
    DOC_ROOT,
    INSTALL_HINT,  # noqa: F401  (the hint this module's users print)
    KERNEL_SERIES,
    CollectStats,
    LinuxDocNotInstalledError,
    collect_documents,
    relative_document_path,
)


# Subtrees of Documentation/ that make up the bundled sample, taken from both
# versions. Prose guides that were lightly edited between 6.1 and 6.12 give
# near-duplicates, unchanged files give exact duplicates, and files added or removed
# give singletons. 6.12 moved Documentation/arm/ to Documentation/arch/arm/, so
# taking both folders adds duplicates whose ids share nothing: a dedup stage must
# find them by content alone. Together these stay well under the size cap.
SAMPLE_SUBTREES: tuple[str, ...] = (
    "admin-guide",
    "arch/arm",
    "arm",
    "core-api",
    "driver-api",
    "filesystems",
    "hwmon",
    "mm",
    "networking",
    "process",
)
# Decimal megabytes, so the cap holds whichever way "5 MB" is read.
SAMPLE_MAX_BYTES = 5_000_000
ZSTD_LEVEL = 19
# The benchmark corpus is rebuilt on demand and read many times; zstd's default
# level keeps building it fast, while the checked-in sample pays for level 19 once.
CORPUS_ZSTD_LEVEL = 3
PARQUET_ROW_GROUP_ROWS = 1000
DEFAULT_CORPUS_FORMATS: tuple[str, ...] = ("jsonl.gz", "parquet")
SUPPORTED_CORPUS_FORMATS: tuple[str, ...] = ("jsonl.gz", "parquet", "jsonl.zst")

# The Parquet schema of the full corpus. The timestamp stays a string so that the
# Parquet and JSONL copies carry identical values and the reader's own parsing is
# what the benchmark measures.
CORPUS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("url", pa.string()),
        ("timestamp", pa.string()),
        ("kernel_version", pa.string()),
    ]
)

def encode_jsonl_line(record: dict[str, Any]) -> bytes:
    """Serialises one record as a canonical JSON line (sorted keys, raw UTF-8)."""
    return (json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _temporary_path(path: Path) -> Path:
    # A hidden sibling in the same folder, so the final os.replace is atomic and a
    # crash never leaves a file under the final name.
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_jsonl_zst(records: Iterable[dict[str, Any]], path: Path) -> int:
    """Writes records as zstd-compressed JSON lines, atomically and reproducibly.

    Args:
        records: Records to write, in order.
        path: Destination file.

    Returns:
        The number of records written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_path(path)
    count = 0
    # Single-threaded compression at a fixed level: the frame then depends only on
    # the bytes written, so reruns are byte-identical.
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=0)
    try:
        with open(temporary, "wb") as raw, compressor.stream_writer(raw) as writer:
            for record in records:
                writer.write(encode_jsonl_line(record))
                count += 1
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return count


def sample_records(doc_root: Path = DOC_ROOT, stats: CollectStats | None = None) -> list[dict[str, Any]]:
    """Collects the bundled sample's records in their file order.

    Records are ordered by relative path and then by kernel series, so the two
    versions of a file sit next to each other: zstd then finds the shared text
    inside its window and the sample holds about twice the documents per megabyte.

    Args:
        doc_root: Folder holding Debian's per-package documentation.
        stats: Counters to update while reading.

    Returns:
        The sample records.
    """
    records = list(collect_documents(KERNEL_SERIES, SAMPLE_SUBTREES, doc_root, stats))
    series_rank = {f"linux-doc-{name}": rank for rank, name in enumerate(KERNEL_SERIES)}
    records.sort(key=lambda record: (relative_document_path(record["id"]), series_rank[record["source"]]))
    return records


def overlap_counts(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Counts relative paths present in several versions and how many are identical.

    Args:
        records: Records whose ids carry a "linux-X.Y/" prefix.

    Returns:
        {"paths_in_all_versions": ..., "identical_text": ..., "differing_text": ...,
        "single_version_paths": ...}.
    """
    texts_by_path: dict[str, list[str]] = {}
    for record in records:
        texts_by_path.setdefault(relative_document_path(record["id"]), []).append(record["text"])
    shared = [texts for texts in texts_by_path.values() if len(texts) > 1]
    identical = sum(1 for texts in shared if len(set(texts)) == 1)
    return {
        "paths_in_all_versions": len(shared),
        "identical_text": identical,
        "differing_text": len(shared) - identical,
        "single_version_paths": len(texts_by_path) - len(shared),
    }


def build_sample(output: Path, doc_root: Path = DOC_ROOT) -> dict[str, Any]:
    """Writes the bundled sample and returns what it holds.

    Args:
        output: Destination .jsonl.zst file.
        doc_root: Folder holding Debian's per-package documentation.

    Returns:
        Statistics: documents, bytes on disk, text size, per-source counts and the
        version overlap.

    Raises:
        ValueError: If the written sample exceeds SAMPLE_MAX_BYTES; the file is
            removed so an oversized sample is never left behind.
    """
    collected = CollectStats()
    records = sample_records(doc_root, collected)
    documents = write_jsonl_zst(records, output)
    size = output.stat().st_size
    if size > SAMPLE_MAX_BYTES:
        output.unlink()
        raise ValueError(f"sample is {size} bytes, over the {SAMPLE_MAX_BYTES}-byte cap; choose fewer subtrees")
    per_source: dict[str, int] = {}
    for record in records:
        per_source[record["source"]] = per_source.get(record["source"], 0) + 1
    return {
        "documents": documents,
        "bytes": size,
        "text_bytes": sum(len(record["text"].encode("utf-8")) for record in records),
        "per_source": per_source,
        "subtrees": list(SAMPLE_SUBTREES),
        "skipped_empty": collected.skipped_empty,
        "invalid_utf8": collected.invalid_utf8,
        **overlap_counts(records),
    }


def _copied_records(records_factory: Callable[[], Iterable[dict[str, Any]]], copies: int) -> Iterator[dict[str, Any]]:
    # Each copy re-reads the trees instead of holding the corpus in memory, so the
    # writer's footprint stays flat however many copies are asked for.
    for copy in range(1, copies + 1):
        for record in records_factory():
            if copy > 1:
                record = {**record, "id": f"{record['id']}#copy{copy}"}
            yield record


def corpus_paths(output_dir: Path, copies: int, formats: Sequence[str]) -> dict[str, Path]:
    """Returns the file each corpus format is written to."""
    return {fmt: Path(output_dir) / f"linux-doc-x{copies}.{fmt}" for fmt in formats}


def count_records(path: Path) -> int | None:
    """Counts the records of a corpus file, or returns None if it cannot be read.

    Parquet is counted from its footer; JSON lines by counting newlines of the
    decompressed stream.
    """
    try:
        if path.name.endswith(".parquet"):
            return pq.ParquetFile(path).metadata.num_rows
        if path.name.endswith(".jsonl.gz"):
            stream = gzip.open(path, "rb")
        elif path.name.endswith(".jsonl.zst"):
            stream = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
        else:
            return None
        lines = 0
        with stream:
            while chunk := stream.read(1 << 20):
                lines += chunk.count(b"\n")
        return lines
    except (OSError, EOFError, zstandard.ZstdError, pa.ArrowException):
        return None


def count_documents(series: Sequence[str] = KERNEL_SERIES, doc_root: Path = DOC_ROOT) -> int:
    """Counts the records collect_documents would yield, without keeping them."""
    stats = CollectStats()
    for _ in collect_documents(series, None, doc_root, stats):
        pass
    return stats.documents


class _CorpusWriters:
    """Writes one record stream to several formats at once, atomically."""

    def __init__(self, targets: dict[str, Path]):
        self._targets = targets
        self._temporaries = {fmt: _temporary_path(path) for fmt, path in targets.items()}
        self._batch: list[dict[str, Any]] = []
        self._handles: list[Any] = []
        self._gzip = self._zstd = self._parquet = None

    def __enter__(self) -> _CorpusWriters:
        for fmt, temporary in self._temporaries.items():
            temporary.parent.mkdir(parents=True, exist_ok=True)
            if fmt == "jsonl.gz":
                raw = open(temporary, "wb")
                # mtime=0 and no file name in the header keep reruns byte-identical.
                self._gzip = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0)
                self._handles += [self._gzip, raw]
            elif fmt == "jsonl.zst":
                raw = open(temporary, "wb")
                self._zstd = zstandard.ZstdCompressor(level=CORPUS_ZSTD_LEVEL, threads=0).stream_writer(raw)
                self._handles += [self._zstd]
            elif fmt == "parquet":
                self._parquet = pq.ParquetWriter(temporary, CORPUS_SCHEMA, compression="zstd")
                self._handles += [self._parquet]
            else:
                raise ValueError(f"unknown corpus format {fmt!r}; allowed: {', '.join(SUPPORTED_CORPUS_FORMATS)}")
        return self

    def write(self, record: dict[str, Any]) -> None:
        self._batch.append(record)
        if len(self._batch) >= PARQUET_ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._batch:
            return
        if self._gzip is not None or self._zstd is not None:
            payload = b"".join(encode_jsonl_line(record) for record in self._batch)
            for writer in (self._gzip, self._zstd):
                if writer is not None:
                    writer.write(payload)
        if self._parquet is not None:
            table = pa.Table.from_pylist(self._batch, schema=CORPUS_SCHEMA)
            self._parquet.write_table(table, row_group_size=PARQUET_ROW_GROUP_ROWS)
        self._batch = []

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: Any) -> None:
        try:
            if exc_type is None:
                self._flush()
            for handle in self._handles:
                handle.close()
            if exc_type is None:
                for fmt, temporary in self._temporaries.items():
                    os.replace(temporary, self._targets[fmt])
        finally:
            for temporary in self._temporaries.values():
                temporary.unlink(missing_ok=True)


def ensure_corpus(
    output_dir: str | os.PathLike[str],
    copies: int = 1,
    formats: Sequence[str] = DEFAULT_CORPUS_FORMATS,
    doc_root: Path = DOC_ROOT,
) -> dict[str, Path]:
    """Writes the full linux-doc corpus unless an intact copy is already there.

    The corpus is every .rst/.txt document of both packages, repeated ``copies``
    times; copy k > 1 appends "#copy{k}" to every id and keeps the text, so the
    corpus grows without changing its duplicate structure per copy. A file counts as
    cached when it exists and holds the expected number of records.

    Args:
        output_dir: Folder for linux-doc-x{copies}.{format} files.
        copies: How many times to repeat the corpus (>= 1).
        formats: Any of "jsonl.gz", "parquet", "jsonl.zst".
        doc_root: Folder holding Debian's per-package documentation.

    Returns:
        Path of each requested format's file, keyed by format.

    Raises:
        ValueError: If copies < 1 or a format is unknown.
        LinuxDocNotInstalledError: If the Debian packages are not installed.
    """
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    unknown = sorted(set(formats) - set(SUPPORTED_CORPUS_FORMATS))
    if unknown:
        raise ValueError(f"unknown corpus format(s) {unknown}; allowed: {', '.join(SUPPORTED_CORPUS_FORMATS)}")
    targets = corpus_paths(Path(output_dir), copies, formats)
    expected = count_documents(KERNEL_SERIES, doc_root) * copies
    stale = {fmt: path for fmt, path in targets.items() if count_records(path) != expected}
    if stale:
        with _CorpusWriters(stale) as writers:
            for record in _copied_records(lambda: collect_documents(KERNEL_SERIES, None, doc_root), copies):
                writers.write(record)
    return targets


def corpus_stats(paths: dict[str, Path]) -> dict[str, Any]:
    """Summarises a written corpus: file sizes, documents and text volume.

    Reads the Parquet file one row group at a time, so summarising a many-copy
    corpus costs no more memory than summarising one copy.

    Args:
        paths: Corpus files keyed by format, as ensure_corpus returns them.

    Returns:
        {"files": {format: bytes}, "documents": int} plus "text_bytes" and
        "row_groups" when a Parquet file is among the paths.
    """
    summary: dict[str, Any] = {"files": {fmt: path.stat().st_size for fmt, path in paths.items()}}
    if "parquet" not in paths:
        summary["documents"] = count_records(next(iter(paths.values())))
        return summary
    parquet = pq.ParquetFile(paths["parquet"])
    text_bytes = 0
    for group in range(parquet.num_row_groups):
        texts = parquet.read_row_group(group, columns=["text"]).column("text")
        text_bytes += pc.sum(pc.binary_length(texts)).as_py() or 0
    summary.update(documents=parquet.metadata.num_rows, text_bytes=text_bytes, row_groups=parquet.num_row_groups)
    return summary


def _parse_formats(value: str) -> list[str]:
    formats = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [fmt for fmt in formats if fmt not in SUPPORTED_CORPUS_FORMATS]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(
            f"formats must be a comma-separated subset of {', '.join(SUPPORTED_CORPUS_FORMATS)}, got {value!r}"
        )
    return formats


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m corpusmill.jobs.linux_doc",
        description="Build corpora from the Debian linux-doc-6.1 and linux-doc-6.12 packages.",
    )
    parser.add_argument(
        "--doc-root", type=Path, default=DOC_ROOT, help="folder holding linux-doc-X.Y/ (default %(default)s)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    sample = commands.add_parser("sample", help="build the bundled sample (.jsonl.zst, <= 5 MB)")
    sample.add_argument("--output", type=Path, required=True, help="destination .jsonl.zst file")
    corpus = commands.add_parser("corpus", help="write the full corpus for benchmarks")
    corpus.add_argument("--output-dir", type=Path, required=True, help="folder for linux-doc-x{N}.* files")
    corpus.add_argument(
        "--copies", type=int, default=1, help="repeat the corpus N times under fresh ids (default 1)"
    )
    corpus.add_argument(
        "--formats",
        type=_parse_formats,
        default=list(DEFAULT_CORPUS_FORMATS),
        help=(
            f"comma-separated subset of {','.join(SUPPORTED_CORPUS_FORMATS)} "
            f"(default {','.join(DEFAULT_CORPUS_FORMATS)})"
        ),
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the process exit status."""
    args = _build_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        if args.command == "sample":
            stats = build_sample(args.output, args.doc_root)
            print(f"wrote {args.output}: {stats['documents']} documents, {stats['bytes']} bytes "
                  f"({stats['text_bytes']} bytes of text)")
            print(f"  per source: {json.dumps(stats['per_source'], sort_keys=True)}")
            print(f"  subtrees: {', '.join(stats['subtrees'])}")
            print(f"  skipped empty files: {stats['skipped_empty']}, decoded with replacement "
                  f"(not UTF-8): {stats['invalid_utf8']}")
            print(f"  paths in both versions: {stats['paths_in_all_versions']} "
                  f"(identical text: {stats['identical_text']}, differing: {stats['differing_text']}); "
                  f"paths in one version only: {stats['single_version_paths']}")
        else:
            if args.copies < 1:
                raise ValueError(f"--copies must be >= 1, got {args.copies}")
            paths = ensure_corpus(args.output_dir, args.copies, args.formats, args.doc_root)
            stats = corpus_stats(paths)
            print(f"corpus x{args.copies}: {stats['documents']} documents"
                  + (f", {stats['text_bytes'] / 1e6:.1f} MB of text" if "text_bytes" in stats else ""))
            for fmt, path in paths.items():
                print(f"  {path}: {stats['files'][fmt]} bytes")
    except (LinuxDocNotInstalledError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"  took {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
