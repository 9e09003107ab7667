"""Tests of the linux-doc corpus builder and of the bundled sample it produced.

The bundled-sample tests read only the checked-in file; the tests that rebuild
records need the Debian linux-doc packages and skip when they are missing.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import zstandard

from corpusmill.jobs import linux_doc, linux_doc_packages

SAMPLE = Path(linux_doc.__file__).parent / "sample" / "linux-doc-sample.jsonl.zst"
PACKAGES_INSTALLED = all(
    (linux_doc.DOC_ROOT / f"linux-doc-{series}" / "Documentation").is_dir() for series in linux_doc.KERNEL_SERIES
)
needs_packages = pytest.mark.skipif(
    not PACKAGES_INSTALLED, reason=f"needs Debian packages: {linux_doc.INSTALL_HINT}"
)
ALL_FORMATS = ("jsonl.gz", "parquet", "jsonl.zst")


@pytest.fixture(scope="module")
def sample_records() -> list[dict]:
    with open(SAMPLE, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as reader:
        payload = reader.read()
    # Split on b"\n" only: JSONL lines end there, and str.splitlines would also
    # split inside texts that hold other Unicode line separators.
    return [json.loads(line) for line in payload.split(b"\n") if line]


def test_bundled_sample_is_under_size_cap() -> None:
    assert SAMPLE.is_file()
    assert SAMPLE.stat().st_size <= linux_doc.SAMPLE_MAX_BYTES


def test_bundled_sample_records_are_well_formed(sample_records: list[dict]) -> None:
    assert 2000 <= len(sample_records) <= 4000
    ids = [record["id"] for record in sample_records]
    assert len(set(ids)) == len(ids)
    for record in sample_records:
        assert set(record) == {"id", "text", "source", "url", "timestamp", "kernel_version"}
        assert record["text"].strip()
        assert record["id"].startswith(f"linux-{record['source'].removeprefix('linux-doc-')}/Documentation/")
        assert record["url"] is None


def test_bundled_sample_has_both_versions_and_near_duplicates(sample_records: list[dict]) -> None:
    assert {record["source"] for record in sample_records} == {"linux-doc-6.1", "linux-doc-6.12"}
    overlap = linux_doc.overlap_counts(sample_records)
    # Near-duplicates (same path, edited text) are what the sample exists for;
    # exact duplicates and singletons must be present too.
    assert overlap["differing_text"] >= 300
    assert overlap["identical_text"] >= 300
    assert overlap["single_version_paths"] >= 50


def test_parse_changelog_head_reads_version_and_utc_date() -> None:
    changelog = (
        "linux (6.1.192-2) bookworm-security; urgency=high\n\n"
        "  * fix\n\n"
        " -- A Maintainer <a@example.org>  Mon, 16 Nov 2026 11:17:40 +0100\n\n"
        "linux (6.1.192-1) bookworm-security; urgency=high\n"
    )
    assert linux_doc_packages.parse_changelog_head(changelog) == ("6.1.192-2", "2026-11-16T10:17:40+00:00")


def test_parse_changelog_head_without_trailer_has_no_timestamp() -> None:
    changelog = "linux (6.1.1-1) unstable; urgency=low\n\n  * a\n\nlinux (6.1.0-1) unstable; urgency=low\n"
    assert linux_doc_packages.parse_changelog_head(changelog) == ("6.1.1-1", None)


def _fake_doc_root(root: Path) -> Path:
    """Builds a two-package tree with an edited, a non-UTF-8, an empty and a new file."""
    files = {
        "6.1": {"mm/a.rst": b"alpha beta\n", "mm/latin1.txt": "caf\xe9\n".encode("latin-1"), "mm/empty.rst": b"  \n"},
        "6.12": {"mm/a.rst": b"alpha beta gamma\n", "net/new.rst": b"new\n"},
    }
    for series, documents in files.items():
        package = root / f"linux-doc-{series}"
        for relative, content in documents.items():
            path = package / "Documentation" / f"{relative}.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(gzip.compress(content, mtime=0))
        changelog = (
            f"linux ({series}.9-1) unstable; urgency=low\n\n  * x\n\n"
            " -- M <m@x>  Sat, 14 Nov 2026 13:56:01 +0100\n"
        )
        (package / "changelog.Debian.gz").write_bytes(gzip.compress(changelog.encode(), mtime=0))
    return root


def test_collect_documents_skips_empty_and_repairs_invalid_utf8(tmp_path: Path) -> None:
    stats = linux_doc_packages.CollectStats()
    records = list(linux_doc_packages.collect_documents(doc_root=_fake_doc_root(tmp_path), stats=stats))
    assert [record["id"] for record in records] == [
        "linux-6.1/Documentation/mm/a.rst",
        "linux-6.1/Documentation/mm/latin1.txt",
        "linux-6.12/Documentation/mm/a.rst",
        "linux-6.12/Documentation/net/new.rst",
    ]
    assert (stats.skipped_empty, stats.invalid_utf8, stats.documents) == (1, 1, 4)
    assert records[1]["text"] == "caf\ufffd\n"
    assert records[0]["kernel_version"] == "6.1.9-1"
    assert records[0]["timestamp"] == "2026-11-14T12:56:01+00:00"


def test_ensure_corpus_copies_formats_and_cache(tmp_path: Path) -> None:
    doc_root = _fake_doc_root(tmp_path / "doc")
    paths = linux_doc.ensure_corpus(tmp_path / "out", copies=2, formats=ALL_FORMATS, doc_root=doc_root)
    jsonl = [json.loads(line) for line in gzip.open(paths["jsonl.gz"], "rt", encoding="utf-8")]
    assert pq.read_table(paths["parquet"]).to_pylist() == jsonl
    assert len(jsonl) == 8
    assert jsonl[4]["id"] == "linux-6.1/Documentation/mm/a.rst#copy2"
    assert jsonl[4]["text"] == jsonl[0]["text"]
    modified = {fmt: path.stat().st_mtime_ns for fmt, path in paths.items()}
    linux_doc.ensure_corpus(tmp_path / "out", copies=2, formats=ALL_FORMATS, doc_root=doc_root)
    assert {fmt: path.stat().st_mtime_ns for fmt, path in paths.items()} == modified


def test_missing_packages_name_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(linux_doc.LinuxDocNotInstalledError, match="apt-get install linux-doc-6.1 linux-doc-6.12"):
        linux_doc.ensure_corpus(tmp_path, doc_root=tmp_path / "missing")


# About ten seconds (zstd level 19 over 24 MB), so it runs with `-m slow`.
@pytest.mark.slow
@needs_packages
def test_sample_rebuild_is_byte_identical(tmp_path: Path) -> None:
    rebuilt = tmp_path / "sample.jsonl.zst"
    linux_doc.build_sample(rebuilt)
    assert rebuilt.read_bytes() == SAMPLE.read_bytes()
