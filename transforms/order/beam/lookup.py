"""LookupByKey: values of documents named by key, fetched from the shards that own them.

A shard knows its own documents; a kNN list names documents of every shard.
One CoGroupByKey answers all of a shard's questions at once: each shard sends
the keys it wants to each owning shard, the owner answers with their values,
and the answers go back to the asking shard. No worker holds more than one
shard's values and the keys asked of it.
"""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
import numpy as np

from corpusmill.transforms.common import shard_of_keys, split_by


class Owned(NamedTuple):
    """One shard's documents: int64 keys (distinct) and their values (aligned, any dtype)."""

    keys: np.ndarray
    values: np.ndarray


def _route(element, num_shards: int):
    requester, keys = element
    keys = np.unique(np.asarray(keys, dtype=np.int64))
    keys = keys[keys != -1]
    for owner, (wanted,) in split_by(shard_of_keys(keys, num_shards), keys):
        yield owner, (requester, wanted)


def _answer(element):
    owner, grouped = element
    owned = list(grouped["owned"])
    if not grouped["requests"]:
        return
    keys = np.concatenate([o.keys for o in owned]) if owned else np.empty(0, np.int64)
    values = np.concatenate([o.values for o in owned]) if owned else np.empty(0)
    sorter = np.argsort(keys, kind="stable")
    for requester, wanted in grouped["requests"]:
        at = np.minimum(np.searchsorted(keys, wanted, sorter=sorter), max(keys.size - 1, 0))
        if keys.size == 0 or np.any(keys[sorter[at]] != wanted):
            missing = wanted if keys.size == 0 else wanted[keys[sorter[at]] != wanted]
            raise LookupError(f"shard {owner} holds no document with key {int(missing[0])}")
        yield requester, Owned(wanted, values[sorter[at]])


def lookup(answers: list[Owned], keys: np.ndarray, missing=None) -> np.ndarray:
    """The values of ``keys`` (any shape) among a shard's answers; ``missing`` where a key is -1.

    Raises:
        LookupError: For a key other than -1 that no answer holds.
    """
    keys = np.asarray(keys, dtype=np.int64)
    present = keys != -1
    if not answers:
        if present.any():
            raise LookupError("no answers for the keys asked")
        return np.full(keys.shape, missing)
    known = np.concatenate([a.keys for a in answers])
    values = np.concatenate([a.values for a in answers])
    sorter = np.argsort(known, kind="stable")
    at = np.minimum(np.searchsorted(known, keys, sorter=sorter), known.size - 1)
    found = known[sorter[at]] == keys
    if np.any(~found & present):
        raise LookupError(f"no answer for key {int(keys[~found & present][0])}")
    out = values[sorter[at]]
    if not found.all():
        out[~found] = missing
    return out


class LookupByKey(beam.PTransform):
    """``(owned, wanted)`` -> ``(requester shard, Owned)`` answers, several per requester.

    Input: a pair of PCollections: ``owned`` of ``(shard, Owned)`` (each
    document in the shard its key hashes to) and ``wanted`` of
    ``(requester, int64 keys)`` (-1 entries ignored). Output: for each
    requester, the answers of every owner it asked (pass them to ``lookup``).
    A key that no shard owns fails the step.
    """

    def __init__(self, num_shards: int):
        super().__init__()
        self._num_shards = num_shards

    def expand(self, pcolls):
        owned, wanted = pcolls
        requests = wanted | "RouteKeys" >> beam.FlatMap(_route, self._num_shards)
        return ({"owned": owned, "requests": requests}
                | "MeetOwners" >> beam.CoGroupByKey()
                | "Answer" >> beam.FlatMap(_answer))
