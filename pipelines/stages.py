"""The optional stages a job can run, in pipeline order: one registration line each.

A stage's ``name`` is its config section (``JobConfig.<name>``, with an
``enabled`` flag), its manifest section and its report section. Its module is
imported only when the stage runs: stages pull in numba, datasketch and
tokenizers, which a read-only job should not pay for.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from corpusmill.schemas.config import JobConfig


@dataclass(frozen=True)
class StageEntry:
    """One registered stage.

    Attributes:
        name: Config, manifest and report section.
        transform: ``module:Class`` of its PTransform (``corpusmill.transforms.stage``).
        folders: Top-level snapshot folders its outputs live in; a snapshot
            replaced by ``--overwrite`` loses them even when the stage is off.
    """

    name: str
    transform: str
    folders: tuple[str, ...] = ()

    def load(self) -> Any:
        """The stage's PTransform class."""
        module, _, cls = self.transform.partition(":")
        return getattr(importlib.import_module(module), cls)


STAGES = (
    StageEntry("dedup", "corpusmill.transforms.dedup.beam:Deduplicate", folders=("index",)),
    StageEntry("order", "corpusmill.transforms.order.beam:OrderDocuments",
               folders=("embeddings", "neighbors", "contexts")),
    StageEntry("decompose", "corpusmill.transforms.decompose.beam:DecomposeDocuments", folders=("buckets",)),
)


def enabled_stages(config: JobConfig) -> list[tuple[StageEntry, Any]]:
    """``(entry, section config)`` of each stage the job runs, in pipeline order."""
    return [(entry, getattr(config, entry.name)) for entry in STAGES if getattr(config, entry.name).enabled]


def stage_folders() -> tuple[str, ...]:
    """Every folder any stage may publish."""
    return tuple(folder for entry in STAGES for folder in entry.folders)
