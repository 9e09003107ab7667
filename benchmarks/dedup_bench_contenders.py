"""Dedup benchmark: the contenders, and one measured run of a contender in a fresh subprocess."""

from __future__ import annotations

import dataclasses
import glob
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import measure
import numpy as np

from dedup_bench_params import (LINUX_DOC_1X, LINUX_DOC_4X, NEAR_COPIES, SCRIPT, SDK_WORKER_COMMAND, WORKER_COMMAND,
                                WORKERS_1X, WORKERS_4X)


@dataclasses.dataclass(frozen=True)
class Contender:
    """One subprocess contender.

    Attributes:
        name: Label in the report.
        kind: "kernel", "datasketch", "datasketch-exact", "rensa" (bench workers) or "beam" (the CLI).
        verify: dedup.verify for the Beam job.
        corpora: Corpora it runs on (``dedup_bench_corpora``).
        max_runs: Cap on repeats (slow or quality-only contenders).
    """

    name: str
    kind: str
    verify: str | None = None
    corpora: tuple[str, ...] = (LINUX_DOC_1X, NEAR_COPIES)
    max_runs: int | None = None
    extra_overrides: tuple[str, ...] = ()
    beam_args: tuple[str, ...] = ()

    def command(self, corpus: Path, scratch: Path) -> list[str]:
        """The argv of one run."""
        if self.kind != "beam":
            return [sys.executable, str(SCRIPT), WORKER_COMMAND, self.kind, str(corpus),
                    str(scratch)]
        return [sys.executable, "-m", "corpusmill.jobs.cli", "run", "--input", str(corpus),
                "--output", str(scratch / "snapshot"), "--overwrite", *beam_overrides(self.verify),
                *(flag for item in self.extra_overrides for flag in ("--set", item)),
                *(("--", *self.beam_args) if self.beam_args else ())]


CONTENDERS: tuple[Contender, ...] = (
    Contender("kernel", "kernel", corpora=(LINUX_DOC_1X, LINUX_DOC_4X, NEAR_COPIES)),
    # The default job: exact verification, so the recall banding (16 x 6 at 0.8).
    Contender("beam-exact", "beam", "exact", corpora=(LINUX_DOC_1X, LINUX_DOC_4X, NEAR_COPIES)),
    # The same with datasketch's banding (9 x 13), as before issue 12.1.
    Contender("beam-exact-datasketch-bands", "beam", "exact", extra_overrides=("dedup.banding=datasketch",)),
    # Not the default config: smaller shards (more partitions inside the stage),
    # and two worker processes. Do time and peak RSS follow the partition size?
    Contender("beam-exact-16MiB-shards", "beam", "exact", corpora=(LINUX_DOC_1X,),
              extra_overrides=(f"output.target_shard_bytes={16 * 2**20}",)),
    # Peak RSS per worker: SDK worker processes of the FnApiRunner, the shuffle
    # staying in the runner process (as on Dataflow, where it is a service).
    # The runner hands each worker its share of a whole stage as one bundle, so
    # a worker's memory follows corpus / workers; scaling workers with the
    # corpus at a fixed shard size (1x on 2, 4x on 8) keeps the work per
    # worker fixed, and the peak should stay put.
    Contender(WORKERS_1X, "beam", "exact", corpora=(LINUX_DOC_1X,),
              extra_overrides=(f"output.target_shard_bytes={16 * 2**20}",),
              beam_args=("--direct_num_workers=2", "--direct_running_mode=multi_processing")),
    Contender(WORKERS_4X, "beam", "exact", corpora=(LINUX_DOC_4X,),
              extra_overrides=(f"output.target_shard_bytes={16 * 2**20}",),
              beam_args=("--direct_num_workers=8", "--direct_running_mode=multi_processing")),
    # Without exact verification the default banding is datasketch's (dedup.banding: auto).
    Contender("beam-none", "beam", "none"),
    Contender("beam-signature", "beam", "signature", max_runs=1),
    Contender("datasketch", "datasketch"),
    # datasketch's candidates checked by exact Jaccard of the shingle sets (issue 12.1's comparison).
    Contender("datasketch-exact", "datasketch-exact"),
    Contender("rensa", "rensa"),
)


def beam_overrides(verify: str) -> list[str]:
    """--set flags of the Beam runs: dedup on with the given verification, other stages off."""
    from corpusmill.schemas.config import JobConfig

    flags = ["--set", "dedup.enabled=true", "--set", f"dedup.verify={verify}"]
    # Stages after dedup (tokenisation / decomposition) are not part of this
    # measurement; switch off any the config knows.
    for field in dataclasses.fields(JobConfig):
        if field.name not in ("name", "input", "dedup", "output") and dataclasses.is_dataclass(field.default):
            if any(f.name == "enabled" for f in dataclasses.fields(field.default)):
                flags += ["--set", f"{field.name}.enabled=false"]
    return flags


# --------------------------------------------------------------------------- measurement


def measured_run(argv: list[str], scratch: Path) -> dict[str, Any]:
    """Runs argv in a fresh process; wall seconds, peak RSS (MiB), sampled tree RSS and stdout.

    Runs that start Beam SDK worker processes also report each worker's peak
    RSS (``worker_peaks_mb``, largest first) and the job process's own peak
    (``runner_peak_rss_mb``).
    """
    processes: dict[int, tuple[int, str]] = {}
    wall, peak_mb, tree_mb, stdout = measure.measured_run(argv, scratch, processes)
    result = {"wall_seconds": wall, "peak_rss_mb": peak_mb, "tree_rss_mb": tree_mb, "stdout": stdout}
    workers = sorted((kib / 1024 for kib, command in processes.values() if SDK_WORKER_COMMAND in command
                      and not command.startswith("/bin/sh")), reverse=True)
    if workers:
        job = [kib / 1024 for kib, command in processes.values() if "corpusmill.jobs.cli" in command]
        result.update({"worker_peaks_mb": [round(w, 1) for w in workers],
                       "runner_peak_rss_mb": round(max(job), 1) if job else None})
    return result


def run_contender(contender: Contender, corpus: Path, ids: np.ndarray) -> dict[str, Any]:
    """One run of a contender; returns measurements and its cluster labels (index per document)."""
    with tempfile.TemporaryDirectory(prefix="dedup_bench_") as tmp:
        scratch = Path(tmp)
        measured = measured_run(contender.command(corpus, scratch), scratch)
        stdout = measured.pop("stdout")
        if contender.kind == "beam":
            manifest = json.loads((scratch / "snapshot" / "manifest.json").read_text())
            labels, digest = beam_labels(scratch / "snapshot", ids)
            dedup = manifest["dedup"]
            measured.update({
                "inner_seconds": manifest["timings"]["wall_seconds"],
                "stage_ms": manifest["timings"].get("stage_ms", {}),
                "manifest_dedup": {k: dedup.get(k) for k in ("documents", "duplicates_by_kind", "clusters",
                                                             "candidates", "verification", "lsh", "components")},
                "duplicates_digest": digest,
                "partitioning": manifest.get("execution", {}).get("partitioning"),
            })
        else:
            result = json.loads(stdout.strip().splitlines()[-1])
            measured.update(result)
            path = scratch / "labels.npy"
            labels = np.load(path) if path.exists() else None
    return {**measured, "labels": labels}


def beam_labels(snapshot: Path, ids: np.ndarray) -> tuple[np.ndarray, str]:
    """Cluster label per corpus document from duplicates/ (singletons get their own index)."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = sorted(glob.glob(str(snapshot / "duplicates" / "*.parquet")))
    table = pa.concat_tables([pq.read_table(p, columns=["id", "cluster_id", "representative_id"])
                              for p in paths])
    index = {doc_id: i for i, doc_id in enumerate(ids.tolist())}
    labels = np.arange(ids.size, dtype=np.int64)
    rows = sorted(zip(*(table.column(c).to_pylist() for c in ("id", "cluster_id", "representative_id"))))
    for doc_id, cluster_id, representative_id in rows:
        labels[index[doc_id]] = index[cluster_id]
        labels[index[representative_id]] = index[cluster_id]
    return labels, hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]
