"""Finding input files and planning them into read tasks (Beam-free).

Inputs are expanded when the pipeline is built, not inside it: a pattern that
matches nothing fails before any worker starts, the manifest can list the
files read and the files skipped, and read tasks can group many small text
files into one Beam element. Local paths are listed here (``listing``); other
filesystems through an injected ``match``: the job passes
``corpusmill.transforms.io.beam.files.match``, which reads any Beam filesystem.

Each file's ``relpath`` (which names it in rejected rows and derived ids) is
relative to the root of the pattern that found it: the folder given, the
folder before a glob's first wildcard, or a plain file's own folder. So adding
a sibling folder next to the corpus changes no id. See ``list_inputs`` for
several patterns.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Callable, NamedTuple

from corpusmill.schemas.documents import RejectReason
from corpusmill.transforms.io.listing import Entry, local_entries, matches, split_pattern

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json", ".jsonlines")
TEXT_SUFFIXES = (".txt", ".md", ".rst")
COMPRESSION_SUFFIXES = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bzip2", ".xz": "xz"}
# The format of an InputFile that stands for a path that cannot be read at all
# (a FIFO, an unreadable folder): its reader emits one rejected record.
REJECTED_FORMAT = "rejected"

# Rough uncompressed/compressed ratios, only used to choose a shard count.
_EXPANSION = {"none": 1.0, "gzip": 4.0, "zstd": 5.0, "bzip2": 5.0, "xz": 6.0, "parquet": 3.0}


class InputError(ValueError):
    """An input pattern that cannot be read at all."""


@dataclass(frozen=True, order=True)
class InputFile:
    """One input file.

    Attributes:
        path: Full path or URI, as Beam's FileSystems takes it (a local name
            that is not UTF-8 holds surrogate escapes, so it opens the real file).
        relpath: Path relative to the root of the pattern that found it, always
            valid UTF-8 (undecodable bytes shown as ``\\xe9``); it names the
            source in rejected rows and derived ids, so it survives moving the corpus.
        size: Size in bytes.
        format: ``jsonl``, ``parquet``, ``text``, or ``rejected`` for a path
            that is read as one rejected record (see ``reject_reason``).
        compression: ``none``, ``gzip``, ``zstd``, ``bzip2`` or ``xz``.
        reject_reason: For ``rejected``: ``not_a_regular_file``,
            ``unreadable_directory`` or ``unreadable_file``.
        reject_detail: For ``rejected``: what is wrong, in words.
    """

    path: str
    relpath: str
    size: int
    format: str
    compression: str
    reject_reason: str = ""
    reject_detail: str = ""

    @property
    def estimated_text_bytes(self) -> int:
        key = "parquet" if self.format == "parquet" else self.compression
        return int(self.size * _EXPANSION[key])


class SkippedFile(NamedTuple):
    """A matched file that is not read: its path (valid UTF-8) and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class InputListing:
    """What a list of input patterns names.

    Attributes:
        files: Files to read, sorted by path, without repeats; includes the
            ``rejected`` entries, each of which reads as one rejected record.
        skipped: Matched paths that are not read, with the reason, sorted by path.
    """

    files: list[InputFile]
    skipped: list[SkippedFile]


def display_path(path: str) -> str:
    """A path as valid UTF-8: bytes that are not UTF-8 (held as surrogate escapes) shown as ``\\xe9``."""
    try:
        raw = path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = path.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "backslashreplace")


def _split_compression(name: str) -> tuple[str, str]:
    for suffix, kind in COMPRESSION_SUFFIXES.items():
        if name.endswith(suffix):
            return kind, name[: -len(suffix)]
    return "none", name


def strip_compression_suffix(path: str) -> str:
    """``a/b.md.gz`` -> ``a/b.md``: a text document's id is its path without the compression suffix."""
    lower = path.lower()
    for suffix in COMPRESSION_SUFFIXES:
        if lower.endswith(suffix):
            return path[: -len(suffix)]
    return path


def detect_format(path: str, forced: str = "auto") -> tuple[str, str] | None:
    """Returns (format, compression) for a path, or None if it is not an input file."""
    compression, name = _split_compression(posixpath.basename(path).lower())
    if forced != "auto":
        return forced, ("none" if forced == "parquet" else compression)
    if name.endswith(".parquet") and compression == "none":
        return "parquet", "none"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl", compression
    if name.endswith(TEXT_SUFFIXES):
        return "text", compression
    return None


def unsupported_reason(path: str) -> str:
    """Why ``detect_format`` does not read a path, in words."""
    compression, name = _split_compression(posixpath.basename(path).lower())
    if name.endswith(".parquet"):
        return (f"compressed Parquet ({compression}) is not read: Parquet compresses its own pages; "
                f"decompress the file or rewrite it with Parquet compression")
    extension = posixpath.splitext(name)[1]
    what = f"extension {extension!r}" if extension else "no extension"
    return (f"unsupported file type ({what}); read are JSONL (.jsonl/.ndjson/.json/.jsonlines), "
            f".parquet and text (.txt/.md/.rst), plain or .gz/.zst/.bz2/.xz")


# A glob in, (path, size in bytes) of every matching file out.
Match = Callable[[str], list[tuple[str, int]]]


def _remote_entries(pattern: str, match: Match) -> tuple[str, list[Entry]]:
    """(root, entries) of a pattern on a filesystem other than the local one."""
    root, components = split_pattern(pattern)
    if components:
        root = root.rstrip("/")
        listed = [(p, s) for p, s in match(root + "/**") if matches(_below(p, root), components)]
    elif pattern.endswith("/"):
        root = pattern.rstrip("/")
        listed = match(root + "/**")
    else:
        root = posixpath.dirname(pattern)
        listed = match(pattern)
        if not listed:  # a prefix named without its trailing slash
            root = pattern
            listed = match(pattern + "/**")
    return root, [Entry(path, _below(path, root), "file", size) for path, size in listed]


def _below(path: str, root: str) -> str:
    prefix = root.rstrip("/") + "/"
    return path[len(prefix):] if path.startswith(prefix) else path


def _classify(entry: Entry, forced_format: str) -> InputFile | SkippedFile:
    """A listed path as a file to read, a path read as one rejected record, or a skipped path."""
    relpath = display_path(entry.rel)
    if entry.kind == "unreadable_directory":
        return InputFile(entry.path, relpath, 0, REJECTED_FORMAT, "none", RejectReason.UNREADABLE_DIRECTORY,
                         entry.detail)
    kind = detect_format(entry.path, forced_format)
    if entry.kind == "file":
        if kind is None:
            return SkippedFile(display_path(entry.path), unsupported_reason(entry.path))
        return InputFile(entry.path, relpath, entry.size, *kind)
    if entry.kind == "revisited_directory" or kind is None:
        return SkippedFile(display_path(entry.path), entry.detail)
    if entry.kind == "special":
        return InputFile(entry.path, relpath, 0, REJECTED_FORMAT, "none", RejectReason.NOT_A_REGULAR_FILE,
                         f"{entry.detail}, not a regular file: not opened")
    return InputFile(entry.path, relpath, 0, REJECTED_FORMAT, "none", RejectReason.UNREADABLE_FILE, entry.detail)


def list_inputs(patterns: tuple[str, ...] | list[str], forced_format: str, match: Match) -> InputListing:
    """Expands files, folders and globs into the files to read and the files skipped.

    Local paths are listed here: a folder means every path below it, ``**``
    matches zero or more folders, symbolic links are followed (a folder is
    listed once; a loop is skipped). Other schemes (``gs://``) are listed with
    ``match``, with the same glob rules applied to what it lists.

    A path matched by several patterns is read once, named from the first
    pattern that matched it. Two different files with the same relative path
    (``a/x.jsonl`` and ``b/x.jsonl`` given as ``a`` and ``b``) are both named
    relative to the deepest folder that holds them both (``a/x.jsonl``,
    ``b/x.jsonl``); should names still clash, the second and later in path
    order get a ``~2/``, ``~3/``... prefix.

    Args:
        patterns: Paths or globs.
        forced_format: ``auto`` to pick readers by extension, else one format for all.
        match: Lists the files a glob matches on a non-local filesystem, with their sizes.

    Raises:
        InputError: if a pattern matches no readable input file.
    """
    found: dict[str, InputFile] = {}
    skipped: dict[str, str] = {}
    for pattern in patterns:
        try:
            _, entries = _remote_entries(pattern, match) if "://" in pattern else local_entries(pattern)
        except OSError as error:
            raise InputError(f"input {pattern!r} cannot be listed: {type(error).__name__}: {error}") from error
        read = 0
        for entry in entries:
            item = _classify(entry, forced_format)
            if isinstance(item, SkippedFile):
                skipped.setdefault(item.path, item.reason)
                continue
            read += 1
            found.setdefault(item.path, item)
        if not read:
            raise InputError(_no_match_message(pattern, [e for e in entries if e.kind == "file"]))
    files = _unique_relpaths(sorted(found.values()))
    return InputListing(files, [SkippedFile(p, skipped[p]) for p in sorted(skipped)])


def _no_match_message(pattern: str, files: list[Entry]) -> str:
    message = (f"input pattern {pattern!r} matched no readable file (JSONL .jsonl/.ndjson/.json/.jsonlines, "
               f".parquet, or text .txt/.md/.rst; plain or .gz/.zst/.bz2/.xz)")
    if files:
        names = ", ".join(display_path(e.rel) for e in files[:3])
        message += f"; it matched {len(files)} other file(s): {names}{', ...' if len(files) > 3 else ''}"
    return message


def _unique_relpaths(files: list[InputFile]) -> list[InputFile]:
    """Renames files whose relative paths clash (see ``list_inputs``); files stay sorted by path."""
    by_relpath: dict[str, list[InputFile]] = {}
    for f in files:
        by_relpath.setdefault(f.relpath, []).append(f)
    renamed: dict[str, str] = {}
    for group in by_relpath.values():
        if len(group) > 1:
            renamed.update(_relative_to_common_folder([f.path for f in group]))
    seen: dict[str, int] = {}
    result = []
    for f in files:
        relpath = renamed.get(f.path, f.relpath)
        seen[relpath] = seen.get(relpath, 0) + 1
        if seen[relpath] > 1:
            relpath = f"~{seen[relpath]}/{relpath}"
        result.append(f if relpath == f.relpath else _with_relpath(f, relpath))
    return result


def _relative_to_common_folder(paths: list[str]) -> dict[str, str]:
    shown = [display_path(p) for p in paths]
    schemes = {s.split("://", 1)[0] if "://" in s else "" for s in shown}
    if len(schemes) > 1:
        return dict(zip(paths, shown))
    bare = [s.split("://", 1)[1] if "://" in s else s for s in shown]
    try:
        common = posixpath.commonpath([posixpath.dirname(b) for b in bare])
    except ValueError:  # absolute and relative paths mixed
        return dict(zip(paths, shown))
    return {p: b[len(common):].lstrip("/") for p, b in zip(paths, bare)}


def _with_relpath(f: InputFile, relpath: str) -> InputFile:
    return InputFile(f.path, relpath, f.size, f.format, f.compression, f.reject_reason, f.reject_detail)


def plan_read_tasks(files: list[InputFile], task_bytes: int) -> list[tuple[InputFile, ...]]:
    """Groups files into read tasks of roughly ``task_bytes`` input bytes.

    A file at least that large is a task of its own; smaller files are packed
    in path order, so that a folder of many small documents becomes a few
    large Beam elements instead of one element per document.
    """
    tasks: list[tuple[InputFile, ...]] = []
    current: list[InputFile] = []
    current_bytes = 0
    for f in files:
        if current and current_bytes + f.size > task_bytes:
            tasks.append(tuple(current))
            current, current_bytes = [], 0
        current.append(f)
        current_bytes += f.size
    if current:
        tasks.append(tuple(current))
    return tasks
