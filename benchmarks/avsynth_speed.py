"""AVSynth generation speed: wall clock and CPU time, with and without the MP4 soundtrack.

Generates ``--clips`` clips over all tasks with ``--workers`` processes into a temporary folder (deleted
afterwards), once with the default AAC soundtrack and once with ``soundtrack=False``, and prints for each

* the wall clock of :func:`~crabzoo.data.avsynth.synthesize`,
* its CPU seconds (this process plus the workers, start-up included) and CPU milliseconds per clip,
* the estimate on idle cores: CPU seconds / min(workers, cores). On a machine shared with other jobs the wall clock
  grows with the load while the CPU time stays close to its idle value, so the estimate is the figure to compare.

Usage::

    python benchmarks/avsynth_speed.py                          # 2,000 clips, 2 workers, both rows
    python benchmarks/avsynth_speed.py --clips 400 --rows default release-audio
"""

from __future__ import annotations

import argparse
import os
import tempfile

from crabzoo.data.avsynth import synthesize

ROWS = {"default": {}, "no-soundtrack": {"soundtrack": False}, "release-audio": {"audio_format": "release"}}
"""Benchmark rows: name -> extra knobs (``release-audio`` writes the release's MP3s; not measured by default)."""


def measure(clips: int, workers: int, seed: int, knobs: dict) -> dict[str, float]:
    """Generate one dataset in a temporary folder; returns its wall and CPU seconds."""
    with tempfile.TemporaryDirectory(prefix="avsynth_speed_") as out:
        summary = synthesize(out, clips, seed=seed, workers=workers, **knobs)
    return {"wall": summary["seconds"], "cpu": summary["cpu_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=2000, help="total clips over all tasks (default 2000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=["default", "no-soundtrack"],
                        help="rows to measure (default: default no-soundtrack)")
    args = parser.parse_args()
    cores = min(args.workers, os.cpu_count() or 1)
    print(f"{args.clips} clips, {args.workers} workers, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at the start")
    print(f"{'row':<14} {'wall s':>8} {'CPU s':>8} {'CPU ms/clip':>12} {'idle estimate s':>16}")
    for name in args.rows:
        r = measure(args.clips, args.workers, args.seed, ROWS[name])
        print(f"{name:<14} {r['wall']:8.1f} {r['cpu']:8.1f} {1000 * r['cpu'] / args.clips:12.1f} "
              f"{r['cpu'] / cores:16.1f}", flush=True)


if __name__ == "__main__":
    main()
