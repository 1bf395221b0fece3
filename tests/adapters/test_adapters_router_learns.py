"""Behaviour: on tasks that need different low-rank updates, the I-LoRA router learns task-specific heads.

Run as a script to redraw the toy heat-maps of docs/adapters.md:
``python tests/adapters/test_adapters_router_learns.py docs/images/adapters``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from crabzoo.adapters import ILoRA
from crabzoo.adapters.plot import gate_array, plot_summary

TASKS = ("ave", "avqa", "ms3")


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up, self.act, self.down = nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16)

    def forward(self, x):
        return self.down(self.act(self.up(x)))


def make_world(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = 2.0 * torch.randn(len(TASKS), 16, generator=g)
    maps = [torch.randn(16, 3, generator=g) @ torch.randn(3, 16, generator=g) * 0.3 for _ in TASKS]

    def batch(n_per_task: int = 8, length: int = 6):
        ids = torch.arange(len(TASKS)).repeat_interleave(n_per_task)
        x = centres[ids][:, None, :] + 0.5 * torch.randn(len(ids), length, 16, generator=g)
        shift = torch.stack([x[i] @ maps[t] for i, t in enumerate(ids.tolist())])
        return ids, x, shift

    return batch


def specialisation(summary: dict) -> float:
    """Mean over layers and heads of the spread (max - min) of the mean gate across tasks."""
    _, _, arr = gate_array(summary)
    return float(np.nanmean(arr.max(axis=0) - arr.min(axis=0)))


def run(steps: int = 300):
    torch.manual_seed(0)
    model = Toy()
    base = Toy()
    base.load_state_dict(model.state_dict())
    adapter = ILoRA(groups=("toy",), targets=["up", "down"], n_heads=3, rank=3, alpha=6.0, dropout=0.0)
    adapter.apply({"toy": model}, {})
    batch = make_world()
    opt = torch.optim.Adam(adapter.trainable_parameters(), lr=1e-2)

    def measure():
        adapter.telemetry.reset()
        adapter.telemetry.enable()
        with torch.no_grad():
            for _ in range(4):
                ids, x, _ = batch()
                adapter.telemetry.start([TASKS[i] for i in ids])
                model(x)
        adapter.telemetry.disable()
        return adapter.telemetry.summary()

    def loss_of(ids, x, shift):
        with torch.no_grad():
            target = base(x) + shift
        return (model(x) - target).pow(2).mean()

    before = measure()
    first = loss_of(*batch()).item()
    model.train()
    for _ in range(steps):
        loss = loss_of(*batch())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return before, measure(), first, loss_of(*batch()).item()


@pytest.mark.slow
def test_router_learns_task_specific_heads():
    before, after, first, last = run()
    assert last < 0.25 * first
    assert specialisation(after) > 2 * specialisation(before)
    assert after["tasks"] == list(TASKS)


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    before, after, first, last = run()
    print(f"loss {first:.4f} -> {last:.4f}; specialisation {specialisation(before):.3f} -> {specialisation(after):.3f}")
    (out / "routes_toy.json").write_text(json.dumps(after, indent=1))
    for png in plot_summary(after, out / "routes_toy"):
        print(png)
