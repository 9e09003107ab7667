"""Where numba keeps the compiled kernels: beside their source, else the user's cache, else a temp folder.

Every kernel is ``numba.njit(cache=True)``: its machine code is written once and
loaded by later processes. numba writes it to ``__pycache__`` beside the
module, or, where that folder is read-only (a system or container install),
to the user's cache folder (``~/.cache/numba`` on Linux). Where neither is
writable, a read-only install run by a user without a writable home, numba
refuses to define a ``cache=True`` function, and importing any kernel module
fails with ``RuntimeError: cannot cache function ...: no locator available``.
``ensure_cache_location`` points numba at a folder under the temp directory in
that case only; ``NUMBA_CACHE_DIR``, when set, is left to decide. It runs when
``corpusmill.transforms`` is imported, before any kernel module.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

#: The subpackages whose modules define numba kernels.
KERNEL_PACKAGES = ("dedup", "order")


def _writable(folder: Path) -> bool:
    """Whether a file can be written in ``folder`` (created if missing), as numba checks it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return False
    return True


def _numba_user_cache() -> Path:
    """numba's own fallback folder (``~/.cache/numba`` on Linux)."""
    from numba.misc.appdirs import AppDirs

    return Path(AppDirs(appname="numba", appauthor=False).user_cache_dir)


def ensure_cache_location(kernel_folders: list[Path] | None = None, user_cache: Path | None = None,
                          fallback: Path | None = None) -> Path | None:
    """Sets ``NUMBA_CACHE_DIR`` to a temp folder when numba would find no writable cache folder.

    Args:
        kernel_folders: The folders of the kernel modules (default: this
            package's ``KERNEL_PACKAGES``); numba caches in their ``__pycache__``.
        user_cache: numba's fallback folder (default: numba's, asked only when
            a kernel folder is read-only).
        fallback: The folder to use then (default: ``corpusmill-numba-<uid>``
            under the temp directory).

    Returns:
        The folder numba was pointed at, or None where numba's own choice works
        (or ``NUMBA_CACHE_DIR`` is set, or no fallback is writable either).
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return None
    here = Path(__file__).resolve().parent
    folders = kernel_folders if kernel_folders is not None else [here / name for name in KERNEL_PACKAGES]
    if all(_writable(folder / "__pycache__") for folder in folders):
        return None
    if _writable(user_cache if user_cache is not None else _numba_user_cache()):
        return None
    if fallback is None:
        fallback = Path(tempfile.gettempdir()) / f"corpusmill-numba-{os.getuid() if hasattr(os, 'getuid') else 0}"
    if not _writable(fallback):
        return None
    os.environ["NUMBA_CACHE_DIR"] = str(fallback)
    if "numba" in sys.modules:  # numba read its configuration when it was imported
        sys.modules["numba"].config.CACHE_DIR = str(fallback)
    return fallback
