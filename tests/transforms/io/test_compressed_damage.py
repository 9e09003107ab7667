"""Damaged compressed input through the real readers: checksums, truncation, empty files, bz2 and xz.

Every test writes real files into tmp_path and reads them with ``read_file``;
the accounting rule is checked everywhere: records = kept + rejected.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import random
import struct
import zlib

import pyarrow as pa
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corpusmill.transforms.io import compression, streams
from corpusmill.transforms.io.formats import BatchBuilder, FieldMap, read_file
from corpusmill.transforms.io.inputs import InputFile, detect_format


def _records(n: int, seed: int = 0, words: int = 60) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": f"d{i}", "text": " ".join(str(rng.random()) for _ in range(words))} for i in range(n)]


def _jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def _read(path, batch_rows=1000):
    fmt, compression_kind = detect_format(str(path))
    file = InputFile(str(path), path.name, path.stat().st_size, fmt, compression_kind)
    builder = BatchBuilder(FieldMap(), 10**8, batch_rows)
    out = list(read_file(file, lambda p: open(p, "rb"), builder)) + list(builder.take(final=True))
    docs = [d for t, b in out if t == "docs" for d in b.to_pylist()]
    rejected = [r for t, b in out if t == "rejected" for r in b.to_pylist()]
    stats = next(b for t, b in out if t == "stats")
    assert stats.records == len(docs) + len(rejected)  # nothing lost, nothing counted twice
    return docs, rejected, stats


def _gzip_member(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _flip(data: bytes, position: int) -> bytes:
    damaged = bytearray(data)
    damaged[position] ^= 0xFF
    return bytes(damaged)


# -- gzip: a CRC failure rejects the member's records ---------------------------------


def test_flipped_byte_in_gzip_keeps_no_record_of_the_member(tmp_path):
    records = _records(2000)
    path = tmp_path / "flip.jsonl.gz"
    compressed = _gzip_member(_jsonl(records))
    path.write_bytes(_flip(compressed, len(compressed) // 2))

    docs, rejected, stats = _read(path)
    assert docs == []
    corrupt = [r for r in rejected if r["reason"] == "corrupt_file"]
    # Each record the damaged member decoded to is one rejection, at its own line.
    assert len(corrupt) >= len(records) - 1 and len(rejected) <= len(records) + 1
    assert [r["record_index"] for r in corrupt] == list(range(len(corrupt)))
    assert corrupt[0]["locator"] == "line 1" and corrupt[0]["excerpt"].startswith('{"id": "d0"')
    assert "compressed byte" in corrupt[0]["detail"] and "gzip" in corrupt[0]["detail"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_no_garbled_gzip_record_is_kept_wherever_a_byte_flips(tmp_path, data):
    records = _records(300, seed=1, words=20)
    compressed = _gzip_member(_jsonl(records))
    position = data.draw(st.integers(0, len(compressed) - 1))
    path = tmp_path / "flip.jsonl.gz"
    path.write_bytes(_flip(compressed, position))
    docs, rejected, _ = _read(path)
    originals = {r["id"]: r["text"] for r in records}
    # Whatever is kept is exactly what was written; a flip in the data keeps nothing.
    assert all(originals.get(d["id"]) == d["text"] for d in docs)
    if 10 <= position < len(compressed) - 8:
        assert docs == [] and rejected


def _members(parts: list[bytes]) -> list[bytes]:
    return [_gzip_member(part) for part in parts]


def test_gzip_members_are_checked_one_by_one_and_lines_spanning_members_follow_the_damage(tmp_path):
    raw = _jsonl(_records(90, seed=2, words=10))
    # Members cut in the middle of lines, as bgzip and pigz do.
    cuts = [0, len(raw) // 3 + 7, 2 * len(raw) // 3 + 11, len(raw)]
    parts = [raw[a:b] for a, b in zip(cuts, cuts[1:])]
    members = _members(parts)
    # The second member's stored CRC is wrong: its data decodes, and cannot be trusted.
    stored_crc = struct.unpack("<I", members[1][-8:-4])[0]
    members[1] = members[1][:-8] + struct.pack("<I", stored_crc ^ 1) + members[1][-4:]
    path = tmp_path / "members.jsonl.gz"
    path.write_bytes(b"".join(members))

    docs, rejected, stats = _read(path)
    line_ends = [i + 1 for i, byte in enumerate(raw) if byte == 0x0A]
    line_starts = [0, *line_ends[:-1]]
    damaged = {i for i, (start, end) in enumerate(zip(line_starts, line_ends))
               if start < cuts[2] and end > cuts[1]}
    assert [d["_origin_index"] for d in docs] == [i for i in range(90) if i not in damaged]
    assert [r["record_index"] for r in rejected] == sorted(damaged)
    assert {r["reason"] for r in rejected} == {"corrupt_file"}
    assert "CRC-32 check failed" in rejected[0]["detail"]
    assert f"compressed bytes {len(members[0])}..{len(members[0]) + len(members[1])}" in rejected[0]["detail"]
    assert stats.records == 90


def test_truncated_gzip_still_keeps_the_records_before_the_cut(tmp_path):
    records = _records(400, seed=3)
    compressed = _gzip_member(_jsonl(records))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    docs, rejected, _ = _read(path)
    assert 0 < len(docs) < 400 and [d["id"] for d in docs] == [r["id"] for r in records[: len(docs)]]
    assert [r["reason"] for r in rejected] == ["truncated_file"]


def test_gzip_padding_and_trailing_garbage(tmp_path):
    records = _records(20, seed=4, words=5)
    padded = tmp_path / "padded.jsonl.gz"
    padded.write_bytes(_gzip_member(_jsonl(records)) + b"\0" * 7)
    docs, rejected, _ = _read(padded)
    assert len(docs) == 20 and rejected == []
    garbage = tmp_path / "garbage.jsonl.gz"
    garbage.write_bytes(_gzip_member(_jsonl(records)) + b"junk after the member")
    docs, rejected, _ = _read(garbage)
    assert len(docs) == 20 and [r["reason"] for r in rejected] == ["corrupt_file"]
    not_gzip = tmp_path / "not.jsonl.gz"
    not_gzip.write_bytes(b"this is not gzip at all")
    _, rejected, _ = _read(not_gzip)
    assert [r["reason"] for r in rejected] == ["unreadable_file"]


# -- zstd: small steps, frame checksums ------------------------------------------------


def _zstd_break(compressed: bytes) -> tuple[bytes, int]:
    """A copy with one flipped byte that libzstd reports as corrupt, and the bytes decoded before."""
    for position in range(len(compressed) // 2, len(compressed) - 8):
        damaged = _flip(compressed, position)
        obj = zstandard.ZstdDecompressor().decompressobj()
        decoded = 0
        try:
            for i in range(0, len(damaged), 256):
                decoded += len(obj.decompress(damaged[i: i + 256]))
        except zstandard.ZstdError:
            return damaged, decoded
    raise AssertionError("no flip was detected")


def test_damaged_zstd_without_checksum_keeps_what_decodes_before_the_damage(tmp_path):
    records = _records(2000)
    raw = _jsonl(records)
    damaged, decoded = _zstd_break(zstandard.ZstdCompressor(write_checksum=False).compress(raw))
    path = tmp_path / "flip.jsonl.zst"
    path.write_bytes(damaged)
    docs, rejected, _ = _read(path)
    # An oracle decoding in tiny steps: every line complete before the damage.
    complete = raw[:decoded].count(b"\n")
    assert complete > 500
    assert len(docs) >= complete - 200  # at most one decoding step's worth is lost
    assert [d["text"] for d in docs] == [r["text"] for r in records[: len(docs)]]
    assert [r["reason"] for r in rejected] == ["corrupt_file"]
    assert "compressed byte" in rejected[0]["detail"]


def _frames(parts: list[bytes], checksum: bool) -> list[bytes]:
    return [zstandard.ZstdCompressor(write_checksum=checksum).compress(part) for part in parts]


def test_zstd_frame_checksum_failure_rejects_that_frame_only(tmp_path):
    records = _records(60, seed=5, words=10)
    parts = [_jsonl(records[:20]), _jsonl(records[20:40]), _jsonl(records[40:])]
    frames = _frames(parts, checksum=True)
    frames[1] = frames[1][:-1] + bytes([frames[1][-1] ^ 0x01])  # the stored checksum
    path = tmp_path / "frames.jsonl.zst"
    path.write_bytes(b"".join(frames))
    docs, rejected, _ = _read(path)
    assert [d["id"] for d in docs] == [r["id"] for r in records[:20] + records[40:]]
    assert [r["record_index"] for r in rejected] == list(range(20, 40))
    assert {r["reason"] for r in rejected} == {"corrupt_file"}
    assert "checksum" in rejected[0]["detail"] and "compressed bytes" in rejected[0]["detail"]


def test_zstd_data_damage_in_a_checksummed_frame_rejects_its_records(tmp_path):
    records = _records(2000)
    damaged, _ = _zstd_break(zstandard.ZstdCompressor(write_checksum=True).compress(_jsonl(records)))
    path = tmp_path / "flip.jsonl.zst"
    path.write_bytes(damaged)
    docs, rejected, _ = _read(path)
    assert docs == [] and {r["reason"] for r in rejected} == {"corrupt_file"}
    assert len(rejected) > 500  # one per record decoded, plus the unread rest


def test_skippable_zstd_frames_and_frames_written_block_by_block(tmp_path):
    records = _records(30, seed=6, words=5)
    compressor = zstandard.ZstdCompressor(write_checksum=True).compressobj()
    blocks = []
    for record in records:
        blocks.append(compressor.compress(_jsonl([record])))
        blocks.append(compressor.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))
    blocks.append(compressor.flush())
    skippable = struct.pack("<II", 0x184D2A50, 5) + b"hello"
    path = tmp_path / "streamed.jsonl.zst"
    path.write_bytes(skippable + b"".join(blocks) + skippable)
    docs, rejected, _ = _read(path)
    assert [d["id"] for d in docs] == [r["id"] for r in records] and rejected == []


# -- zero-byte files, bz2, xz -----------------------------------------------------------


@pytest.mark.parametrize("name", ["a.jsonl.gz", "a.jsonl.zst", "a.jsonl.bz2", "a.jsonl.xz", "a.txt.gz"])
def test_a_zero_byte_compressed_file_is_one_empty_file_rejection(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    docs, rejected, stats = _read(path)
    assert docs == [] and [r["reason"] for r in rejected] == ["empty_file"] and stats.records == 1


def test_a_zero_byte_plain_jsonl_file_holds_no_record(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"")
    assert _read(path) [:2] == ([], [])


_COMPRESS = {"bz2": bz2.compress, "xz": lzma.compress, "zst": zstandard.ZstdCompressor().compress,
             "gz": _gzip_member}


@pytest.mark.parametrize("suffix", ["bz2", "xz"])
def test_bz2_and_xz_are_read_whole_concatenated_and_truncated(tmp_path, suffix):
    records = _records(300, seed=7, words=20)
    first, second = _COMPRESS[suffix](_jsonl(records[:150])), _COMPRESS[suffix](_jsonl(records[150:]))
    whole = tmp_path / f"whole.jsonl.{suffix}"
    whole.write_bytes(first + second)
    docs, rejected, _ = _read(whole)
    assert [d["id"] for d in docs] == [r["id"] for r in records] and rejected == []

    cut = tmp_path / f"cut.jsonl.{suffix}"
    cut.write_bytes(first[: len(first) * 2 // 3])
    docs, rejected, _ = _read(cut)
    assert [d["id"] for d in docs] == [r["id"] for r in records[: len(docs)]]
    assert [r["reason"] for r in rejected] == ["truncated_file"]

    flipped = tmp_path / f"flip.jsonl.{suffix}"
    flipped.write_bytes(_flip(first, len(first) // 2) + second)
    docs, rejected, _ = _read(flipped)
    originals = {r["id"]: r["text"] for r in records}
    assert all(originals[d["id"]] == d["text"] for d in docs)
    assert rejected and {r["reason"] for r in rejected} <= {"corrupt_file"}


@pytest.mark.parametrize("suffix", ["gz", "zst", "bz2", "xz"])
def test_compressed_text_documents_are_named_without_the_compression_suffix(tmp_path, suffix):
    text = "A text document.\n" * 50
    path = tmp_path / f"notes.md.{suffix}"
    path.write_bytes(_COMPRESS[suffix](text.encode()))
    docs, rejected, _ = _read(path)
    assert [(d["id"], d["text"]) for d in docs] == [("notes.md", text)] and rejected == []


def test_a_corrupt_gzip_text_document_is_rejected_as_corrupt(tmp_path):
    compressed = _gzip_member(("A text document, repeated with numbers " +
                               " ".join(map(str, range(3000)))).encode())
    trailer = compressed[-8:]
    path = tmp_path / "doc.txt.gz"
    path.write_bytes(compressed[:-8] + struct.pack("<I", struct.unpack("<I", trailer[:4])[0] ^ 1) + trailer[4:])
    docs, rejected, _ = _read(path)
    assert docs == [] and [(r["reason"], r["id"]) for r in rejected] == [("corrupt_file", "doc.txt")]


# -- the decoder and its spool ----------------------------------------------------------


def test_a_large_checked_unit_spills_to_disk_and_decodes_the_same(monkeypatch):
    raw = _jsonl(_records(3000, seed=8, words=10))
    compressed = _gzip_member(raw)
    in_memory = b"".join(b for b, _ in compression.decoded_blocks(io.BytesIO(compressed), "gzip"))
    spilled = []
    real_temporary_file = streams.tempfile.TemporaryFile

    def counting_temporary_file(*args, **kwargs):
        spilled.append(1)
        return real_temporary_file(*args, **kwargs)

    monkeypatch.setattr(streams, "SPOOL_MEMORY_BYTES", 100_000)
    monkeypatch.setattr(streams.tempfile, "TemporaryFile", counting_temporary_file)
    blocks = list(compression.decoded_blocks(io.BytesIO(compressed), "gzip"))
    assert spilled and b"".join(b for b, _ in blocks) == in_memory == raw
    assert all(damage is None for _, damage in blocks)
    assert all(len(b) <= streams.READ_CHUNK for b, _ in blocks)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=4), st.sampled_from(["gzip", "zstd", "bzip2", "xz"]),
       st.booleans())
def test_clean_multi_unit_files_decode_to_their_bytes(parts, kind, checksum):
    encode = {"gzip": _gzip_member, "bzip2": bz2.compress, "xz": lzma.compress,
              "zstd": zstandard.ZstdCompressor(write_checksum=checksum).compress}[kind]
    data = b"".join(encode(part) for part in parts)
    blocks = list(compression.decoded_blocks(io.BytesIO(data), kind))
    assert b"".join(b for b, _ in blocks) == b"".join(parts)
    assert all(damage is None for _, damage in blocks)


def test_a_gzip_length_mismatch_is_damage():
    member = _gzip_member(b'{"text": "x"}\n')
    size = struct.unpack("<I", member[-4:])[0]
    blocks = list(compression.decoded_blocks(io.BytesIO(member[:-4] + struct.pack("<I", size + 1)), "gzip"))
    assert blocks and all("length check failed" in damage for _, damage in blocks)
    assert zlib.decompress(member, 31) == b"".join(b for b, _ in blocks)


def test_read_batches_are_arrow(tmp_path):
    path = tmp_path / "a.jsonl.xz"
    path.write_bytes(lzma.compress(_jsonl(_records(5))))
    file = InputFile(str(path), path.name, path.stat().st_size, "jsonl", "xz")
    builder = BatchBuilder(FieldMap(), 10**8, 2)
    batches = [b for t, b in read_file(file, lambda p: open(p, "rb"), builder) if t == "docs"]
    assert batches and all(isinstance(b, pa.RecordBatch) and b.num_rows == 2 for b in batches)
