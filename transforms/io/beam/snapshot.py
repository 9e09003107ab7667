"""Publishing a snapshot: build it whole beside the old one, verify it, then switch.

A snapshot directory is complete when ``_SUCCESS`` exists; ``_SUCCESS`` holds the
sha256 of ``manifest.json``, and every shard the manifest lists has the size and
sha256 it records. The publish protocol keeps that true at every instant:

1. Under the output's lock (``lock.OutputLock``), ``prepare_output`` finishes or
   clears what an earlier, killed run left (``recover``), refuses an existing
   snapshot unless overwriting, refuses to overwrite what is not a corpusmill
   snapshot, and makes ``OUT/_staging-<token>/``. The previous snapshot, if any,
   stays published and untouched.
2. The pipeline writes every shard into the staging directory; the driver adds
   ``manifest.json`` and ``report.html`` there and ``publish`` verifies every
   staged shard (size and sha256) against the manifest. Only then is the
   staging directory marked ``_READY`` (with the list of entries to switch).
3. The switch: ``_SUCCESS`` is removed, the previous snapshot's entries move to
   ``OUT/_previous-<token>/``, the new entries move in (one rename per entry
   on a local filesystem), ``_SUCCESS`` is written, the previous entries are
   deleted. A run killed during the switch leaves a ``_READY`` staging
   directory, and the next corpusmill run on the output rolls the switch
   forward before anything else (``recover``); until then the directory has no
   ``_SUCCESS`` and reads as incomplete, never as a wrong snapshot.

Files the snapshot did not write (a user's notes beside it) are never moved or deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import uuid

from apache_beam.io.filesystems import FileSystems

from corpusmill.schemas import manifest as manifest_lib
from corpusmill.transforms.io.beam.files import delete_tree, exists, read_bytes, write_bytes
from corpusmill.transforms.io.beam.lock import is_local
from corpusmill.transforms.io.shard_files import OutputSpec, ParquetOptions, encode_shard

RESULTS_NAME = "_results.json"
READY_NAME = "_READY"
STAGING_PREFIX = "_staging-"
PREVIOUS_PREFIX = "_previous-"


def checkpoint(name: str) -> None:
    """A named point of the protocol where the kill tests stop a run (``CORPUSMILL_PAUSE_AT``).

    Points: ``locked`` (lock held), ``staged`` (pipeline done), ``ready``
    (verified and marked ready), ``switching`` (old entries moved out, new not
    yet in), ``switched`` (``_SUCCESS`` written, leftovers not yet removed).
    """
    if os.environ.get("CORPUSMILL_PAUSE_AT") == name:
        print(f"corpusmill: paused at {name}", file=sys.stderr, flush=True)
        time.sleep(3600)


class OutputExistsError(FileExistsError):
    """The output directory already holds a snapshot (or files) that this run may not replace."""


class SnapshotVerificationError(RuntimeError):
    """A staged shard does not match the manifest; nothing was published."""


def _children(out: str, prefix: str) -> list[str]:
    """Top-level entries of ``out`` whose names start with ``prefix``."""
    if is_local(out):
        return sorted(f"{out}/{name}" for name in os.listdir(out) if name.startswith(prefix)) \
            if os.path.isdir(out) else []
    found = {m.path[len(out) + 1:].split("/", 1)[0]
             for m in FileSystems.match([f"{out}/{prefix}*/**"])[0].metadata_list}
    return sorted(f"{out}/{name}" for name in found)


def _move(source: str, destination: str) -> None:
    """Moves a file or a folder: one rename on a local filesystem, one per object elsewhere."""
    if is_local(source):
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        os.replace(source, destination)
        return
    matched = FileSystems.match([f"{source}/**"])[0].metadata_list
    sources = [m.path for m in matched] or [source]
    FileSystems.rename(sources, [destination + path[len(source):] for path in sources])


def _read_manifest(out: str) -> dict | None:
    path = f"{out}/{manifest_lib.MANIFEST_NAME}"
    if not exists(path):
        return None
    try:
        manifest = json.loads(read_bytes(path).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and "corpusmill_manifest" in manifest else None


def recover(out: str, published: tuple[str, ...]) -> list[str]:
    """Finishes a switch a killed run left half done and removes other runs' leftovers.

    Call with the output's lock held. A staging directory marked ``_READY`` is
    switched in (its run had verified it); every other staging and
    ``_previous`` directory is removed.

    Returns:
        What was done, one line each (for the run's log).
    """
    done = []
    for staging in _children(out, STAGING_PREFIX):
        if exists(f"{staging}/{READY_NAME}"):
            _switch(out, staging, published)
            done.append(f"finished publishing {staging}, interrupted by an earlier run")
        else:
            delete_tree(staging)
            done.append(f"removed {staging}, left by an interrupted run")
    for previous in _children(out, PREVIOUS_PREFIX):
        delete_tree(previous)
        done.append(f"removed {previous}, left by an interrupted run")
    return done


def prepare_output(out: str, overwrite: bool, published: tuple[str, ...]) -> str:
    """Checks the output directory and returns a fresh staging directory under it.

    Call with the output's lock held (``lock.OutputLock``).

    Args:
        out: Snapshot directory.
        overwrite: Whether an existing snapshot may be replaced (once the new one is complete).
        published: Top-level names a snapshot publishes (folders and files).

    Raises:
        OutputExistsError: if ``out`` holds a snapshot and overwrite is False, or
            holds files of those names that are not a corpusmill snapshot.
    """
    recover(out, published)
    present = [name for name in (manifest_lib.SUCCESS_NAME, manifest_lib.MANIFEST_NAME, *published)
               if exists(f"{out}/{name}")]
    if present and not overwrite:
        raise OutputExistsError(
            f"{out} already holds a snapshot ({', '.join(present)}); choose another --output "
            f"or pass --overwrite (output.overwrite=true)")
    previous = _read_manifest(out) if present else None
    if present and previous is None:
        raise OutputExistsError(
            f"{out} holds {', '.join(present)} but no corpusmill manifest: it is not a corpusmill "
            f"snapshot, and --overwrite replaces only a snapshot; choose another --output")
    foreign = _unlisted_files(out, previous, published) if previous else []
    if foreign:
        raise OutputExistsError(
            f"{out} holds files its snapshot did not write ({', '.join(foreign[:5])}"
            f"{', ...' if len(foreign) > 5 else ''}); --overwrite would delete them: move them out first")
    staging = f"{out}/{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
    FileSystems.mkdirs(staging)
    return staging


def _files_under(folder: str) -> list[str]:
    if is_local(folder):
        if os.path.isfile(folder):
            return [folder]
        return [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names]
    return [m.path for m in FileSystems.match([f"{folder}/**"])[0].metadata_list]


def _unlisted_files(out: str, manifest: dict, published: tuple[str, ...]) -> list[str]:
    """Files inside a snapshot's published folders that its manifest does not list."""
    listed = {shard["path"] for shard in manifest_shards(manifest)} | {manifest_lib.REPORT_NAME}
    found = [path[len(out) + 1:] for name in published if exists(f"{out}/{name}")
             for path in _files_under(f"{out}/{name}")]
    return sorted(path for path in found if path not in listed)


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


def shard_problems(root: str, shards: list[dict]) -> list[str]:
    """What is wrong with the listed shards under ``root``: missing, or another size or sha256."""
    problems = []
    for shard in shards:
        path = f"{root}/{shard['path']}"
        if not exists(path):
            problems.append(f"{shard['path']}: missing")
            continue
        digest, size = hashlib.sha256(), 0
        with FileSystems.open(path) as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
                size += len(chunk)
        if size != shard["bytes"]:
            problems.append(f"{shard['path']}: {size} bytes, the manifest says {shard['bytes']}")
        elif digest.hexdigest() != shard["sha256"]:
            problems.append(f"{shard['path']}: sha256 differs from the manifest")
    return problems


def manifest_shards(manifest: dict) -> list[dict]:
    """Every shard a manifest lists."""
    return [shard for output in manifest.get("outputs", {}).values() for shard in output.get("shards", [])]


def publish(out: str, staging: str, manifest: dict, published: tuple[str, ...],
            report_html: str | None = None) -> None:
    """Verifies the staged snapshot, marks it ready and switches it in.

    Args:
        out: Snapshot directory.
        staging: Staging directory holding every shard under its final relative path.
        manifest: The finished manifest (its ``outputs`` list the staged shards).
        published: Top-level names a snapshot publishes; the previous snapshot's go.
        report_html: The rendered report.html, if any.

    Raises:
        SnapshotVerificationError: a staged shard does not match the manifest
            (the previous snapshot, if any, stays published).
    """
    text = manifest_lib.dumps(manifest).encode("utf-8")
    write_bytes(f"{staging}/{manifest_lib.MANIFEST_NAME}", text)
    entries = sorted({shard["path"].split("/", 1)[0] for shard in manifest_shards(manifest)}
                     | {manifest_lib.MANIFEST_NAME})
    if report_html is not None:
        write_bytes(f"{staging}/{manifest_lib.REPORT_NAME}", report_html.encode("utf-8"))
        entries.append(manifest_lib.REPORT_NAME)
    problems = shard_problems(staging, manifest_shards(manifest))
    if problems:
        raise SnapshotVerificationError(
            f"{len(problems)} staged shard(s) do not match the manifest, nothing was published: "
            + "; ".join(problems[:5]))
    ready = {"entries": entries, "manifest_sha256": hashlib.sha256(text).hexdigest()}
    write_bytes(f"{staging}/{READY_NAME}", json.dumps(ready, sort_keys=True).encode("utf-8"))
    checkpoint("ready")
    _switch(out, staging, published)


def _switch(out: str, staging: str, published: tuple[str, ...]) -> None:
    """Moves a ready staging directory's entries into place; safe to repeat after a kill."""
    ready = json.loads(read_bytes(f"{staging}/{READY_NAME}").decode("utf-8"))
    entries = ready["entries"]
    success = f"{out}/{manifest_lib.SUCCESS_NAME}"
    previous = f"{out}/{PREVIOUS_PREFIX}{staging.rsplit(STAGING_PREFIX, 1)[1]}"
    if exists(success) and not any(exists(f"{staging}/{name}") for name in entries):
        # Switched already (killed while removing leftovers): only the leftovers remain.
        for leftover in (previous, staging):
            if exists(leftover):
                delete_tree(leftover)
        return
    if exists(success):
        FileSystems.delete([success])
    for name in sorted({*published, manifest_lib.MANIFEST_NAME}):
        # An entry still in staging has not moved yet, so the one in place is the old one.
        if exists(f"{out}/{name}") and (name not in entries or exists(f"{staging}/{name}")):
            _move(f"{out}/{name}", f"{previous}/{name}")
    checkpoint("switching")
    for name in entries:
        if exists(f"{staging}/{name}"):
            _move(f"{staging}/{name}", f"{out}/{name}")
    write_bytes(success, (ready["manifest_sha256"] + "\n").encode("ascii"))
    checkpoint("switched")
    for leftover in (previous, staging):
        if exists(leftover):
            delete_tree(leftover)


def snapshot_problems(out: str) -> list[str]:
    """Why a snapshot directory is not complete and intact (empty when it is).

    Checks ``_SUCCESS``, that it names this manifest, every listed shard's
    size and sha256, and whether a publish was interrupted.
    """
    problems = []
    success = f"{out}/{manifest_lib.SUCCESS_NAME}"
    if not exists(success) and any(exists(f"{staging}/{READY_NAME}") for staging in _children(out, STAGING_PREFIX)):
        problems.append("a publish was interrupted; the next corpusmill run on this output finishes it")
    manifest_path = f"{out}/{manifest_lib.MANIFEST_NAME}"
    manifest = _read_manifest(out)
    if manifest is None:
        return problems + [f"{manifest_lib.MANIFEST_NAME} is missing or not a corpusmill manifest"]
    named = read_bytes(success).decode("ascii", "replace").strip() if exists(success) else None
    if named is None:
        problems.append(f"{manifest_lib.SUCCESS_NAME} is missing: the snapshot is incomplete")
    elif named and named != hashlib.sha256(read_bytes(manifest_path)).hexdigest():
        problems.append(f"{manifest_lib.SUCCESS_NAME} names another manifest than {manifest_lib.MANIFEST_NAME}")
    problems += shard_problems(out, manifest_shards(manifest))
    # A run may have switched a new snapshot in while this one was read: then the
    # reading saw two snapshots, and only reading again tells which is there.
    now = read_bytes(success).decode("ascii", "replace").strip() if exists(success) else None
    if named is not None and now != named:
        return ["the snapshot changed while it was read (a run was publishing); inspect it again"]
    return problems


def discard(staging: str) -> None:
    """Removes a failed run's staging directory (unless it was ready: the next run finishes it)."""
    if exists(staging) and not exists(f"{staging}/{READY_NAME}"):
        delete_tree(staging)
