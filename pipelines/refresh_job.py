"""The refresh job: a new snapshot of only what is new against a published one.

``corpusmill refresh --previous SNAPSHOT --input NEW ... --output DIR`` is the
``run`` job with one more input: the previous snapshot's ``index/``
(``corpusmill.transforms.dedup.index``), which the dedup stage joins the new
documents against inside the pipeline, shard by shard. New documents that
duplicate a published one are removed with the published document as their
representative; the rest are deduplicated against each other as in ``run``.
The new snapshot holds the newly kept documents and their stage outputs, an
index covering the previous snapshot's documents and its own, and a manifest
naming its previous snapshot (path and manifest digest) and the lineage: every
snapshot of the chain, oldest first, with its ``docs/`` shards.

Everything that can make a refresh wrong is checked before the pipeline is
built: the previous snapshot must be complete and intact (``_SUCCESS``, every
shard's size and sha256), made with dedup settings whose signatures and hashes
this run can compare (``index.COMPATIBLE_KEYS``), and not the output itself.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Callable

from corpusmill.schemas import manifest as manifest_lib
from corpusmill.schemas.config import JobConfig, to_dict
from corpusmill.transforms.dedup import index as index_lib
from corpusmill.transforms.io.beam import snapshot
from corpusmill.transforms.io.beam.files import exists, read_bytes
from corpusmill.transforms.io.beam.lock import is_local
from corpusmill.transforms.io.output_paths import normalized


class PreviousSnapshotError(ValueError):
    """The previous snapshot of a refresh cannot be used; the message says why."""


@dataclass(frozen=True)
class Previous:
    """A checked previous snapshot.

    Attributes:
        path: Where it was named (locally the real path, links resolved, so a
            scheduler's moving ``latest`` link is recorded as the snapshot it named).
        root: The folder its files were read from: locally the published
            version behind its links, so a run publishing over it meanwhile
            changes nothing this refresh reads.
        manifest: Its manifest.
        manifest_sha256: The digest ``_SUCCESS`` names.
        index_files: Its ``index/`` shards, under ``root``.
    """

    path: str
    root: str
    manifest: dict
    manifest_sha256: str
    index_files: tuple[str, ...]

    def lineage(self) -> list[dict[str, Any]]:
        """Every snapshot of the chain up to and including this one, oldest first."""
        own = {
            "path": self.path,
            "manifest_sha256": self.manifest_sha256,
            "created_at": self.manifest.get("created_at"),
            "documents": self.manifest["counts"]["kept"],
            "docs": [shard["path"] for shard in self.manifest["outputs"]["docs"]["shards"]],
        }
        return [*self.manifest.get("lineage", []), own]

    def section(self) -> dict[str, Any]:
        """The new manifest's ``previous`` section."""
        return {"path": self.path, "manifest_sha256": self.manifest_sha256,
                "created_at": self.manifest.get("created_at"), "documents": self.manifest["counts"]["kept"],
                "index_documents": self.manifest["outputs"]["index"]["rows"]}


def _published_root(path: str) -> str:
    current = os.path.join(path, snapshot.CURRENT_NAME)
    if os.path.islink(current):
        return os.path.realpath(current)
    return path


def check_previous(previous: str, config: JobConfig) -> Previous:
    """Checks a refresh's previous snapshot before anything runs.

    Raises:
        PreviousSnapshotError: It is missing, incomplete or damaged, has no
            index, was made with incompatible dedup settings, or is the output.
    """
    path = previous.rstrip("/") or previous
    if not path:
        raise PreviousSnapshotError("--previous is empty")
    if is_local(path) and os.path.exists(path):
        # Recorded as the folder it is now: a scheduler's `latest` link moves on, the lineage must not.
        path = os.path.realpath(path)
    output = config.output.path
    same = normalized(path) == normalized(output)
    if is_local(path) and is_local(output):
        same = same or os.path.realpath(path) == os.path.realpath(output)
    if same:
        raise PreviousSnapshotError(
            f"--previous and --output are both {path}: a refresh writes a new snapshot beside the one it "
            "extends (for example out/2026-12-05 after out/2026-12-01)")
    if not exists(f"{path}/{manifest_lib.MANIFEST_NAME}"):
        raise PreviousSnapshotError(f"the previous snapshot {path} does not exist or has no "
                                    f"{manifest_lib.MANIFEST_NAME}")
    # Locally the published version behind the links is checked and read: a run publishing over
    # the previous snapshot meanwhile switches the links, not the files this refresh reads.
    root = _published_root(path) if is_local(path) and os.path.isdir(path) else path
    problems = snapshot.snapshot_problems(path)
    if not problems and root != path:
        problems = snapshot.snapshot_problems(root)
    if problems:
        raise PreviousSnapshotError(f"the previous snapshot {path} is not complete and intact: "
                                    + "; ".join(problems[:5]))
    raw = read_bytes(f"{root}/{manifest_lib.MANIFEST_NAME}")
    manifest = json.loads(raw)
    digest = hashlib.sha256(raw).hexdigest()
    dedup = to_dict(config)["dedup"]
    if not dedup.get("enabled", True) or not (dedup.get("exact") or dedup.get("near")):
        raise PreviousSnapshotError("a refresh deduplicates against the previous snapshot: dedup.enabled must "
                                    "be true with dedup.exact or dedup.near on")
    differences = index_lib.check_compatible((manifest.get("config") or {}).get("dedup"), dedup)
    if differences:
        raise PreviousSnapshotError(f"the previous snapshot {path} was made with other dedup settings, so its "
                                    "index cannot be compared with this run's: " + "; ".join(differences))
    index = (manifest.get("outputs") or {}).get("index")
    if not index:
        raise PreviousSnapshotError(f"the previous snapshot {path} has no index/ (made by a corpusmill "
                                    "without refresh support, or with dedup off); rerun it with `corpusmill run`")
    files = tuple(f"{root}/{shard['path']}" for shard in index["shards"])
    return Previous(path, root, manifest, digest, files)


def run_refresh(config: JobConfig, previous: str, beam_args: list[str] = (),
                render_report: Callable[[dict[str, Any]], str] | None = None) -> dict[str, Any] | None:
    """Checks the previous snapshot, then runs the job against its index and publishes the new snapshot.

    Returns:
        The new manifest (None for a ``--dry_run``).
    """
    from corpusmill.pipelines.corpus_job import run_job

    checked = check_previous(previous, config)
    return run_job(config, beam_args, render_report, previous=checked)
