"""Checks on the output path, before anything is built or written (Beam-free).

An output must be a real folder of its own: not empty (``--output ""`` would
land in the working directory), not the root of a filesystem or bucket, not
inside an input (every rerun would read the previous snapshot back in), and
not holding an input (replacing the snapshot would delete what the run read).
"""

from __future__ import annotations

import os
import posixpath
from typing import Sequence

GLOB_CHARS = "*?["


class OutputPathError(ValueError):
    """An output path that no run may write to; the message says why."""


def normalized(path: str) -> str:
    """An absolute, symlink-free local path, or a remote URI without trailing slashes."""
    if "://" in path:
        scheme, rest = path.split("://", 1)
        return f"{scheme}://{posixpath.normpath('/' + rest).lstrip('/')}"
    return os.path.realpath(os.path.expanduser(path))


def input_root(pattern: str) -> str:
    """The folder or file an input pattern names: the part before its first wildcard."""
    cut = min((pattern.index(c) for c in GLOB_CHARS if c in pattern), default=None)
    if cut is None:
        return normalized(pattern)
    head = pattern[:cut]
    return normalized(head if head.endswith("/") else posixpath.dirname(head) or ".")


def _is_root(path: str) -> bool:
    if "://" in path:
        return "/" not in path.split("://", 1)[1]
    return os.path.dirname(path) == path


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def check_output_path(out: str, input_patterns: Sequence[str]) -> str:
    """The normalised output path, or an error naming what is wrong with it.

    Raises:
        OutputPathError: the path is empty, a filesystem or bucket root, inside
            an input, or holds an input.
    """
    if not out or not out.strip():
        raise OutputPathError("the output path is empty; pass --output DIR (output.path)")
    path = normalized(out)
    if _is_root(path):
        raise OutputPathError(f"the output {out!r} is the root of a filesystem or bucket; "
                              f"choose a folder of its own")
    for pattern in input_patterns:
        root = input_root(pattern)
        if _within(path, root) and not os.path.isfile(root):
            raise OutputPathError(f"the output {out!r} is inside the input {pattern!r}: every run would "
                                  f"read the previous snapshot back in; choose an output outside it")
        if _within(root, path):
            raise OutputPathError(f"the input {pattern!r} is inside the output {out!r}: replacing the "
                                  f"snapshot would delete what the run reads; choose another output")
    return path
