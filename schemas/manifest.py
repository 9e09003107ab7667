"""The snapshot manifest: what a run read, what it wrote, and proof that nothing was lost.

The manifest is built from the data the pipeline wrote (shard row counts,
rejected rows by reason) and from what the readers counted, independently:
``input_records`` comes from the readers, ``kept``/``duplicates``/``rejected``
from the written shards, so ``balanced`` is a real check, not a tautology.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any

MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"
REPORT_NAME = "report.html"
SUCCESS_NAME = "_SUCCESS"

# Keys whose values legitimately differ between two runs of the same job.
VOLATILE_KEYS = ("created_at", "timings")
# Skipped files listed by name; the count covers all of them (a folder with a .git has thousands).
MAX_LISTED_SKIPPED = 1000


class AccountingError(RuntimeError):
    """Input records do not equal kept + duplicates + rejected."""


def input_fingerprint(files: list[dict[str, Any]]) -> str:
    """SHA-256 over the sorted (relative path, size, content digest) of every input file."""
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda f: f["relpath"]):
        digest.update(f"{f['relpath']}\0{f['size']}\0{f['digest']}\n".encode("utf-8"))
    return digest.hexdigest()


def output_summary(shards: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals and the sorted shard list of one output folder."""
    shards = sorted(shards, key=lambda s: s["path"])
    return {
        "rows": sum(s["rows"] for s in shards),
        "bytes": sum(s["bytes"] for s in shards),
        "shards": [{k: s[k] for k in ("path", "rows", "bytes", "sha256")} for s in shards],
    }


def build_manifest(
    *,
    job_name: str,
    config: dict[str, Any],
    code_version: dict[str, Any],
    read_stats: list[dict[str, Any]],
    input_files: list[dict[str, Any]] = (),
    skipped: list[dict[str, Any]] = (),
    outputs: dict[str, list[dict[str, Any]]],
    rejected_by_reason: dict[str, int],
    duplicates_by_kind: dict[str, int],
    execution: dict[str, Any],
    stages: dict[str, Any],
    counters: dict[str, int],
    timings: dict[str, Any],
    created_at: str,
) -> dict[str, Any]:
    """Assembles the manifest and checks the accounting.

    ``input_files`` (path, format, compression of each planned file) and
    ``skipped`` (path, reason of each matched file not read) go into the
    input section beside what the readers counted per file.

    ``stages`` adds one section per stage that ran (``dedup``, ``decompose``),
    in pipeline order, with the numbers that stage reported; ``stages`` in the
    manifest lists their names in that order.

    Raises:
        AccountingError: if input records != kept + duplicates + rejected.
    """
    files = [f for task in read_stats for f in task["files"]]
    input_records = sum(f["records"] for f in files)
    summaries = {name: output_summary(shards) for name, shards in sorted(outputs.items())}
    kept = summaries.get("docs", {"rows": 0})["rows"]
    rejected = summaries.get("rejected", {"rows": 0})["rows"]
    duplicates = sum(duplicates_by_kind.values())
    counts = {
        "input_records": input_records,
        "kept": kept,
        "duplicates": duplicates,
        "duplicates_by_kind": dict(sorted(duplicates_by_kind.items())),
        "rejected": rejected,
        "rejected_by_reason": dict(sorted(rejected_by_reason.items())),
        "balanced": input_records == kept + duplicates + rejected,
    }
    warnings = []
    if kept == 0:
        warnings.append(f"no document was kept: all {input_records} input records were rejected or duplicates "
                        f"(see rejected/ for the reasons)")
    manifest = {
        "corpusmill_manifest": MANIFEST_VERSION,
        "warnings": warnings,
        "status": "complete" if counts["balanced"] else "failed",
        "job": job_name,
        "created_at": created_at,
        "code_version": code_version,
        "config": config,
        "input": input_section(files, input_files, skipped),
        "counts": counts,
        "execution": execution,
        "outputs": summaries,
        "stages": list(stages),
        **stages,
        "counters": dict(sorted(counters.items())),
        "timings": timings,
    }
    if not counts["balanced"]:
        raise AccountingError(
            f"accounting failed: input {input_records} != kept {kept} + duplicates {duplicates} "
            f"+ rejected {rejected}"
        )
    return manifest


def input_section(files: list[dict[str, Any]], input_files: list[dict[str, Any]],
                  skipped: list[dict[str, Any]]) -> dict[str, Any]:
    """What the run read: files, bytes, fingerprint, records, damage, and the files it skipped."""
    return {
        "files": len(files),
        "bytes": sum(f["size"] for f in files),
        "fingerprint": input_fingerprint(files),
        "records": sum(f["records"] for f in files),
        "blank_lines_skipped": sum(f["blank_lines"] for f in files),
        "rows_lost_in_damage": sum(f["rows_lost_in_damage"] for f in files),
        "file_list": file_list(files, input_files),
        "skipped_files": len(skipped),
        "skipped": list(skipped)[:MAX_LISTED_SKIPPED],
    }


def file_list(read: list[dict[str, Any]], planned: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every input file: path, format, compression, bytes and records, sorted by path."""
    kinds = {f["path"]: f for f in planned}
    return [{"path": f["relpath"], "format": kinds.get(f["relpath"], {}).get("format"),
             "compression": kinds.get(f["relpath"], {}).get("compression"), "bytes": f["size"],
             "records": f["records"]} for f in sorted(read, key=lambda f: f["relpath"])]


def sum_value_counts(per_shard: list[dict[str, int]]) -> dict[str, int]:
    """Sums per-shard value counts (rejection reasons, duplicate kinds)."""
    total: Counter[str] = Counter()
    for counts in per_shard:
        total.update(counts)
    return dict(total)


def dumps(manifest: dict[str, Any]) -> str:
    """Canonical JSON: sorted keys, two-space indent, trailing newline."""
    return json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def stable_view(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest without the keys that differ between identical runs."""
    return {k: v for k, v in manifest.items() if k not in VOLATILE_KEYS}
