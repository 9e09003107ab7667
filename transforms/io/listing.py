"""Listing input paths: globs where ``**`` matches zero or more folders, local
folders walked with symbolic links followed and loops detected (Beam-free).

A pattern splits into a root, the folder before its first wildcard component,
and the components after it; ``data/**/*.jsonl`` is ``data`` and
(``**``, ``*.jsonl``). Components match one name each, as fnmatch does
(``*`` also matches a leading dot); a component that is exactly ``**``
matches any number of folders, none included, as in shells with globstar
and Python's ``glob(recursive=True)``.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from typing import Iterator, NamedTuple

_MAGIC = frozenset("*?[")


class Entry(NamedTuple):
    """One path a pattern matched.

    Attributes:
        path: The path to open, as the filesystem gives it (a local name that is
            not UTF-8 holds surrogate escapes).
        rel: The path relative to the pattern's root, ``/``-separated.
        kind: ``file``, ``special`` (a FIFO, socket or device), ``broken`` (a
            path that cannot be examined, e.g. a dangling symbolic link),
            ``unreadable_directory``, or ``revisited_directory`` (a folder
            already listed under another path: a symbolic link loop or a second link).
        size: Size in bytes of a file, else 0.
        detail: What is wrong, for the kinds other than ``file``.
    """

    path: str
    rel: str
    kind: str
    size: int = 0
    detail: str = ""


def has_magic(text: str) -> bool:
    return any(c in _MAGIC for c in text)


def split_pattern(pattern: str) -> tuple[str, tuple[str, ...]]:
    """(root, components): the folder before the first wildcard component, and the components from it on.

    A pattern without wildcards is its own root, with no components.
    """
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        if has_magic(part):
            root = "/".join(parts[:i])
            if not root:
                root = "/" if pattern.startswith("/") else "."
            return root, tuple(p for p in parts[i:] if p)
    return pattern, ()


def _closure(states: set[int], components: tuple[str, ...]) -> frozenset[int]:
    """Adds the states reached by letting each ``**`` match no folder at all.

    A last ``**`` must match at least one name, as in Python's glob and bash:
    ``x/**`` is everything below the folder ``x``, never a file ``x``.
    """
    closed = set(states)
    for i in states:
        while i < len(components) - 1 and components[i] == "**":
            i += 1
            closed.add(i)
    return frozenset(closed)


def start_states(components: tuple[str, ...]) -> frozenset[int]:
    return _closure({0}, components)


def step(states: frozenset[int], name: str, components: tuple[str, ...]) -> frozenset[int]:
    """The states after matching one more path component; state ``len(components)`` is a full match."""
    following = set()
    last = len(components) - 1
    for i in states:
        if i > last:
            continue
        if components[i] == "**":
            following.add(i)
            if i == last:
                following.add(i + 1)
        elif fnmatch.fnmatchcase(name, components[i]):
            following.add(i + 1)
    return _closure(following, components)


def matches(rel: str, components: tuple[str, ...]) -> bool:
    """Whether a ``/``-separated relative path matches the components."""
    states = start_states(components)
    for name in rel.split("/"):
        states = step(states, name, components)
        if not states:
            return False
    return len(components) in states


def walk(root: str, components: tuple[str, ...]) -> Iterator[Entry]:
    """Every path below the local folder ``root`` that the components match, in sorted order.

    Folders are descended only where the components can still match, symbolic
    links to folders are followed, and a folder already listed (a loop) is
    reported instead of listed again. A folder below ``root`` that cannot be
    listed is reported as ``unreadable_directory``.

    Raises:
        OSError: ``root`` itself cannot be listed.
    """
    info = os.stat(root)
    visited = {(info.st_dev, info.st_ino): root}
    yield from _walk_folder(root, "", start_states(components), components, visited)


def _walk_folder(path: str, rel: str, states: frozenset[int], components: tuple[str, ...],
                 visited: dict[tuple[int, int], str]) -> Iterator[Entry]:
    try:
        with os.scandir(path) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except OSError as error:
        if not rel:
            raise
        yield Entry(path, rel, "unreadable_directory", 0, f"cannot list the folder: {_describe(error)}")
        return
    full = len(components)
    for entry in entries:
        following = step(states, entry.name, components)
        if not following:
            continue
        child = f"{rel}/{entry.name}" if rel else entry.name
        try:
            info = entry.stat()  # follows symbolic links
        except OSError as error:
            if full in following:
                yield Entry(entry.path, child, "broken", 0, f"cannot examine the path: {_describe(error)}")
            continue
        if stat.S_ISDIR(info.st_mode):
            if not any(i < full for i in following):
                continue
            key = (info.st_dev, info.st_ino)
            if key in visited:
                yield Entry(entry.path, child, "revisited_directory", 0,
                            f"a link to a folder already listed as {visited[key]}")
                continue
            visited[key] = entry.path
            yield from _walk_folder(entry.path, child, following, components, visited)
        elif full in following:
            if stat.S_ISREG(info.st_mode):
                yield Entry(entry.path, child, "file", info.st_size)
            else:
                yield Entry(entry.path, child, "special", 0, special_kind(info.st_mode))


def special_kind(mode: int) -> str:
    """What a path that is neither a regular file nor a folder is, in words."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _describe(error: OSError) -> str:
    return f"{type(error).__name__}: {error.strerror or error}"


def local_entries(pattern: str) -> tuple[str, list[Entry]]:
    """(root, entries) of a local path or glob; a folder means every path below it.

    A plain file is relative to its own folder. Nothing is returned for a
    path that does not exist.

    Raises:
        OSError: the root folder cannot be listed.
    """
    root, components = split_pattern(pattern)
    if components:
        if not os.path.isdir(root):
            return os.path.abspath(root), []
        root = os.path.abspath(root)
        return root, list(walk(root, components))
    if os.path.isdir(pattern):
        root = os.path.abspath(pattern)
        return root, list(walk(root, ("**",)))
    path = os.path.abspath(pattern)
    name = os.path.basename(path)
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        if not os.path.islink(path):
            return os.path.dirname(path), []
        return os.path.dirname(path), [Entry(path, name, "broken", 0, "a symbolic link to nothing")]
    if stat.S_ISREG(info.st_mode):
        return os.path.dirname(path), [Entry(path, name, "file", info.st_size)]
    return os.path.dirname(path), [Entry(path, name, "special", 0, special_kind(info.st_mode))]
