"""Padding tokens saved by length-grouped batching and by sequence packing, side by side on the same samples.

Three tasks with the sequence-length spread of AV-UIE-style data (a fixed media-token block per task plus a
long-tailed text part) are batched by :class:`crabzoo.data.mixing.TaskMixingSampler` with and without
``lengths``; every batch is padded to its longest sequence. The packed rows lay the samples of the shuffled task
batches out in rows (:func:`crabzoo.data.packing.pack_plan`, capacity: the batch's longest sample or
``--pack-length``), each row padded to the batch's longest row.

Usage::

    python benchmarks/padding.py [--samples 6000] [--batch 16] [--window 32] [--pack-length 2048]
"""

from __future__ import annotations

import argparse

import numpy as np

from crabzoo.data.mixing import TaskMixingSampler, padding_tokens
from crabzoo.data.packing import pack_plan

TASKS = {  # name: (share of samples, media tokens, median text tokens)
    "avqa": (0.5, 320, 40),
    "avvp": (0.3, 352, 160),
    "caption": (0.2, 320, 90),
}


def make(n: int, seed: int) -> tuple[list[str], list[int]]:
    rng = np.random.default_rng(seed)
    tasks, lengths = [], []
    for name, (share, media, text) in TASKS.items():
        k = int(n * share)
        tasks += [name] * k
        lengths += (media + rng.lognormal(np.log(text), 0.7, k).astype(int) + 8).tolist()
    return tasks, lengths


def packed_padding(batches: list[list[int]], lengths: list[int], pack_length: int | None) -> tuple[int, int]:
    """``(padding tokens, real tokens)`` when each batch's samples are packed into rows of ``pack_length``."""
    pad = real = 0
    for batch in batches:
        ls = [lengths[i] for i in batch]
        rows = [sum(ls[i] for i in row) for row in pack_plan(ls, pack_length)]
        pad += max(rows) * len(rows) - sum(ls)
        real += sum(ls)
    return pad, real


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--window", type=int, default=32, help="batches per length-sorting window")
    parser.add_argument("--pack-length", type=int, default=2048, help="row capacity of the second packed row")
    args = parser.parse_args()
    tasks, lengths = make(args.samples, 0)
    print(f"{len(tasks)} samples, 3 tasks, batch {args.batch}")
    print(f"{'batching':<34} {'real tokens':>12} {'padding':>10} {'pad share':>10}")
    base = None
    for label, kwargs in (("task batches (shuffled)", {}), (f"length-grouped (window {args.window})", {"lengths": lengths, "group_window": args.window})):
        sampler = TaskMixingSampler(tasks, args.batch, seed=0, **kwargs)
        pad, real = padding_tokens(list(sampler), lengths)
        base = base or pad
        print(f"{label:<34} {real:>12,} {pad:>10,} {pad / (pad + real):>9.1%}")
    print(f"padding tokens saved by length grouping: {1 - pad / base:.1%} ({base / max(pad, 1):.1f}x fewer)")
    shuffled = list(TaskMixingSampler(tasks, args.batch, seed=0))
    for capacity in (None, args.pack_length):
        pad, real = packed_padding(shuffled, lengths, capacity)
        label = f"task batches packed ({'longest' if capacity is None else capacity})"
        print(f"{label:<34} {real:>12,} {pad:>10,} {pad / (pad + real):>9.1%}")


if __name__ == "__main__":
    main()
