"""The Linux kernel documentation Debian installs, read as corpusmill input records.

The Debian packages ``linux-doc-6.1`` and ``linux-doc-6.12`` install the kernel's
``Documentation/`` tree as gzipped reStructuredText and plain-text files, with a
changelog that dates each package release. This module finds those files and
turns each into one record (see ``corpusmill.jobs.linux_doc`` for the corpora
built from them). Files are visited in sorted order, so the records are the
same on every run.
"""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
import gzip
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

DOC_ROOT = Path("/usr/share/doc")
KERNEL_SERIES: tuple[str, ...] = ("6.1", "6.12")
DOCUMENT_SUFFIXES: tuple[str, ...] = (".rst.gz", ".txt.gz")
INSTALL_HINT = "apt-get install linux-doc-6.1 linux-doc-6.12"
# The trailer line of a Debian changelog entry: " -- Name <mail>  RFC-2822 date".
_TRAILER = re.compile(r"^ -- .*?<[^>]*>  (?P<date>.+?)\s*$")
_HEADER = re.compile(r"^\S+ \((?P<version>[^)]+)\)")


class LinuxDocNotInstalledError(RuntimeError):
    """Raised when a linux-doc package this module reads is not installed."""


@dataclasses.dataclass(frozen=True)
class PackageRelease:
    """The Debian release of one linux-doc package, read from its changelog.

    Attributes:
        series: Kernel series the package documents, such as "6.1".
        version: Full Debian package version, such as "6.1.192-2".
        timestamp: Date of that changelog entry as an ISO-8601 UTC string, or None
            when the changelog has no parsable trailer line.
    """

    series: str
    version: str
    timestamp: str | None


@dataclasses.dataclass
class CollectStats:
    """Counts kept while collecting documents; every skipped file has a reason.

    Attributes:
        files: Document files read.
        documents: Records produced.
        skipped_empty: Files that decompress to nothing but whitespace.
        invalid_utf8: Files decoded with errors="replace" because they were not UTF-8.
    """

    files: int = 0
    documents: int = 0
    skipped_empty: int = 0
    invalid_utf8: int = 0


def package_dir(series: str, doc_root: Path = DOC_ROOT) -> Path:
    """Returns the installed documentation folder of one linux-doc package.

    Args:
        series: Kernel series, such as "6.1".
        doc_root: Folder holding Debian's per-package documentation.

    Raises:
        LinuxDocNotInstalledError: If the package's Documentation/ tree is missing.
    """
    folder = doc_root / f"linux-doc-{series}"
    if not (folder / "Documentation").is_dir():
        raise LinuxDocNotInstalledError(
            f"{folder / 'Documentation'} not found; the Linux kernel documentation "
            f"corpus needs the Debian packages: {INSTALL_HINT}"
        )
    return folder


def parse_changelog_head(changelog_text: str) -> tuple[str, str | None]:
    """Parses the version and date of the first entry of a Debian changelog.

    Args:
        changelog_text: The decompressed text of changelog.Debian.

    Returns:
        (version, timestamp): the package version of the first entry and its date as
        an ISO-8601 string in UTC, or None when the trailer cannot be parsed.

    Raises:
        ValueError: If the first line is not a changelog entry header.
    """
    lines = changelog_text.splitlines()
    header = _HEADER.match(lines[0]) if lines else None
    if header is None:
        raise ValueError("changelog does not start with a 'package (version)' header")
    timestamp = None
    for line in lines[1:]:
        trailer = _TRAILER.match(line)
        if trailer is not None:
            try:
                stamped = email.utils.parsedate_to_datetime(trailer.group("date"))
            except (TypeError, ValueError):
                break
            if stamped.tzinfo is not None:
                timestamp = stamped.astimezone(datetime.timezone.utc).isoformat()
            break
        if _HEADER.match(line):
            # Reached the next entry without a trailer: the first one is malformed.
            break
    return header.group("version"), timestamp


def read_package_release(series: str, doc_root: Path = DOC_ROOT) -> PackageRelease:
    """Reads version and date of an installed linux-doc package from its changelog.

    Args:
        series: Kernel series, such as "6.1".
        doc_root: Folder holding Debian's per-package documentation.

    Returns:
        The package release; the timestamp is None if the changelog has no date.
    """
    changelog = package_dir(series, doc_root) / "changelog.Debian.gz"
    with gzip.open(changelog, "rt", encoding="utf-8", errors="replace") as handle:
        # The first entry is at the top; reading a few kB avoids decompressing the
        # whole multi-megabyte history.
        head = handle.read(16384)
    version, timestamp = parse_changelog_head(head)
    return PackageRelease(series=series, version=version, timestamp=timestamp)


def document_paths(
    series: str,
    subtrees: Sequence[str] | None = None,
    doc_root: Path = DOC_ROOT,
) -> list[Path]:
    """Lists the .rst.gz and .txt.gz files of one package in sorted order.

    Symbolic links are left out: the one the package ships (Documentation/Changes)
    points at a file that is already listed, so following it would only add an exact
    duplicate under a second name.

    Args:
        series: Kernel series, such as "6.1".
        subtrees: Folders of Documentation/ to keep, as relative paths such as
            "mm" or "arch/arm"; None keeps all.
        doc_root: Folder holding Debian's per-package documentation.

    Returns:
        Absolute paths, sorted by their path relative to Documentation/.
    """
    documentation = package_dir(series, doc_root) / "Documentation"
    prefixes = None if subtrees is None else tuple(f"{subtree.strip('/')}/" for subtree in subtrees)
    paths = []
    for path in documentation.rglob("*"):
        if not path.name.endswith(DOCUMENT_SUFFIXES) or path.is_symlink():
            continue
        if not path.is_file():
            continue
        if prefixes is not None and not path.relative_to(documentation).as_posix().startswith(prefixes):
            continue
        paths.append(path)
    return sorted(paths, key=lambda path: path.relative_to(documentation).as_posix())


def iter_documents(
    series: str,
    subtrees: Sequence[str] | None = None,
    doc_root: Path = DOC_ROOT,
    stats: CollectStats | None = None,
) -> Iterator[dict[str, Any]]:
    """Yields one record per non-empty documentation file of one package.

    Args:
        series: Kernel series, such as "6.1".
        subtrees: Folders of Documentation/ to keep (see document_paths); None keeps all.
        doc_root: Folder holding Debian's per-package documentation.
        stats: Counters to update, so callers can report skips and decoding repairs.

    Yields:
        Records with id, text, source, url, timestamp and kernel_version, in sorted
        path order.
    """
    stats = stats if stats is not None else CollectStats()
    release = read_package_release(series, doc_root)
    base = package_dir(series, doc_root)
    for path in document_paths(series, subtrees, doc_root):
        stats.files += 1
        raw = gzip.decompress(path.read_bytes())
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            # Keep the document rather than drop it: a handful of replaced bytes in
            # a legacy-encoded file do not hurt dedup, and the count makes it visible.
            text = raw.decode("utf-8", errors="replace")
            stats.invalid_utf8 += 1
        if not text.strip():
            stats.skipped_empty += 1
            continue
        relative = path.relative_to(base).as_posix()[: -len(".gz")]
        stats.documents += 1
        yield {
            "id": f"linux-{series}/{relative}",
            "text": text,
            "source": f"linux-doc-{series}",
            "url": None,
            "timestamp": release.timestamp,
            "kernel_version": release.version,
        }


def collect_documents(
    series: Sequence[str] = KERNEL_SERIES,
    subtrees: Sequence[str] | None = None,
    doc_root: Path = DOC_ROOT,
    stats: CollectStats | None = None,
) -> Iterator[dict[str, Any]]:
    """Yields the records of several packages, one package after the other.

    Args:
        series: Kernel series to read, in output order.
        subtrees: Folders of Documentation/ to keep (see document_paths); None keeps all.
        doc_root: Folder holding Debian's per-package documentation.
        stats: Counters to update across all packages.

    Yields:
        Records in (series, sorted path) order.
    """
    # Fail on a missing package before yielding anything, not halfway through.
    for name in series:
        package_dir(name, doc_root)
    for name in series:
        yield from iter_documents(name, subtrees, doc_root, stats)


def relative_document_path(record_id: str) -> str:
    """Returns the id without its "linux-X.Y/" prefix and "#copyN" suffix."""
    return record_id.split("/", 1)[1].split("#", 1)[0]
