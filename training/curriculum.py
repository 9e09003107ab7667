"""Variable-sequence-length curriculum reader over Dataset Decomposition buckets.

Training on decomposed data (Pouransari et al., 2024) keeps the number of
tokens per optimisation step constant: a step drawn from bucket k holds
``tokens_per_step / 2^k`` sequences of ``2^k`` training positions. Which bucket
each step uses follows curriculum *odds*, one weight per bucket, shortest
first:

* ``uniform``      1:1:1:1:1:1
* ``grow_linear``  6:5:4:3:2:1
* ``grow_p2``      32:16:8:4:2:1
* or an explicit list.

(Presets generalise to any number of buckets: n:…:1 and 2^(n-1):…:1.)

The data is split into ``num_cycles`` cycles, each holding an equal share
of every bucket's batches. Within a cycle the batches are ordered by weighted
sampling without replacement: each next step picks one of the cycle's
remaining batches with probability proportional to its bucket's odds. Every
batch is used exactly once, so the odds shape only the order: large odds for
short buckets put short sequences early in each cycle (a length curriculum
that restarts every cycle), and "uniform" gives a plain shuffle.

The schedule depends only on the bucket sizes, the configuration and the
seed, so every data-parallel rank computes the same one: at each step all
ranks use the same bucket, and rank r of w takes the r-th of w equal slices of
the step's global batch. The reader uses numpy and pyarrow only.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

CURRICULUM_PRESETS = ("uniform", "grow_linear", "grow_p2")

_BUCKET_DIR = re.compile(r"^len-(\d+)$")

# Tags that keep the random streams of different purposes independent.
_ROW_ORDER_STREAM = 0
_STEP_ORDER_STREAM = 1


def curriculum_odds(odds: str | Sequence[float], num_buckets: int) -> np.ndarray:
    """Resolves curriculum odds to one positive weight per bucket, shortest first.

    Args:
        odds: A preset name (see :data:`CURRICULUM_PRESETS`) or explicit weights.
        num_buckets: Number of buckets.

    Returns:
        float64 array of ``num_buckets`` weights.

    Raises:
        ValueError: On an unknown preset, a wrong count or a non-positive weight.
    """
    if isinstance(odds, str):
        if odds == "uniform":
            return np.ones(num_buckets)
        if odds == "grow_linear":
            return np.arange(num_buckets, 0, -1, dtype=np.float64)
        if odds == "grow_p2":
            return np.exp2(np.arange(num_buckets - 1, -1, -1, dtype=np.float64))
        raise ValueError(
            f"curriculum.odds={odds!r} must be one of {list(CURRICULUM_PRESETS)} or a list of "
            "positive numbers, one per bucket"
        )
    weights = np.asarray(odds, dtype=np.float64)
    if weights.shape != (num_buckets,) or not np.all(np.isfinite(weights)) or np.any(weights <= 0):
        raise ValueError(
            f"curriculum.odds={list(odds)} must hold {num_buckets} positive numbers, "
            "one per bucket, shortest bucket first"
        )
    return weights


@dataclasses.dataclass(frozen=True)
class CurriculumConfig:
    """Parameters of the curriculum.

    Attributes:
        tokens_per_step: Training positions per global step, summed over
            ranks; must be a multiple of the longest sequence length times the
            world size.
        odds: Preset name or one weight per bucket, shortest bucket first.
        num_cycles: Number of times the curriculum restarts over the data.
        seed: Seed of the row shuffle and of the step order.
    """

    tokens_per_step: int
    odds: str | tuple[float, ...] = "grow_p2"
    num_cycles: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.tokens_per_step <= 0:
            raise ValueError(f"curriculum.tokens_per_step={self.tokens_per_step} must be positive")
        if self.num_cycles <= 0:
            raise ValueError(f"curriculum.num_cycles={self.num_cycles} must be positive")
        if isinstance(self.odds, str):
            curriculum_odds(self.odds, 1)
        else:
            object.__setattr__(self, "odds", tuple(float(w) for w in self.odds))


@dataclasses.dataclass
class CurriculumBatch:
    """One rank's share of one global step.

    Attributes:
        step: Global step index, from 0.
        cycle: Cycle the step belongs to.
        exponent: Bucket exponent k; sequences have ``2^k`` training positions.
        tokens: int32 array ``(sequences, piece_length)``; piece_length is
            ``2^k + 1`` for buckets written with ``plus_one``.
        doc_ids: Source document of each sequence.
        offsets: Position of each sequence in its document's tokens.
        rows: Row of each sequence in its bucket (for tests and debugging).
    """

    step: int
    cycle: int
    exponent: int
    tokens: np.ndarray
    doc_ids: np.ndarray
    offsets: np.ndarray
    rows: np.ndarray

    @property
    def sequence_length(self) -> int:
        """Training positions per sequence, ``2^k``."""
        return 1 << self.exponent


class _Bucket:
    """The sequences of one bucket, loaded on first use."""

    def __init__(self, exponent: int, num_rows: int, loader) -> None:
        self.exponent = exponent
        self.num_rows = num_rows
        self._loader = loader
        self._arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._arrays is None:
            self._arrays = self._loader()
        return self._arrays


def _table_to_arrays(table: pa.Table, exponent: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turns bucket rows into (tokens 2-D, doc_ids, offsets) without per-row work."""
    tokens = table.column("tokens").combine_chunks()
    if len(tokens) == 0:
        matrix = np.zeros((0, 1 << exponent), dtype=np.int32)
    else:
        lengths = pc.list_value_length(tokens).to_numpy(zero_copy_only=False)
        width = int(lengths[0])
        if width not in ((1 << exponent), (1 << exponent) + 1) or np.any(lengths != width):
            raise ValueError(
                f"bucket {exponent} rows must all hold {1 << exponent} or {(1 << exponent) + 1} "
                f"tokens; found lengths {sorted(set(lengths.tolist()))[:5]}"
            )
        # flatten() honours slicing, unlike .values.
        matrix = tokens.flatten().to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
        matrix = matrix.reshape(len(tokens), width)
    doc_ids = np.asarray(table.column("doc_id").to_pylist(), dtype=object)
    offsets = table.column("offset").to_numpy().astype(np.int64, copy=False)
    return matrix, doc_ids, offsets


class CurriculumReader:
    """Yields constant-token batches from DD buckets in curriculum order.

    Build it with :meth:`from_parquet` or :meth:`from_arrays`; iterate it (or
    call :meth:`batches`) for this rank's batches, one per global step.

    Args:
        buckets: Exponent to bucket source (internal; use the constructors).
        config: Curriculum parameters.
        rank: This data-parallel rank.
        world_size: Number of data-parallel ranks.

    Raises:
        ValueError: If the token budget does not split evenly into sequences
            and ranks, or the odds do not fit the buckets.
    """

    def __init__(
        self,
        buckets: Mapping[int, _Bucket],
        config: CurriculumConfig,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not buckets:
            raise ValueError("curriculum needs at least one bucket")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
        self.config = config
        self.rank = rank
        self.world_size = world_size
        self.exponents = sorted(buckets)
        self._buckets = {k: buckets[k] for k in self.exponents}
        longest = 1 << self.exponents[-1]
        if config.tokens_per_step % (longest * world_size):
            raise ValueError(
                f"curriculum.tokens_per_step={config.tokens_per_step} must be a multiple of the "
                f"longest sequence length {longest} times world_size {world_size}, so every "
                "bucket's batch splits evenly into whole sequences per rank"
            )
        self.odds = curriculum_odds(config.odds, len(self.exponents))
        self.sequences_per_step = {k: config.tokens_per_step >> k for k in self.exponents}
        self.batches_per_bucket = {
            k: self._buckets[k].num_rows // self.sequences_per_step[k] for k in self.exponents
        }
        self._build_schedule()

    # -- construction -------------------------------------------------------

    @classmethod
    def from_arrays(
        cls,
        buckets: Mapping[int, object],
        config: CurriculumConfig,
        rank: int = 0,
        world_size: int = 1,
    ) -> "CurriculumReader":
        """Builds a reader over in-memory buckets.

        Args:
            buckets: Exponent k to either a 2-D token array ``(rows, 2^k[+1])``
                or an object with ``tokens``, ``doc_ids`` and ``offsets``
                (such as :class:`corpusmill.transforms.decompose.decomposition.BucketPieces`).
            config: Curriculum parameters.
            rank: This data-parallel rank.
            world_size: Number of data-parallel ranks.

        Returns:
            The reader.
        """
        sources = {}
        for exponent, bucket in buckets.items():
            if isinstance(bucket, np.ndarray):
                tokens = bucket
                doc_ids = np.full(len(tokens), None, dtype=object)
                offsets = np.full(len(tokens), -1, dtype=np.int64)
            else:
                tokens = np.asarray(bucket.tokens)
                doc_ids = np.asarray(bucket.doc_ids, dtype=object)
                offsets = np.asarray(bucket.offsets, dtype=np.int64)
            if tokens.ndim != 2 or tokens.shape[1] not in ((1 << exponent), (1 << exponent) + 1):
                raise ValueError(
                    f"bucket {exponent} tokens must have shape (rows, {1 << exponent}) or "
                    f"(rows, {(1 << exponent) + 1}); got {tokens.shape}"
                )
            arrays = (tokens, doc_ids, offsets)
            sources[int(exponent)] = _Bucket(int(exponent), len(tokens), lambda a=arrays: a)
        return cls(sources, config, rank, world_size)

    @classmethod
    def from_parquet(
        cls,
        root: str | Path,
        config: CurriculumConfig,
        rank: int = 0,
        world_size: int = 1,
    ) -> "CurriculumReader":
        """Builds a reader over a snapshot's bucket folders.

        Args:
            root: A folder holding ``len-00256/``, ``len-00512/``, … (a
                snapshot's ``buckets/``), or a snapshot holding ``buckets/``.
                Each has Parquet files with columns ``tokens list<int32>``,
                ``doc_id``, ``offset``; files are read in name order.
            config: Curriculum parameters.
            rank: This data-parallel rank.
            world_size: Number of data-parallel ranks.

        Returns:
            The reader. Row counts come from Parquet footers; a bucket's rows
            are read into memory the first time a step needs them.

        Raises:
            FileNotFoundError: If no bucket folder is found.
        """
        root = Path(root)
        if (root / "buckets").is_dir():
            root = root / "buckets"
        sources = {}
        for folder in sorted(root.iterdir()) if root.is_dir() else []:
            match = _BUCKET_DIR.match(folder.name)
            if not match or not folder.is_dir():
                continue
            length = int(match.group(1))
            if length & (length - 1) or length == 0:
                raise ValueError(f"bucket folder {folder} is not named after a power of two")
            exponent = length.bit_length() - 1
            files = sorted(folder.glob("*.parquet"))
            num_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)

            def load(files=files, exponent=exponent):
                columns = ["tokens", "doc_id", "offset"]
                tables = [pq.read_table(f, columns=columns) for f in files]
                return _table_to_arrays(pa.concat_tables(tables), exponent)

            sources[exponent] = _Bucket(exponent, num_rows, load)
        if not sources:
            raise FileNotFoundError(f"no bucket folders (len-NNNNN) under {root}")
        return cls(sources, config, rank, world_size)

    # -- schedule -----------------------------------------------------------

    def _rng(self, stream: int, index: int) -> np.random.Generator:
        return np.random.Generator(
            np.random.PCG64(np.random.SeedSequence([self.config.seed, stream, index]))
        )

    def _build_schedule(self) -> None:
        num_cycles = self.config.num_cycles
        step_exponents, step_batches, step_cycles = [], [], []
        used = {k: 0 for k in self.exponents}
        for cycle in range(num_cycles):
            labels = []
            for index, k in enumerate(self.exponents):
                total = self.batches_per_bucket[k]
                # Spread the batches evenly: cycle c gets floor((c+1)b/N) - floor(cb/N).
                count = total * (cycle + 1) // num_cycles - total * cycle // num_cycles
                labels.append(np.full(count, index, dtype=np.int64))
            labels = np.concatenate(labels)
            # Efraimidis–Spirakis: sorting by u^(1/w) (here log(u)/w) descending
            # is sequential weighted sampling without replacement, vectorised.
            uniforms = self._rng(_STEP_ORDER_STREAM, cycle).random(len(labels))
            keys = np.log(uniforms) / self.odds[labels]
            order = labels[np.argsort(-keys, kind="stable")]
            for index in order.tolist():
                k = self.exponents[index]
                step_exponents.append(k)
                step_batches.append(used[k])
                step_cycles.append(cycle)
                used[k] += 1
        self.step_exponents = np.asarray(step_exponents, dtype=np.int64)
        self._step_batches = np.asarray(step_batches, dtype=np.int64)
        self._step_cycles = np.asarray(step_cycles, dtype=np.int64)
        self._row_orders: dict[int, np.ndarray] = {}

    def _row_order(self, exponent: int) -> np.ndarray:
        if exponent not in self._row_orders:
            rows = self._buckets[exponent].num_rows
            self._row_orders[exponent] = self._rng(_ROW_ORDER_STREAM, exponent).permutation(rows)
        return self._row_orders[exponent]

    def __len__(self) -> int:
        return len(self.step_exponents)

    def step_rows(self, step: int) -> np.ndarray:
        """Bucket rows of this rank's share of a global step."""
        k = int(self.step_exponents[step])
        global_size = self.sequences_per_step[k]
        local_size = global_size // self.world_size
        first = int(self._step_batches[step]) * global_size + self.rank * local_size
        return self._row_order(k)[first : first + local_size]

    def batches(self, start_step: int = 0) -> Iterator[CurriculumBatch]:
        """Yields this rank's batches from ``start_step`` on (for resuming).

        Args:
            start_step: First global step to yield.

        Yields:
            One :class:`CurriculumBatch` per global step.
        """
        for step in range(start_step, len(self)):
            k = int(self.step_exponents[step])
            rows = self.step_rows(step)
            tokens, doc_ids, offsets = self._buckets[k].arrays()
            yield CurriculumBatch(
                step=step,
                cycle=int(self._step_cycles[step]),
                exponent=k,
                tokens=tokens[rows],
                doc_ids=doc_ids[rows],
                offsets=offsets[rows],
                rows=rows,
            )

    def __iter__(self) -> Iterator[CurriculumBatch]:
        return self.batches()

    def spec(self) -> dict:
        """The curriculum as a JSON-ready dict, for a manifest.

        Rank-independent: every rank of a run reports the same dict.
        """
        odds = self.config.odds if isinstance(self.config.odds, str) else list(self.config.odds)
        buckets = []
        for k in self.exponents:
            per_step = self.sequences_per_step[k]
            batches = self.batches_per_bucket[k]
            buckets.append(
                {
                    "exponent": k,
                    "sequence_length": 1 << k,
                    "sequences": self._buckets[k].num_rows,
                    "sequences_per_step": per_step,
                    "steps": batches,
                    "unused_sequences": self._buckets[k].num_rows - batches * per_step,
                }
            )
        return {
            "kind": "dataset_decomposition_curriculum",
            "odds": odds,
            "odds_weights": self.odds.tolist(),
            "tokens_per_step": self.config.tokens_per_step,
            "num_cycles": self.config.num_cycles,
            "seed": self.config.seed,
            "world_size": self.world_size,
            "steps": len(self),
            "buckets": buckets,
        }
