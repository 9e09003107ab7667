"""Publishing a snapshot: build it whole beside the old one, verify it, then switch.

A snapshot directory is complete when ``_SUCCESS`` exists; ``_SUCCESS`` holds the
sha256 of ``manifest.json``, and every shard the manifest lists has the size and
sha256 it records. The publish protocol keeps that true at every instant:

1. Under the output's lock (``lock.OutputLock``), ``prepare_output`` finishes or
   clears what an earlier, killed run left (``recover``), refuses an existing
   snapshot unless overwriting, refuses to overwrite what is not a corpusmill
   snapshot, and makes the staging directory. The previous snapshot, if any,
   stays published and untouched.
2. The pipeline writes every shard into the staging directory; the driver adds
   ``manifest.json`` and ``report.html`` there and ``publish`` verifies every
   staged shard (size and sha256) against the manifest. Only then is the
   staging directory marked ``_READY`` (with the list of entries to switch).
3. The switch, on a local filesystem: one pointer. The staging directory is a
   version, ``OUT/.versions/<token>/``, holding its own ``_SUCCESS``; every
   top-level entry of the snapshot (``docs``, ``manifest.json``, ``_SUCCESS``,
   ...) is a symbolic link through ``OUT/.current``, itself a link to the
   published version. Switching is one ``rename`` of a new ``.current`` over the
   old one, so at every instant, killed or not, the output is the whole previous
   snapshot or the whole new one, never neither; then links the new snapshot
   has no entry for and the previous version are removed.
   On an object store (no links, no atomic rename), ``OUT/_staging-<token>/``:
   ``_SUCCESS`` is removed, the previous entries move to ``OUT/_previous-<token>/``,
   the new ones move in, ``_SUCCESS`` is written, the previous entries are
   deleted. A run killed within that switch leaves no ``_SUCCESS`` (incomplete,
   never a wrong snapshot) and a ``_READY`` staging directory, which the next
   corpusmill run on the output switches in before anything else (``recover``).
   A local output still in that flat layout (written by corpusmill before
   versions) is moved to the versioned layout by its next publish, in that way.

Files the snapshot did not write (a user's notes beside it) are never moved or deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
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
# The local layout: versions, and the one link that says which is published.
VERSIONS_NAME = ".versions"
CURRENT_NAME = ".current"


def checkpoint(name: str) -> None:
    """A named point of the protocol where the kill tests stop a run (``CORPUSMILL_PAUSE_AT``).

    Points: ``reading`` (a read task started), ``dedup`` (a shard's dedup
    features started), ``locked`` (lock held), ``staged`` (pipeline done), ``ready``
    (verified and marked ready), ``switching`` (locally: every entry a link,
    ``.current`` not yet switched; on object stores: old entries moved out, new
    not yet in), ``switched`` (the new snapshot published, leftovers not yet removed).
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

    Call with the output's lock held. A staging directory or version marked
    ``_READY`` is switched in (its run had verified it); every other staging
    directory, unpublished version and ``_previous`` directory is removed, and
    so are links that lead nowhere.

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
    if is_local(out):
        done += _recover_versions(out, published)
    for previous in _children(out, PREVIOUS_PREFIX):
        delete_tree(previous)
        done.append(f"removed {previous}, left by an interrupted run")
    return done


def _current_version(out: str) -> str | None:
    """The published version's directory name, from the ``.current`` link (local outputs)."""
    current = f"{out}/{CURRENT_NAME}"
    if not os.path.islink(current):
        return None
    return os.path.basename(os.readlink(current).rstrip("/"))


def _is_entry_link(path: str) -> bool:
    """Whether a top-level entry is one of the snapshot's links through ``.current``."""
    return os.path.islink(path) and os.readlink(path).split("/", 1)[0] == CURRENT_NAME


def _recover_versions(out: str, published: tuple[str, ...]) -> list[str]:
    done = []
    versions = f"{out}/{VERSIONS_NAME}"
    pointer = f"{out}/{CURRENT_NAME}"
    if os.path.isdir(pointer) and not os.path.islink(pointer):
        # A copy that followed the links (cp -rL): its entries are plain files, this a stray copy.
        shutil.rmtree(pointer)
        done.append(f"removed {pointer}, a folder where the link to the published version belongs")
    current = _current_version(out)
    for name in sorted(os.listdir(versions)) if os.path.isdir(versions) else []:
        version = f"{versions}/{name}"
        if name == current:
            if os.path.exists(f"{version}/{READY_NAME}"):
                os.unlink(f"{version}/{READY_NAME}")  # killed right after its switch
            continue
        if os.path.exists(f"{version}/{READY_NAME}"):
            _switch(out, version, published)
            done.append(f"finished publishing {version}, interrupted by an earlier run")
            current = name
        else:
            shutil.rmtree(version, ignore_errors=True)
            done.append(f"removed {version}, left by an interrupted run")
    for name in sorted(os.listdir(out)) if os.path.isdir(out) else []:
        path = f"{out}/{name}"
        if name.startswith(f"{CURRENT_NAME}-") or (_is_entry_link(path) and not os.path.exists(path)):
            os.unlink(path)
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
    token = uuid.uuid4().hex[:12]
    staging = f"{out}/{VERSIONS_NAME}/{token}" if is_local(out) else f"{out}/{STAGING_PREFIX}{token}"
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
    if is_local(out):
        # A version carries its own _SUCCESS, published with it by the one switch.
        write_bytes(f"{staging}/{manifest_lib.SUCCESS_NAME}", (ready["manifest_sha256"] + "\n").encode("ascii"))
    write_bytes(f"{staging}/{READY_NAME}", json.dumps(ready, sort_keys=True).encode("utf-8"))
    checkpoint("ready")
    _switch(out, staging, published)


def _switch(out: str, staging: str, published: tuple[str, ...]) -> None:
    """Moves a ready staging directory's entries into place; safe to repeat after a kill."""
    if staging.startswith(f"{out}/{VERSIONS_NAME}/"):
        _switch_version(out, staging, published)
        return
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


def _switch_version(out: str, version: str, published: tuple[str, ...]) -> None:
    """Publishes a ready local version by switching ``.current``; safe to repeat after a kill."""
    ready = json.loads(read_bytes(f"{version}/{READY_NAME}").decode("utf-8"))
    token = os.path.basename(version)
    names = sorted({*ready["entries"], manifest_lib.SUCCESS_NAME})
    everything = sorted({*published, *names})
    flat = [name for name in everything if os.path.lexists(f"{out}/{name}") and not _is_entry_link(f"{out}/{name}")]
    previous = f"{out}/{PREVIOUS_PREFIX}{token}"
    if flat:
        # A snapshot in the flat layout (no links): retired the object-store way, _SUCCESS
        # first; a kill from here to the switch leaves no _SUCCESS and a ready version
        # that the next run publishes (recover).
        for name in sorted(flat, key=lambda n: n != manifest_lib.SUCCESS_NAME):
            _move(f"{out}/{name}", f"{previous}/{name}")
    for name in names:
        if not os.path.lexists(f"{out}/{name}"):
            # Before the switch a new entry's link leads nowhere, which reads as absent.
            os.symlink(f"{CURRENT_NAME}/{name}", f"{out}/{name}")
    checkpoint("switching")
    pointer = f"{out}/{CURRENT_NAME}-{token}"
    if os.path.lexists(pointer):
        os.unlink(pointer)
    os.symlink(f"{VERSIONS_NAME}/{token}", pointer)
    _fsync_folder(out)
    os.replace(pointer, f"{out}/{CURRENT_NAME}")  # the switch: one atomic rename
    _fsync_folder(out)
    os.unlink(f"{version}/{READY_NAME}")
    checkpoint("switched")
    for name in everything:
        if name not in names and _is_entry_link(f"{out}/{name}"):
            os.unlink(f"{out}/{name}")
    for name in os.listdir(f"{out}/{VERSIONS_NAME}"):
        if name != token:
            shutil.rmtree(f"{out}/{VERSIONS_NAME}/{name}", ignore_errors=True)
    if os.path.exists(previous):
        shutil.rmtree(previous)


def _fsync_folder(folder: str) -> None:
    """Makes a folder's renames and new links durable before the next step relies on them."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def snapshot_problems(out: str) -> list[str]:
    """Why a snapshot directory is not complete and intact (empty when it is).

    Checks ``_SUCCESS``, that it names this manifest, every listed shard's
    size and sha256, and whether a publish was interrupted.
    """
    problems = []
    success = f"{out}/{manifest_lib.SUCCESS_NAME}"
    staged = _children(out, STAGING_PREFIX)
    if is_local(out) and os.path.isdir(f"{out}/{VERSIONS_NAME}"):
        staged += [f"{out}/{VERSIONS_NAME}/{name}" for name in sorted(os.listdir(f"{out}/{VERSIONS_NAME}"))]
    if not exists(success) and any(exists(f"{staging}/{READY_NAME}") for staging in staged):
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
    """Removes a failed run's staging directory (unless it was ready: the next run finishes it).

    A published version has no ``_READY`` (the switch removes it) and stays.
    """
    if exists(staging) and not exists(f"{staging}/{READY_NAME}") and not exists(f"{staging}/{manifest_lib.SUCCESS_NAME}"):
        delete_tree(staging)
