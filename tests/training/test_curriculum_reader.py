"""Tests of corpusmill.training.curriculum: budgets, determinism, ranks, sampling."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from corpusmill.training.curriculum import (
    CurriculumConfig,
    CurriculumReader,
    curriculum_odds,
)
from corpusmill.schemas.config import DecomposeConfig
from corpusmill.transforms.decompose.decomposition import (
    bucket_dirname,
    decompose_documents,
)
from hypothesis import given, settings
from hypothesis import strategies as st


def labelled_buckets(rows_per_bucket: dict[int, int]) -> dict[int, np.ndarray]:
    """Buckets whose every token is ``exponent * 1_000_000 + row``, so a row identifies itself."""
    return {
        k: np.repeat(
            (k * 1_000_000 + np.arange(rows, dtype=np.int32))[:, None], (1 << k) + 1, axis=1
        )
        for k, rows in rows_per_bucket.items()
    }


SIZES = {4: 400, 5: 300, 6: 200, 7: 64}
BUDGET = 2**7 * 4  # four longest sequences per global step


def reader(config=None, rank=0, world_size=1, sizes=SIZES):
    config = config or CurriculumConfig(
        tokens_per_step=BUDGET, odds="grow_p2", num_cycles=2, seed=5
    )
    return CurriculumReader.from_arrays(labelled_buckets(sizes), config, rank, world_size)


def test_presets():
    assert curriculum_odds("uniform", 6).tolist() == [1, 1, 1, 1, 1, 1]
    assert curriculum_odds("grow_linear", 6).tolist() == [6, 5, 4, 3, 2, 1]
    assert curriculum_odds("grow_p2", 6).tolist() == [32, 16, 8, 4, 2, 1]
    assert curriculum_odds([3, 1], 2).tolist() == [3, 1]
    with pytest.raises(ValueError, match="curriculum.odds"):
        curriculum_odds("grow_cubic", 6)
    with pytest.raises(ValueError, match="curriculum.odds"):
        curriculum_odds([1, 2], 3)
    with pytest.raises(ValueError, match="curriculum.odds"):
        curriculum_odds([1, 0], 2)


def test_constant_token_budget_per_step():
    batches = list(reader())
    assert batches
    for batch in batches:
        assert batch.tokens.shape == (BUDGET >> batch.exponent, batch.sequence_length + 1)
        assert batch.tokens.shape[0] * batch.sequence_length == BUDGET


def test_every_full_batch_is_used_once_and_rows_never_repeat():
    r = reader()
    seen = {k: [] for k in SIZES}
    for batch in r:
        # Each row's tokens carry its identity: check the right rows came back.
        assert (batch.tokens[:, 0] == batch.exponent * 1_000_000 + batch.rows).all()
        seen[batch.exponent].extend(batch.rows.tolist())
    for k, rows in seen.items():
        per_step = BUDGET >> k
        assert len(rows) == len(set(rows)) == (SIZES[k] // per_step) * per_step
    spec = r.spec()
    assert spec["steps"] == len(r) == sum(b["steps"] for b in spec["buckets"])
    assert sum(b["unused_sequences"] for b in spec["buckets"]) == sum(
        SIZES[k] % (BUDGET >> k) for k in SIZES
    )


def test_cycles_hold_equal_shares_of_each_bucket():
    r = reader(CurriculumConfig(tokens_per_step=BUDGET, num_cycles=3))
    cycles = np.array([b.cycle for b in r])
    exponents = r.step_exponents
    assert (np.diff(cycles) >= 0).all()
    for k in SIZES:
        counts = [int(((cycles == c) & (exponents == k)).sum()) for c in range(3)]
        assert max(counts) - min(counts) <= 1
        assert sum(counts) == r.batches_per_bucket[k]


def test_deterministic_by_seed():
    first = [(b.exponent, b.rows.tolist()) for b in reader()]
    second = [(b.exponent, b.rows.tolist()) for b in reader()]
    assert first == second
    other = reader(CurriculumConfig(tokens_per_step=BUDGET, odds="grow_p2", num_cycles=2, seed=6))
    assert [(b.exponent, b.rows.tolist()) for b in other] != first


def test_resume_from_step():
    full = [(b.step, b.rows.tolist()) for b in reader()]
    resumed = [(b.step, b.rows.tolist()) for b in reader().batches(start_step=17)]
    assert resumed == full[17:]


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_share_bucket_order_and_split_each_batch(world_size):
    ranks = [list(reader(rank=r, world_size=world_size)) for r in range(world_size)]
    single = list(reader())
    for step, global_batch in enumerate(single):
        shares = [ranks[r][step] for r in range(world_size)]
        assert {s.exponent for s in shares} == {global_batch.exponent}
        assert all(len(s.rows) == len(global_batch.rows) // world_size for s in shares)
        assert np.array_equal(np.concatenate([s.rows for s in shares]), global_batch.rows)


def test_budget_must_split_over_ranks():
    with pytest.raises(ValueError, match="tokens_per_step"):
        reader(CurriculumConfig(tokens_per_step=BUDGET), world_size=8)
    with pytest.raises(ValueError, match="tokens_per_step"):
        reader(CurriculumConfig(tokens_per_step=BUDGET + 16))
    with pytest.raises(ValueError, match="num_cycles"):
        CurriculumConfig(tokens_per_step=BUDGET, num_cycles=0)


def test_grow_odds_put_short_sequences_first_in_each_cycle():
    sizes = {4: 4000, 5: 2000, 6: 1000, 7: 500}
    mean_positions = {}
    for odds in ("uniform", "grow_p2"):
        r = reader(CurriculumConfig(tokens_per_step=BUDGET, odds=odds), sizes=sizes)
        positions = np.arange(len(r)) / len(r)
        mean_positions[odds] = {k: positions[r.step_exponents == k].mean() for k in sizes}
    assert all(abs(p - 0.5) < 0.05 for p in mean_positions["uniform"].values())
    grow = [mean_positions["grow_p2"][k] for k in sorted(sizes)]
    assert grow == sorted(grow) and grow[0] < 0.4 < 0.6 < grow[-1]


def test_first_step_follows_weighted_sampling_odds():
    """P(first step from bucket i) = w_i n_i / Σ w_j n_j for sampling without replacement."""
    sizes = {4: 40, 5: 20, 6: 10}  # 5 batches each at a budget of 128
    weights = np.array([4.0, 2.0, 1.0])
    batches = np.array([5, 5, 5])
    expected = weights * batches / (weights * batches).sum()
    firsts = np.zeros(3)
    trials = 3000
    for seed in range(trials):
        config = CurriculumConfig(tokens_per_step=2**6 * 2, odds=(4, 2, 1), seed=seed)
        r = reader(config, sizes=sizes)
        firsts[int(r.step_exponents[0]) - 4] += 1
    assert np.allclose(firsts / trials, expected, atol=0.03)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.dictionaries(st.integers(3, 6), st.integers(0, 120), min_size=1, max_size=4),
    world_exp=st.integers(0, 2),
    cycles=st.integers(1, 4),
    seed=st.integers(0, 1000),
)
def test_invariants_hold_for_any_layout(sizes, world_exp, cycles, seed):
    world_size = 1 << world_exp
    budget = (1 << max(sizes)) * world_size * 2
    config = CurriculumConfig(
        tokens_per_step=budget, odds="grow_linear", num_cycles=cycles, seed=seed
    )
    per_rank = [list(reader(config, r, world_size, sizes)) for r in range(world_size)]
    used = set()
    for step in range(len(per_rank[0])):
        shares = [batches[step] for batches in per_rank]
        assert len({s.exponent for s in shares}) == 1
        for share in shares:
            assert share.tokens.shape[0] * share.sequence_length * world_size == budget
            for row in share.rows.tolist():
                assert (share.exponent, row) not in used
                used.add((share.exponent, row))
    assert len(used) == sum((n // (budget >> k)) * (budget >> k) for k, n in sizes.items())


def test_parquet_buckets_read_like_arrays(tmp_path, real_documents):
    config = DecomposeConfig(mode="random", seed=1)
    decomposition = decompose_documents(
        real_documents, [f"doc-{i}" for i in range(len(real_documents))], config
    )
    buckets = tmp_path / "snapshot" / "buckets"
    for k, pieces in decomposition.buckets.items():
        folder = buckets / bucket_dirname(k)
        folder.mkdir(parents=True)
        table = pa.Table.from_batches([pieces.to_record_batch()])
        half = len(table) // 2
        pq.write_table(table.slice(0, half), folder / "part-00000-of-00002.parquet")
        pq.write_table(table.slice(half), folder / "part-00001-of-00002.parquet")
    curriculum = CurriculumConfig(tokens_per_step=2**13 * 2, odds="grow_p2", num_cycles=2, seed=3)
    from_files = CurriculumReader.from_parquet(
        tmp_path / "snapshot", curriculum, rank=1, world_size=2
    )
    in_memory = CurriculumReader.from_arrays(
        decomposition.buckets, curriculum, rank=1, world_size=2
    )
    assert from_files.spec() == in_memory.spec()
    json.dumps(from_files.spec())
    assert len(from_files) > 0
    for a, b in zip(from_files, in_memory):
        assert a.exponent == b.exponent
        assert np.array_equal(a.tokens, b.tokens)
        assert a.doc_ids.tolist() == b.doc_ids.tolist()
        assert np.array_equal(a.offsets, b.offsets)
        # Offsets point back into the documents the pieces came from.
        doc = real_documents[int(a.doc_ids[0].split("-")[1])]
        assert np.array_equal(doc[a.offsets[0] : a.offsets[0] + a.tokens.shape[1]], a.tokens[0])


def test_missing_bucket_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="len-NNNNN"):
        CurriculumReader.from_parquet(tmp_path, CurriculumConfig(tokens_per_step=256))
