"""The stage contract: what every optional stage of a job is and returns (Beam-free).

A stage is a composite PTransform over the kept documents. It is built from its
config section and a ``StageContext``, and its ``expand`` takes
``(shard: int, pyarrow.Table)`` elements, one per shard, rows in the order the
stage must keep (id order; position order once documents are ordered), and
returns a ``StageResult``:

* ``docs``: the kept documents after the stage, in the same form (the same
  PCollection when the stage drops and reorders nothing);
* ``duplicates``: ``pyarrow.RecordBatch`` rows of ``DUPLICATE_SCHEMA`` for the
  documents the stage removed, or None; the job writes every stage's
  duplicates into the one ``duplicates/`` output;
* ``shards``: one record per file the stage wrote through
  ``corpusmill.transforms.io.beam.shards.WriteShards`` (its own outputs,
  declared by ``output_specs`` so that the job can fill in empty shards), or
  None when it writes nothing of its own;
* ``stats``: exactly one dict, the stage's section of the manifest (under the
  stage's name) and of the report.

A stage that changes the documents' columns or order (the order stage adds
``position`` and hands documents on in that order) declares the ``docs/``
output it implies as a class attribute ``docs_spec``; the last such stage's
spec is the one the job writes.

Before any pipeline is built, the job calls each enabled stage's ``check(config)``,
which raises ``ConfigError`` naming the key when a value cannot work here (a
tokenizer file that does not exist): what the config's form cannot tell.

The job registers stages in ``corpusmill.pipelines.stages`` (one line each) and
loops over the enabled ones in that order; nothing else names a stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Protocol

from corpusmill.transforms.io.shard_files import OutputSpec, ParquetOptions


@dataclass(frozen=True)
class StageContext:
    """What the job tells every stage.

    Attributes:
        num_shards: Shards of the kept documents and of every output.
        single_partition: The input is small enough for one worker; a stage
            may then take its single-partition shortcut (and say so in its stats).
        staging_dir: Where outputs are written under their final relative names.
        parquet: The job's Parquet encoding.
        previous_index: A refresh's previous snapshot: its ``index/`` files,
            which the dedup stage joins the new documents against (empty for a run).
    """

    num_shards: int
    single_partition: bool
    staging_dir: str
    parquet: ParquetOptions
    previous_index: tuple[str, ...] = ()


class StageResult(NamedTuple):
    """The PCollections a stage returns (see the module docstring)."""

    docs: Any
    duplicates: Any
    shards: Any
    stats: Any


class Stage(Protocol):
    """A stage: a PTransform class with a name and declared outputs."""

    name: ClassVar[str]

    def __init__(self, config: Any, context: StageContext) -> None: ...

    @staticmethod
    def output_specs(config: Any, context: StageContext) -> list[OutputSpec]:
        """The outputs the stage writes itself (none for a stage that only filters)."""
        ...

    @staticmethod
    def check(config: Any) -> None:
        """Raises ``ConfigError`` when the section cannot run here; called before the pipeline."""
        ...
