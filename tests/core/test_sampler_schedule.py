"""Task-homogeneous batch sampler and the warm-up cosine schedule."""

import math

import torch

from crabzoo.data.datamodule import TaskBatchSampler
from crabzoo.paradigms.schedules import WarmupCosine


def test_batches_hold_one_task_and_cover_every_index_once():
    tasks = ["a"] * 7 + ["b"] * 5 + ["c"] * 2
    sampler = TaskBatchSampler(tasks, batch_size=3, seed=1)
    batches = list(sampler)
    assert all(len({tasks[i] for i in b}) == 1 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(len(tasks)))
    # ceil(7/3) + ceil(5/3) + ceil(2/3) batches
    assert len(batches) == len(sampler) == 3 + 2 + 1


def test_order_depends_on_seed_and_epoch_only():
    tasks = ["a"] * 10 + ["b"] * 10
    s1, s2 = TaskBatchSampler(tasks, 4, seed=3), TaskBatchSampler(tasks, 4, seed=3)
    assert list(s1) == list(s2)
    s2.set_epoch(1)
    assert list(s1) != list(s2)


def test_drop_last_and_no_shuffle():
    tasks = ["a"] * 5 + ["b"] * 4
    sampler = TaskBatchSampler(tasks, 2, shuffle=False, drop_last=True)
    assert list(sampler) == [[0, 1], [2, 3], [5, 6], [7, 8]]


def test_ranks_take_disjoint_batches(monkeypatch):
    tasks = ["a"] * 9 + ["b"] * 8
    seen = []
    for rank in (0, 1):
        monkeypatch.setattr(TaskBatchSampler, "_rank_world", staticmethod(lambda r=rank: (r, 2)))
        seen.append([i for b in TaskBatchSampler(tasks, 2, seed=0) for i in b])
    assert not set(seen[0]) & set(seen[1])
    assert len(seen[0]) > 0 and len(seen[1]) > 0


def test_warmup_cosine_values():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = WarmupCosine(opt, warmup_ratio=0.1, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # 10 warm-up steps: 0.1, 0.2, ..., 1.0
    assert math.isclose(lrs[0], 0.1) and math.isclose(lrs[9], 1.0)
    # half-way through the cosine part (step 10 + 45): 0.5 * (1 + cos(pi/2)) = 0.5
    assert math.isclose(lrs[55], 0.5, rel_tol=1e-9)
    assert lrs[99] < 0.001
