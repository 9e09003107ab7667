"""numba's cache folder: numba's own choice where it can write, a temp folder where it cannot."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numba
import pytest

from corpusmill.transforms import numba_cache
from corpusmill.transforms.numba_cache import ensure_cache_location


@pytest.fixture
def no_cache_dir(monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(numba.config, "CACHE_DIR", numba.config.CACHE_DIR)


def _read_only(tmp_path, name):
    # A file where a folder should be: mkdir fails there even for root.
    path = tmp_path / name
    path.write_text("")
    return path


def test_writable_kernel_folders_leave_numba_alone(tmp_path, no_cache_dir):
    assert ensure_cache_location([tmp_path / "dedup", tmp_path / "order"]) is None
    assert "NUMBA_CACHE_DIR" not in os.environ


def test_read_only_install_uses_the_user_cache_when_writable(tmp_path, no_cache_dir):
    assert ensure_cache_location([_read_only(tmp_path, "site")], user_cache=tmp_path / "home-cache") is None
    assert "NUMBA_CACHE_DIR" not in os.environ


def test_read_only_install_without_a_user_cache_gets_a_temp_folder(tmp_path, no_cache_dir):
    fallback = tmp_path / "tmp" / "corpusmill-numba"
    chosen = ensure_cache_location([_read_only(tmp_path, "site")], user_cache=_read_only(tmp_path, "home"),
                                   fallback=fallback)
    assert chosen == fallback and fallback.is_dir()
    assert os.environ["NUMBA_CACHE_DIR"] == str(fallback) == numba.config.CACHE_DIR


def test_numba_cache_dir_set_by_the_user_wins(tmp_path, no_cache_dir, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    assert ensure_cache_location([_read_only(tmp_path, "site")], user_cache=_read_only(tmp_path, "home")) is None
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "mine")


def test_kernels_import_from_a_read_only_install_without_a_home(tmp_path):
    # The real case, where a private mount namespace can be had: the kernel package mounted
    # read-only, HOME a file; without the fallback, importing a kernel module raises
    # "cannot cache function ...: no locator available".
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare for a read-only bind mount")
    package = Path(numba_cache.__file__).resolve().parent
    home = tmp_path / "home"
    home.write_text("")
    code = ("import os; from corpusmill.transforms.dedup import minhash; "
            "print(minhash.signatures(['a b c d e f']).shape, os.environ['NUMBA_CACHE_DIR'])")
    script = (f"mount --bind -o ro {shlex.quote(str(package))} {shlex.quote(str(package))} || exit 97; "
              f"exec {shlex.quote(sys.executable)} -c {shlex.quote(code)}")
    env = {**os.environ, "TMPDIR": str(tmp_path), "HOME": str(home)}
    env.pop("NUMBA_CACHE_DIR", None)
    env.pop("XDG_CACHE_HOME", None)
    result = subprocess.run(["unshare", "--mount", "sh", "-c", script], env=env, capture_output=True, text=True,
                            timeout=600)
    if result.returncode == 97:
        pytest.skip("no read-only bind mount here")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["(1,", "128)", str(tmp_path / f"corpusmill-numba-{os.getuid()}")]
