"""TaskMixingSampler: shares, weighted frequencies, disjoint distributed shards, resume state, length grouping."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from crabzoo.data.mixing import TaskMixingSampler, allocate, padding_tokens, task_shares
from crabzoo.errors import CrabzooError

TASKS = ["a"] * 600 + ["b"] * 150 + ["c"] * 50


def test_shares_by_hand():
    sizes = {"a": 600, "b": 150, "c": 50}
    assert task_shares(sizes) == pytest.approx({"a": 0.75, "b": 0.1875, "c": 0.0625})
    # T = 2: sqrt sizes 24.495, 12.247, 7.071 (sum 43.813) -> 0.5591, 0.2795, 0.1614
    assert task_shares(sizes, "temperature", 2.0) == pytest.approx({"a": 0.5591, "b": 0.2795, "c": 0.1614}, abs=1e-4)
    assert task_shares(sizes, "weights", weights={"a": 1, "b": 1, "c": 2}) == {"a": 0.25, "b": 0.25, "c": 0.5}
    assert allocate({"a": 0.5, "b": 0.3, "c": 0.2}, 7) == {"a": 4, "b": 2, "c": 1}
    with pytest.raises(CrabzooError, match="unknown task"):
        task_shares(sizes, "weights", weights={"z": 1})


@pytest.mark.parametrize(("mixing", "kwargs"), [("weights", {"weights": {"a": 1, "b": 1, "c": 2}}), ("temperature", {"temperature": 3.0})])
def test_weighted_frequencies(mixing, kwargs):
    s = TaskMixingSampler(TASKS, 10, mixing=mixing, seed=1, **kwargs)
    shares = s.shares
    seen = Counter()
    for epoch in range(5):
        s.set_epoch(epoch)
        for batch in s:
            assert len({TASKS[i] for i in batch}) == 1  # task-homogeneous
            seen[TASKS[batch[0]]] += len(batch)
    total = sum(seen.values())
    for task, share in shares.items():
        assert abs(seen[task] / total - share) < 0.01


def test_concat_is_every_sample_once():
    s = TaskMixingSampler(TASKS, 16, seed=0)
    flat = [i for b in s for i in b]
    assert sorted(flat) == list(range(len(TASKS)))


@pytest.mark.parametrize("mixing", ["concat", "temperature"])
def test_distributed_shards_are_disjoint_and_equal(mixing):
    world = 3
    shards = [TaskMixingSampler(TASKS, 8, mixing=mixing, temperature=2.0, seed=5, rank=r, world_size=world, drop_last=True) for r in range(world)]
    for s in shards:
        s.set_epoch(2)
    batches = [list(s) for s in shards]
    assert len({len(b) for b in batches}) == 1 and len(batches[0]) == len(shards[0])
    # together the ranks cover the one epoch composition, each global batch exactly once
    interleaved = [tuple(batches[r][i]) for i in range(len(batches[0])) for r in range(world)]
    glob = [tuple(b) for b in shards[0].global_batches(2)]
    assert interleaved == glob[: len(interleaved)] and len(glob) - len(interleaved) < world
    if mixing == "concat":  # every sample at most once: the ranks' samples are disjoint
        samples = [{i for b in rank for i in b} for rank in batches]
        assert not (samples[0] & samples[1]) and not (samples[0] & samples[2]) and not (samples[1] & samples[2])


def test_state_resumes_mid_epoch():
    s = TaskMixingSampler(TASKS, 8, mixing="temperature", temperature=2.0, seed=3)
    s.set_epoch(4)
    full = list(s)
    state = {"epoch": 4, "skip": 7, "seed": 3}
    t = TaskMixingSampler(TASKS, 8, mixing="temperature", temperature=2.0, seed=3)
    t.load_state_dict(state)
    t.set_epoch(4)  # Lightning calls this again on restart: keeps the offset
    assert list(t) == full[7:]
    assert list(t) == full  # the offset applies once
    with pytest.raises(CrabzooError, match="seed"):
        t.load_state_dict({"epoch": 0, "skip": 0, "seed": 9})


def test_length_grouping_cuts_padding():
    rng = random.Random(0)
    lengths = [rng.randint(20, 400) for _ in TASKS]
    plain = TaskMixingSampler(TASKS, 8, seed=0)
    grouped = TaskMixingSampler(TASKS, 8, seed=0, lengths=lengths, group_window=16)
    pad_plain, real = padding_tokens(list(plain), lengths)
    pad_grouped, real2 = padding_tokens(list(grouped), lengths)
    assert real == real2  # same samples
    assert pad_grouped < 0.25 * pad_plain
    assert sorted(i for b in grouped for i in b) == list(range(len(TASKS)))


def test_rejects_a_distributed_sampler_rebuild():
    from torch.utils.data import DistributedSampler

    with pytest.raises(CrabzooError, match="use_distributed_sampler"):
        TaskMixingSampler(DistributedSampler(range(4), num_replicas=1, rank=0), 2)
