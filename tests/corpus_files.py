"""Helpers shared by tests: the bundled sample's path and records, JSONL encoding.

A plain module (not conftest) so that test files can import it by a name no
other folder's conftest shadows.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import zstandard

SAMPLE = Path(__file__).resolve().parents[1] / "jobs" / "sample" / "linux-doc-sample.jsonl.zst"


def sample_records(limit: int | None = None) -> list[dict]:
    """Records of the bundled sample corpus (real Linux kernel documentation)."""
    with zstandard.ZstdDecompressor().stream_reader(SAMPLE.open("rb")) as reader:
        lines = io.TextIOWrapper(reader, encoding="utf-8")
        records = []
        for line in lines:
            records.append(json.loads(line))
            if limit is not None and len(records) >= limit:
                break
    return records



def jsonl_bytes(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def snapshot_parquet_digests(out: Path) -> dict[str, str]:
    """sha256 of every Parquet file of a snapshot, by path as a reader sees it.

    Locally a snapshot's entries are links into its hidden version folder
    (``OUT/.versions/<token>/``), so the walk goes through the visible entries.
    """
    import hashlib

    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for entry in sorted(out.iterdir()) if not entry.name.startswith(".")
            for p in sorted(entry.glob("**/*.parquet"))}
