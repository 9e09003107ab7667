"""Shared fixtures for the transform kernel tests: a real corpus and tokenizer."""

from __future__ import annotations

import glob
import gzip
import sysconfig
from pathlib import Path

import pytest

_LINUX_DOC = "/usr/share/doc/linux-doc-6.1/Documentation/**/*.rst.gz"


def _read_corpus(limit: int) -> list[str]:
    """Real documents: the Linux kernel docs when installed, else Python's stdlib sources."""
    files = sorted(glob.glob(_LINUX_DOC, recursive=True))
    if files:
        # Every k-th file spreads the sample over the whole documentation tree.
        step = max(1, len(files) // limit)
        return [
            gzip.open(path, "rt", encoding="utf-8", errors="replace").read()
            for path in files[::step][:limit]
        ]
    stdlib = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    return [path.read_text(encoding="utf-8", errors="replace") for path in stdlib[:limit]]


@pytest.fixture(scope="session")
def real_texts() -> list[str]:
    """About 300 real documents, from a few hundred to tens of thousands of tokens."""
    return [text for text in _read_corpus(300) if text.strip()]


@pytest.fixture(scope="session")
def cl100k():
    """The real cl100k_base tokenizer, loaded offline."""
    from corpusmill.transforms.tokenizer import load_tokenizer

    return load_tokenizer("tiktoken:cl100k_base", num_threads=2)


@pytest.fixture(scope="session")
def real_documents(real_texts, cl100k):
    """The real documents tokenized with cl100k_base, end-of-text id appended."""
    from corpusmill.transforms.tokenizer import encode_documents

    return encode_documents(cl100k, real_texts)
