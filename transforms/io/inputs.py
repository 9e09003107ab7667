"""Finding input files and planning them into read tasks (Beam-free).

Inputs are expanded when the pipeline is built, not inside it: a pattern that
matches nothing fails before any worker starts, the manifest can list the
files, and read tasks can group many small text files into one Beam element.
Listing a filesystem is injected (``match``): the job passes
``corpusmill.transforms.io.beam.files.match``, which reads any Beam filesystem.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from typing import Callable

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
TEXT_SUFFIXES = (".txt", ".md", ".rst")
COMPRESSION_SUFFIXES = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}

# Rough uncompressed/compressed ratios, only used to choose a shard count.
_EXPANSION = {"none": 1.0, "gzip": 4.0, "zstd": 5.0, "parquet": 3.0}


class InputError(ValueError):
    """An input pattern that cannot be read at all."""


@dataclass(frozen=True, order=True)
class InputFile:
    """One input file.

    Attributes:
        path: Full path or URI, as Beam's FileSystems takes it.
        relpath: Path relative to the common root of all inputs; it names the
            source in rejected rows and derived ids, so it survives moving the corpus.
        size: Size in bytes.
        format: ``jsonl``, ``parquet`` or ``text``.
        compression: ``none``, ``gzip`` or ``zstd``.
    """

    path: str
    relpath: str
    size: int
    format: str
    compression: str

    @property
    def estimated_text_bytes(self) -> int:
        key = "parquet" if self.format == "parquet" else self.compression
        return int(self.size * _EXPANSION[key])


def detect_format(path: str, forced: str = "auto") -> tuple[str, str] | None:
    """Returns (format, compression) for a path, or None if it is not an input file."""
    name = posixpath.basename(path).lower()
    compression = "none"
    for suffix, kind in COMPRESSION_SUFFIXES.items():
        if name.endswith(suffix):
            compression, name = kind, name[: -len(suffix)]
            break
    if forced != "auto":
        return forced, ("none" if forced == "parquet" else compression)
    if name.endswith(".parquet") and compression == "none":
        return "parquet", "none"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl", compression
    if name.endswith(TEXT_SUFFIXES) and compression in ("none", "gzip"):
        return "text", compression
    return None


def _split_scheme(path: str) -> tuple[str, str]:
    if "://" in path:
        scheme, rest = path.split("://", 1)
        return scheme + "://", rest
    return "", path


def _common_root(paths: list[str]) -> str:
    schemes = {_split_scheme(p)[0] for p in paths}
    if len(schemes) > 1:
        return ""
    scheme = schemes.pop()
    dirs = [posixpath.dirname(_split_scheme(p)[1]) for p in paths]
    return scheme + posixpath.commonpath(dirs) if dirs else ""


def _relpath(path: str, root: str) -> str:
    if root and path.startswith(root):
        return path[len(root) :].lstrip("/")
    return path


# A glob in, (path, size in bytes) of every matching file out.
Match = Callable[[str], list[tuple[str, int]]]


def expand_inputs(patterns: tuple[str, ...] | list[str], forced_format: str, match: Match) -> list[InputFile]:
    """Expands files, folders and globs into a sorted list of input files.

    Args:
        patterns: Paths or globs; a folder means every supported file below it.
        forced_format: ``auto`` to pick readers by extension, else one format for all.
        match: Lists the files a glob matches, with their sizes.

    Returns:
        Input files sorted by path, without repeats.

    Raises:
        InputError: if a pattern matches no readable input file.
    """
    found: dict[str, tuple[int, str, str]] = {}
    for pattern in patterns:
        globbed = pattern
        if not any(c in pattern for c in "*?[") and _is_directory(pattern):
            globbed = pattern.rstrip("/") + "/**"
        kept = 0
        for path, size in match(globbed):
            kind = detect_format(path, forced_format)
            if kind is None:
                continue
            found[path] = (size, *kind)
            kept += 1
        if not kept:
            raise InputError(
                f"input pattern {pattern!r} matched no readable file "
                f"(JSONL .jsonl/.ndjson[.gz|.zst], .parquet, or text .txt/.md/.rst[.gz])"
            )
    paths = sorted(found)
    root = _common_root(paths)
    return [InputFile(p, _relpath(p, root), *found[p]) for p in paths]


def _is_directory(path: str) -> bool:
    scheme, _ = _split_scheme(path)
    if not scheme:
        return os.path.isdir(path)
    # Object stores have no directories; a trailing slash says the user meant a prefix.
    return path.endswith("/")


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
