"""Listing inputs on real folders: globstar, skipped files, links, FIFOs, unreadable folders,
relative paths from the named root, names that are not UTF-8."""

from __future__ import annotations

import glob
import json
import os
import posixpath
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from corpusmill.transforms.io import listing
from corpusmill.transforms.io.formats import BatchBuilder, FieldMap, read_file
from corpusmill.transforms.io.inputs import (
    REJECTED_FORMAT,
    InputError,
    SkippedFile,
    detect_format,
    list_inputs,
)


def _no_match(pattern):
    raise AssertionError(f"local paths are listed without Beam, not {pattern!r}")


def _list(*patterns, forced="auto"):
    return list_inputs([str(p) for p in patterns], forced, _no_match)


def _write(path: Path, text: str = '{"text": "a document"}\n') -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _read_all(files, open_file=lambda p: open(p, "rb")):
    builder = BatchBuilder(FieldMap(), 10**6, 100)
    out = [item for f in files for item in read_file(f, open_file, builder)] + list(builder.take(final=True))
    docs = [d for t, b in out if t == "docs" for d in b.to_pylist()]
    rejected = [r for t, b in out if t == "rejected" for r in b.to_pylist()]
    stats = [s for t, s in out if t == "stats"]
    assert sum(s.records for s in stats) == len(docs) + len(rejected)
    return docs, rejected, stats


# -- ** matches zero or more folders ---------------------------------------------------


def test_globstar_matches_files_directly_under_the_root(tmp_path):
    _write(tmp_path / "data" / "a.jsonl")
    _write(tmp_path / "data" / "sub" / "b.jsonl")
    _write(tmp_path / "data" / "sub" / "deeper" / "c.jsonl")
    files = _list(tmp_path / "data" / "**" / "*.jsonl").files
    assert [f.relpath for f in files] == ["a.jsonl", "sub/b.jsonl", "sub/deeper/c.jsonl"]
    assert [f.relpath for f in _list(tmp_path / "data" / "*" / "*.jsonl").files] == ["sub/b.jsonl"]
    assert [f.relpath for f in _list(tmp_path / "data" / "**" / "deeper" / "**").files] == ["sub/deeper/c.jsonl"]


_NAMES = st.sampled_from(["a", "b", "ab", ".h", "x.jsonl", "y.txt"])
_COMPONENTS = st.sampled_from(["**", "*", "a*", "?", "*.jsonl", "x.jsonl", "b", "[ab]*"])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(_NAMES, min_size=1, max_size=4), min_size=1, max_size=8),
       st.lists(_COMPONENTS, min_size=1, max_size=4))
def test_glob_matching_agrees_with_python_glob(tmp_path_factory, tree, components):
    assume(any(listing.has_magic(c) for c in components))  # a plain folder means everything below it
    root = tmp_path_factory.mktemp("tree")
    for parts in tree:
        path = root.joinpath(*parts)
        if any(p.is_file() for p in [*path.parents, path]) or path.is_dir():
            continue  # a name used as both a file and a folder
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    pattern = posixpath.join(str(root), *components)
    # Python glob repeats a path that "**/**" reaches twice; the listing names each once.
    expected = sorted({p for p in glob.glob(pattern, recursive=True, include_hidden=True) if os.path.isfile(p)})
    got = sorted(entry.path for entry in listing.local_entries(pattern)[1])
    assert got == expected


# -- files skipped are reported, new formats are read -----------------------------------


def test_every_matched_file_is_read_or_reported_as_skipped(tmp_path):
    import bz2
    import lzma

    import zstandard

    root = tmp_path / "se"
    _write(root / "a.jsonl", '{"text": "kept doc"}\n')
    (root / "b.jsonl.bz2").write_bytes(bz2.compress(b'{"text": "x"}\n'))
    (root / "c.jsonl.xz").write_bytes(lzma.compress(b'{"text": "y"}\n'))
    _write(root / "d.csv", "id,text\n1,z\n")
    (root / "e.parquet.gz").write_bytes(b"\x1f\x8b")
    _write(root / "f.jsonlines", '{"text": "json lines"}\n')
    (root / "g.txt.zst").write_bytes(zstandard.ZstdCompressor().compress(b"a text"))
    _write(root / "README")
    listed = _list(root)
    assert [(f.relpath, f.format, f.compression) for f in listed.files] == [
        ("a.jsonl", "jsonl", "none"), ("b.jsonl.bz2", "jsonl", "bzip2"), ("c.jsonl.xz", "jsonl", "xz"),
        ("f.jsonlines", "jsonl", "none"), ("g.txt.zst", "text", "zstd")]
    assert [posixpath.basename(s.path) for s in listed.skipped] == ["README", "d.csv", "e.parquet.gz"]
    reasons = {posixpath.basename(s.path): s.reason for s in listed.skipped}
    assert "'.csv'" in reasons["d.csv"] and "compressed Parquet" in reasons["e.parquet.gz"]
    assert "no extension" in reasons["README"]
    assert all(isinstance(s, SkippedFile) and s.path.startswith(str(root)) for s in listed.skipped)
    docs, rejected, _ = _read_all(listed.files)
    assert [d["text"] for d in docs] == ["kept doc", "x", "y", "json lines", "a text"] and rejected == []


def test_a_pattern_matching_only_unsupported_files_fails_and_names_them(tmp_path):
    _write(tmp_path / "d.csv")
    with pytest.raises(InputError, match="d.csv"):
        _list(tmp_path)
    with pytest.raises(InputError, match="matched no readable file"):
        _list(tmp_path / "nothing-here")


def test_format_detection():
    assert detect_format("a/b.jsonlines") == ("jsonl", "none")
    assert detect_format("a/b.JSONL.BZ2") == ("jsonl", "bzip2")
    assert detect_format("a/b.md.xz") == ("text", "xz")
    assert detect_format("a/b.rst.zst") == ("text", "zstd")
    assert detect_format("a/b.parquet.gz") is None
    assert detect_format("a/b.csv") is None


# -- symbolic links, unreadable folders, paths that are not files -------------------------


def test_symlinked_folders_are_followed_and_loops_are_reported(tmp_path):
    root = tmp_path / "data"
    _write(root / "a.jsonl")
    _write(tmp_path / "elsewhere" / "b.jsonl")
    (root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)
    listed = _list(root)
    assert [f.relpath for f in listed.files] == ["a.jsonl", "linked/b.jsonl"]
    assert [(posixpath.basename(s.path), "already listed" in s.reason) for s in listed.skipped] == [("loop", True)]
    # The same through a glob whose ** would descend the loop forever.
    assert [f.relpath for f in _list(root / "**" / "*.jsonl").files] == ["a.jsonl", "linked/b.jsonl"]


def test_an_unreadable_subfolder_is_one_counted_rejection(tmp_path, monkeypatch):
    root = tmp_path / "data"
    _write(root / "a.jsonl")
    _write(root / "locked" / "secret.jsonl")
    real_scandir = os.scandir

    def scandir(path):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(listing.os, "scandir", scandir)
    files = _list(root).files
    assert [(f.relpath, f.format, f.reject_reason) for f in files] == [
        ("a.jsonl", "jsonl", ""), ("locked", REJECTED_FORMAT, "unreadable_directory")]
    docs, rejected, stats = _read_all(files, open_file=lambda p: open(p, "rb") if p.endswith(".jsonl") else 1 / 0)
    assert len(docs) == 1
    assert [(r["reason"], r["source"], r["locator"]) for r in rejected] == [
        ("unreadable_directory", "locked", "folder")]
    assert "Permission denied" in rejected[0]["detail"] and [s.records for s in stats] == [1, 1]
    # The root itself cannot be listed: the input cannot be read at all.
    with pytest.raises(InputError, match="cannot be listed"):
        _list(root / "locked")


def test_a_fifo_is_one_rejection_and_is_never_opened(tmp_path):
    root = tmp_path / "ff"
    root.mkdir()
    os.mkfifo(root / "x.jsonl")
    os.mkfifo(root / "pipe")
    _write(root / "ok.jsonl")
    listed = _list(root)
    assert [(f.relpath, f.format, f.reject_reason) for f in listed.files] == [
        ("ok.jsonl", "jsonl", ""), ("x.jsonl", REJECTED_FORMAT, "not_a_regular_file")]
    assert [(posixpath.basename(s.path), s.reason) for s in listed.skipped] == [("pipe", "a FIFO (named pipe)")]
    opened = []
    docs, rejected, _ = _read_all(listed.files, open_file=lambda p: opened.append(p) or open(p, "rb"))
    assert opened == [str(root / "ok.jsonl")] and len(docs) == 1
    assert [(r["reason"], r["source"]) for r in rejected] == [("not_a_regular_file", "x.jsonl")]
    assert "FIFO" in rejected[0]["detail"]
    # A plain path naming a FIFO, and a file that became a FIFO after it was listed.
    assert [f.reject_reason for f in _list(root / "x.jsonl").files] == ["not_a_regular_file"]
    (root / "ok.jsonl").unlink()
    os.mkfifo(root / "ok.jsonl")
    _, rejected, _ = _read_all(listed.files[:1], open_file=lambda p: pytest.fail("opened a FIFO"))
    assert [r["reason"] for r in rejected] == ["not_a_regular_file"]


def test_a_dangling_link_named_like_an_input_is_a_rejection(tmp_path):
    root = tmp_path / "data"
    _write(root / "a.jsonl")
    (root / "gone.jsonl").symlink_to(tmp_path / "missing.jsonl")
    files = _list(root).files
    assert [(f.relpath, f.reject_reason) for f in files] == [("a.jsonl", ""), ("gone.jsonl", "unreadable_file")]
    _, rejected, _ = _read_all(files)
    assert [r["reason"] for r in rejected] == ["unreadable_file"]


# -- relative paths come from the root the user named ------------------------------------


def test_relpaths_do_not_change_when_a_sibling_folder_appears(tmp_path):
    data = tmp_path / "data"
    _write(data / "a.jsonl", '{"text": "first"}\n')
    before = _list(data).files
    _write(data / "2025" / "b.jsonl", '{"text": "second"}\n')
    after = _list(data).files
    assert [f.relpath for f in before] == ["a.jsonl"] and [f.relpath for f in after] == ["2025/b.jsonl", "a.jsonl"]
    docs, _, _ = _read_all(after)
    assert sorted(d["id"] for d in docs) == ["2025/b.jsonl#0", "a.jsonl#0"]
    assert [f.relpath for f in _list(data / "*.jsonl").files] == ["a.jsonl"]
    assert [f.relpath for f in _list(data / "2025" / "b.jsonl").files] == ["b.jsonl"]
    assert [f.relpath for f in _list(data / "2025" / "b.jsonl", data / "a.jsonl").files] == ["b.jsonl", "a.jsonl"]


def test_several_patterns_each_relative_to_their_root_and_clashes_disambiguated(tmp_path):
    _write(tmp_path / "a" / "x.jsonl")
    _write(tmp_path / "a" / "only-a.jsonl")
    _write(tmp_path / "b" / "x.jsonl")
    files = _list(tmp_path / "a", tmp_path / "b").files
    assert [f.relpath for f in files] == ["only-a.jsonl", "a/x.jsonl", "b/x.jsonl"]  # sorted by path
    # One file matched by two patterns is read once, named by the first pattern.
    files = _list(tmp_path / "a", tmp_path / "a" / "*.jsonl", tmp_path).files
    assert sorted(f.relpath for f in files) == ["b/x.jsonl", "only-a.jsonl", "x.jsonl"]
    assert len({f.path for f in files}) == len(files) == 3


def test_relpaths_are_unique_whatever_the_patterns(tmp_path):
    for name in ["a/x.jsonl", "a/s/x.jsonl", "b/s/x.jsonl", "c/x.jsonl"]:
        _write(tmp_path / name)
    patterns = [tmp_path / "a", tmp_path / "a" / "s", tmp_path / "b" / "s", tmp_path / "c", tmp_path / "b"]
    files = _list(*patterns).files
    relpaths = [f.relpath for f in files]
    assert len(set(relpaths)) == len(relpaths) == 4
    assert files == _list(*patterns).files  # deterministic


# -- names that are not UTF-8 --------------------------------------------------------------


def test_a_latin1_file_name_is_read_and_shown_escaped(tmp_path):
    root = tmp_path / "ln"
    _write(root / "ok.jsonl", '{"text": "ok doc"}\n')
    raw_root = os.fsencode(root)
    with open(raw_root + b"/r\xe9sum\xe9.txt", "wb") as handle:
        handle.write(b"a document")
    with open(raw_root + b"/caf\xe9.jsonl", "wb") as handle:
        handle.write(b'{"text": "derived id"}\n{"text": ""}\n')
    files = _list(root).files
    assert sorted(f.relpath for f in files) == ["caf\\xe9.jsonl", "ok.jsonl", "r\\xe9sum\\xe9.txt"]
    docs, rejected, stats = _read_all(files)
    by_text = {d["text"]: d for d in docs}
    assert by_text["a document"]["id"] == "r\\xe9sum\\xe9.txt" == by_text["a document"]["source"]
    assert by_text["derived id"]["id"] == "caf\\xe9.jsonl#0"
    assert [(r["source"], r["reason"]) for r in rejected] == [("caf\\xe9.jsonl", "empty_text")]
    # Everything reaches Arrow as valid UTF-8.
    pa.array([d["id"] for d in docs] + [s.relpath for s in stats], pa.string()).validate(full=True)
    json.dumps([s.relpath for s in stats], ensure_ascii=False).encode("utf-8")


def test_a_skipped_latin1_name_is_reported_escaped(tmp_path):
    root = tmp_path / "ln"
    _write(root / "ok.jsonl")
    with open(os.fsencode(root) + b"/d\xe9.csv", "wb") as handle:
        handle.write(b"x")
    (skipped,) = _list(root).skipped
    assert skipped.path.endswith("d\\xe9.csv")
    skipped.path.encode("utf-8")


# -- other filesystems go through match ---------------------------------------------------


def test_other_schemes_are_listed_with_match_and_the_same_glob_rules():
    objects = {"mem://bucket/data/a.jsonl": 10, "mem://bucket/data/sub/b.jsonl.gz": 20,
               "mem://bucket/data/sub/c.csv": 5, "mem://bucket/other/d.jsonl": 7}
    asked = []

    def match(pattern):
        asked.append(pattern)
        prefix = pattern[: -len("**")] if pattern.endswith("**") else None
        return [(p, s) for p, s in objects.items() if (p.startswith(prefix) if prefix else p == pattern)]

    listed = list_inputs(["mem://bucket/data/**/*.json*"], "auto", match)
    assert [(f.path, f.relpath, f.size) for f in listed.files] == [
        ("mem://bucket/data/a.jsonl", "a.jsonl", 10), ("mem://bucket/data/sub/b.jsonl.gz", "sub/b.jsonl.gz", 20)]
    assert asked == ["mem://bucket/data/**"]
    listed = list_inputs(["mem://bucket/data/"], "auto", match)
    assert [f.relpath for f in listed.files] == ["a.jsonl", "sub/b.jsonl.gz"]
    assert [s.path for s in listed.skipped] == ["mem://bucket/data/sub/c.csv"]
    assert [f.relpath for f in list_inputs(["mem://bucket/data", "mem://bucket/other/d.jsonl"], "auto", match).files] \
        == ["a.jsonl", "sub/b.jsonl.gz", "d.jsonl"]


def test_beam_listing_reads_local_folders(tmp_path):
    from corpusmill.transforms.io.beam import files as beam_files

    _write(tmp_path / "a.jsonl")
    _write(tmp_path / "b.csv")
    listed = beam_files.list_inputs([str(tmp_path / "**" / "*")])
    assert [f.relpath for f in listed.files] == ["a.jsonl"] and len(listed.skipped) == 1
    assert [f.relpath for f in beam_files.list_inputs([str(tmp_path)]).files] == ["a.jsonl"]
