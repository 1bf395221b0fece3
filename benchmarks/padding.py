"""Padding tokens saved by length-grouped batching, measured side by side on the same samples.

Three tasks with the sequence-length spread of AV-UIE-style data (a fixed media-token block per task plus a
long-tailed text part) are batched by :class:`crabzoo.data.mixing.TaskMixingSampler` with and without
``lengths``; every batch is padded to its longest sequence.

Usage::

    python benchmarks/padding.py [--samples 6000] [--batch 16] [--window 32]
"""

from __future__ import annotations

import argparse

import numpy as np

from crabzoo.data.mixing import TaskMixingSampler, padding_tokens

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--window", type=int, default=32, help="batches per length-sorting window")
    args = parser.parse_args()
    tasks, lengths = make(args.samples, 0)
    print(f"{len(tasks)} samples, 3 tasks, batch {args.batch}")
    print(f"{'batching':<28} {'real tokens':>12} {'padding':>10} {'pad share':>10}")
    base = None
    for label, kwargs in (("task batches (shuffled)", {}), (f"length-grouped (window {args.window})", {"lengths": lengths, "group_window": args.window})):
        sampler = TaskMixingSampler(tasks, args.batch, seed=0, **kwargs)
        pad, real = padding_tokens(list(sampler), lengths)
        base = base or pad
        print(f"{label:<28} {real:>12,} {pad:>10,} {pad / (pad + real):>9.1%}")
    print(f"padding tokens saved: {1 - pad / base:.1%} ({base / max(pad, 1):.1f}x fewer)")


if __name__ == "__main__":
    main()
