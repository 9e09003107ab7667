"""Reusing a published snapshot's ``embeddings/`` so that ordering can rerun without re-embedding.

``order.embed.reuse: SNAPSHOT`` names a complete corpusmill snapshot made by
the same embedding model. A document whose id and text hash match a stored
row takes the stored vector; any other document is embedded as usual, and the
stats count both. The snapshot is checked before the pipeline starts: it must
be complete (``_SUCCESS`` naming its manifest), its embeddings shards intact,
and its ``order.embed`` model and token limit equal to this job's.
"""

from __future__ import annotations

import hashlib
import io
import json

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq

from corpusmill.schemas import manifest as manifest_lib
from corpusmill.schemas.config import ConfigError, EmbedSectionConfig
from corpusmill.transforms.common import document_keys, shard_of_keys, split_by
from corpusmill.transforms.io.beam.files import exists, read_bytes
from corpusmill.transforms.io.beam.snapshot import shard_problems

KEY = "order.embed.reuse"


def reuse_plan(config: EmbedSectionConfig) -> dict | None:
    """The stored embeddings' files and where they came from; None when nothing is reused.

    Raises:
        ConfigError: Naming ``order.embed.reuse`` when the snapshot is missing,
            incomplete, damaged, has no embeddings, or was embedded otherwise.
    """
    root = config.reuse.rstrip("/")
    if not root:
        return None
    manifest_path, success = f"{root}/{manifest_lib.MANIFEST_NAME}", f"{root}/{manifest_lib.SUCCESS_NAME}"
    if not exists(manifest_path):
        raise ConfigError(KEY, f"{root!r} holds no corpusmill manifest")
    raw = read_bytes(manifest_path)
    if not exists(success) or read_bytes(success).decode("ascii", "replace").strip() != hashlib.sha256(raw).hexdigest():
        raise ConfigError(KEY, f"{root!r} is not a complete snapshot ({manifest_lib.SUCCESS_NAME} missing or stale)")
    manifest = json.loads(raw)
    shards = (manifest.get("outputs", {}).get("embeddings") or {}).get("shards")
    if not shards:
        raise ConfigError(KEY, f"{root!r} has no embeddings/ (its job ran without the order stage)")
    stored = (manifest.get("config", {}).get("order") or {}).get("embed") or {}
    for field in ("model", "max_tokens"):
        if field == "max_tokens" and not config.model.startswith("st:"):
            continue
        if stored.get(field) != getattr(config, field):
            raise ConfigError(KEY, f"{root!r} was embedded with order.embed.{field} = {stored.get(field)!r}, "
                              f"this job uses {getattr(config, field)!r}")
    problems = shard_problems(root, shards)
    if problems:
        raise ConfigError(KEY, f"{root!r} embeddings are damaged: {problems[0]}")
    return {"snapshot": root, "files": [f"{root}/{s['path']}" for s in shards],
            "manifest_sha256": hashlib.sha256(raw).hexdigest(),
            "embedder": (manifest.get("order") or {}).get("embedder")}


def read_stored(path: str, num_shards: int):
    """One embeddings file -> ``(shard, (keys, text hashes, vectors))`` per shard of this job."""
    table = pq.read_table(io.BytesIO(read_bytes(path)))
    if table.num_rows == 0:
        return
    keys = document_keys(table.column("id"))
    hashes = table.column("text_hash").to_numpy()
    vectors = table.column("vector").combine_chunks()
    dim = vectors.value_lengths()[0].as_py()
    flat = vectors.flatten().to_numpy().astype(np.float32).reshape(-1, dim)
    for shard, (k, h, v) in split_by(shard_of_keys(keys, num_shards), keys, hashes, flat):
        yield shard, (k, h, v)


class StoredEmbeddings(beam.PTransform):
    """The reused snapshot's vectors keyed by this job's shards (nothing when ``plan`` is None)."""

    def __init__(self, plan: dict | None, num_shards: int):
        super().__init__()
        self._plan = plan
        self._num_shards = num_shards

    def expand(self, pbegin):
        files = self._plan["files"] if self._plan else []
        return (pbegin | "StoredEmbeddingFiles" >> beam.Create(files)
                | "ReadStoredEmbeddings" >> beam.FlatMap(read_stored, self._num_shards))


def take_stored(keys: np.ndarray, text_hashes: np.ndarray, stored: list, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose key and text hash match a stored row, and their vectors.

    Returns:
        ``(found mask, vectors of the found rows)``.
    """
    if not stored:
        return np.zeros(keys.size, dtype=bool), np.zeros((0, dim), np.float32)
    known = np.concatenate([s[0] for s in stored])
    hashes = np.concatenate([s[1] for s in stored])
    vectors = np.concatenate([s[2] for s in stored])
    if vectors.shape[1] != dim:
        raise ValueError(f"stored embeddings have {vectors.shape[1]} dimensions, the embedder {dim}")
    sorter = np.argsort(known, kind="stable")
    at = sorter[np.minimum(np.searchsorted(known, keys, sorter=sorter), known.size - 1)]
    found = (known[at] == keys) & (hashes[at] == text_hashes)
    return found, vectors[at[found]]
