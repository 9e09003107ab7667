"""Publishing a snapshot: staged shards are renamed into place, the manifest follows, _SUCCESS last.

A snapshot directory without ``_SUCCESS`` is incomplete. A run stages its
shards under ``_staging-<token>/`` and touches nothing else until the whole
pipeline has succeeded, so a failed or interrupted run never leaves files
that look like a finished snapshot.
"""

from __future__ import annotations

import json
import uuid

from apache_beam.io.filesystems import FileSystems

from corpusmill.schemas import manifest as manifest_lib
from corpusmill.transforms.io.beam.files import delete_tree, exists, read_bytes, write_bytes
from corpusmill.transforms.io.shard_files import OutputSpec, ParquetOptions, encode_shard

RESULTS_NAME = "_results.json"


class OutputExistsError(FileExistsError):
    """The output directory already holds a snapshot and overwrite was not asked for."""


def prepare_output(out: str, overwrite: bool, published: tuple[str, ...]) -> str:
    """Checks the output directory and returns a fresh staging directory under it.

    Args:
        out: Snapshot directory.
        overwrite: Whether an existing snapshot may be replaced.
        published: Names a snapshot publishes (folders and files).

    Raises:
        OutputExistsError: if ``out`` holds a snapshot and overwrite is False.
    """
    present = [name for name in (manifest_lib.SUCCESS_NAME, manifest_lib.MANIFEST_NAME, *published)
               if exists(f"{out}/{name}")]
    if present and not overwrite:
        raise OutputExistsError(
            f"{out} already holds a snapshot ({', '.join(present)}); choose another --output "
            f"or pass --overwrite (output.overwrite=true)")
    if present:
        # Unpublish first: from here until the new _SUCCESS the directory is incomplete.
        success = f"{out}/{manifest_lib.SUCCESS_NAME}"
        if exists(success):
            FileSystems.delete([success])
    staging = f"{out}/_staging-{uuid.uuid4().hex[:12]}"
    FileSystems.mkdirs(staging)
    return staging


def read_results(staging: str) -> list[dict]:
    """The stats records the pipeline left in the staging directory."""
    return json.loads(read_bytes(f"{staging}/{RESULTS_NAME}").decode("utf-8"))


def write_results(records: list[dict], staging: str) -> None:
    """Leaves the pipeline's stats and shard records in the staging directory for the driver."""
    write_bytes(f"{staging}/{RESULTS_NAME}", json.dumps(records, sort_keys=True).encode("utf-8"))


def fill_missing_shards(spec: OutputSpec, staging: str, num_shards: int, written: list[dict],
                        options: ParquetOptions) -> list[dict]:
    """Writes empty shards for shard numbers no row went to, so every part-i-of-N exists."""
    have = {s["shard"] for s in written}
    added = []
    for shard in range(num_shards):
        if shard not in have:
            record, data = encode_shard(spec, shard, num_shards, spec.schema.empty_table(), options)
            write_bytes(f"{staging}/{record['path']}", data)
            added.append(record)
    return written + added


def publish(out: str, staging: str, outputs: dict[str, list[dict]], manifest: dict,
            published: tuple[str, ...], report_html: str | None = None) -> None:
    """Moves staged shards into place, then writes the manifest, the report and _SUCCESS.

    Args:
        out: Snapshot directory.
        staging: Staging directory holding every shard under its final relative path.
        outputs: Shard records per output folder.
        manifest: The finished manifest.
        published: Names a snapshot publishes; old ones are removed first.
        report_html: The rendered report.html, if any.
    """
    for name in published:
        if exists(f"{out}/{name}"):
            delete_tree(f"{out}/{name}")
    sources, destinations = [], []
    for name, shards in outputs.items():
        if not exists(f"{out}/{name}"):
            FileSystems.mkdirs(f"{out}/{name}")
        for shard in shards:
            sources.append(f"{staging}/{shard['path']}")
            destinations.append(f"{out}/{shard['path']}")
    if sources:
        FileSystems.rename(sources, destinations)
    text = manifest_lib.dumps(manifest)
    write_bytes(f"{out}/{manifest_lib.MANIFEST_NAME}.tmp", text.encode("utf-8"))
    FileSystems.rename([f"{out}/{manifest_lib.MANIFEST_NAME}.tmp"], [f"{out}/{manifest_lib.MANIFEST_NAME}"])
    if report_html is not None:
        write_bytes(f"{out}/{manifest_lib.REPORT_NAME}", report_html.encode("utf-8"))
    delete_tree(staging)
    write_bytes(f"{out}/{manifest_lib.SUCCESS_NAME}", b"")


def discard(staging: str) -> None:
    """Removes a failed run's staging directory."""
    if exists(staging):
        delete_tree(staging)

