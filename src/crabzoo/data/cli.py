"""``crabzoo data``: generate AVSynth (``synth``), prepare a real dataset (``prepare``), verify a dataset (``check``)
and draw contact sheets (``preview``).

Examples::

    crabzoo data synth --out data/avsynth --clips 2000 --seed 0 --workers 2
    crabzoo data prepare ave --src raw/AVE_Dataset --annotations raw/AVUIE_2 --out data/real --workers 8
    crabzoo data check data/avsynth
    crabzoo data check data/real --deep
    crabzoo data preview data/avsynth --out docs/images/avsynth
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from crabzoo.errors import CrabzooError

SPLITS = ("train", "test")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crabzoo data", description=" ".join(__doc__.split("\n\n")[0].split()))
    sub = parser.add_subparsers(dest="command", required=True, metavar="{synth,prepare,check,preview}")

    synth = sub.add_parser("synth", help="generate the AVSynth benchmark in the AV-UIE v2 layout")
    synth.add_argument("--out", required=True, type=Path, help="output folder (AVUIE_2/ is created inside)")
    synth.add_argument("--clips", type=int, default=400, help="total clips, split evenly over the tasks (default 400)")
    synth.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    synth.add_argument("--tasks", nargs="+", default=None, metavar="TASK", help="task folders (default: all)")
    synth.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    synth.add_argument("--no-reasoning", action="store_true", help="write bare answers without reasoning")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    knobs = synth.add_argument_group("difficulty and format knobs")
    knobs.add_argument("--duration", type=int, help="clip length in seconds of the video tasks (default 10)")
    knobs.add_argument("--size", type=int, help="frame width/height in pixels (default 64)")
    knobs.add_argument("--fps", type=int, help="video frame rate (default 2)")
    knobs.add_argument("--noise", type=float, help="background noise level in [0, 1] (default 0.05)")
    knobs.add_argument("--max-objects", type=int, help="most objects per scene, 1-3 (default 3)")
    knobs.add_argument("--distractor-rate", type=float, help="probability of distractors, 0-1 (default 0.3)")
    knobs.add_argument("--motion", type=float, help="object motion amplitude, 0-1 (default 0.3)")
    knobs.add_argument("--test-fraction", type=float, help="share of each task's clips in test.json (default 0.2)")
    knobs.add_argument("--sample-rate", type=int, help="audio sample rate in Hz (default 16000)")
    knobs.add_argument("--audio-format", choices=("wav", "release"), help="separate audio files: wav (default) or "
                       "the release's extensions (mp3 for the video tasks that ship mp3)")
    knobs.add_argument("--no-soundtrack", action="store_true",
                       help="do not mux the soundtrack (AAC in MP4, PCM in AVI) into the videos")

    prep = sub.add_parser("prepare", help="make one task folder's media from its raw source dataset")
    prep.add_argument("name", metavar="NAME", help="task folder to prepare (a2v, v2a, ks, ucf, meld, mer24, cremad, mafw, "
                      "dfew, avqa, avqa_thu, ave, unav, avvp, s4, ms3, ref_avs, arig, avcap)")
    prep.add_argument("--src", required=True, type=Path, help="the raw source dataset in its official layout")
    prep.add_argument("--annotations", required=True, type=Path,
                      help="the release: AVUIE_2.zip, or its extracted AVUIE_2/ folder (or the folder holding it)")
    prep.add_argument("--out", required=True, type=Path, help="output folder (AVUIE_2/<task>/ is written inside)")
    prep.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    prep.add_argument("--copy", action="store_true", help="copy files instead of hard-linking them")
    prep.add_argument("--drop-incomplete", action="store_true",
                      help="leave records with missing or unreadable media out of the written annotation files "
                           "(they stay listed in the report)")
    prep.add_argument("--quiet", action="store_true", help="no progress bar")

    check = sub.add_parser("check", help="verify annotations, media and prepare manifests; exit 2 on problems")
    check.add_argument("root", type=Path, help="folder holding the task folders (or a parent holding AVUIE_2/)")
    check.add_argument("--tasks", nargs="+", default=None, metavar="TASK", help="task folders (default: all found)")
    check.add_argument("--splits", nargs="+", default=list(SPLITS), help="annotation files to check")
    check.add_argument("--no-masks", action="store_true", help="skip decoding the ground-truth masks")
    check.add_argument("--deep", action="store_true",
                       help="also decode every file a prepare manifest lists (every frame of every video)")

    preview = sub.add_parser("preview", help="render one PNG contact sheet per task")
    preview.add_argument("root", type=Path, help="folder holding the task folders (or a parent holding AVUIE_2/)")
    preview.add_argument("--out", required=True, type=Path, help="folder for the PNGs")
    preview.add_argument("--tasks", nargs="+", default=None, metavar="TASK", help="task folders (default: all found)")
    preview.add_argument("--split", default="train", help="annotation file to preview (default train)")
    preview.add_argument("--index", type=int, default=0, help="sample to show (default 0)")
    return parser


KNOB_ARGS = ("duration", "size", "fps", "noise", "max_objects", "distractor_rate", "motion", "test_fraction",
             "sample_rate", "audio_format")


def run_synth(args: argparse.Namespace) -> None:
    """``crabzoo data synth``."""
    from crabzoo.data.avsynth import synthesize

    knobs: dict[str, Any] = {k: getattr(args, k) for k in KNOB_ARGS if getattr(args, k) is not None}
    if args.no_soundtrack:
        knobs["soundtrack"] = False
    summary = synthesize(args.out, args.clips, args.seed, args.tasks, args.workers, not args.no_reasoning,
                         progress=not args.quiet, **knobs)
    total = sum(summary["clips"].values())
    print(f"wrote {total} clips ({sum(summary['records'].values())} records) to {summary['root']} "
          f"in {summary['seconds']:.1f} s ({summary['cpu_seconds']:.1f} s CPU)")
    for task, n in summary["clips"].items():
        print(f"  {task:<9} clips {n:>5}  train {summary['records'][f'{task}/train']:>6}  "
              f"test {summary['records'][f'{task}/test']:>6}")


MAX_PRINTED = 20
"""Problems of a prepare run printed on the terminal (the report lists all)."""


def run_prepare(args: argparse.Namespace) -> None:
    """``crabzoo data prepare``."""
    from crabzoo.data.prepare import REPORT, get_preparer, prepare

    result = prepare(get_preparer(args.name), args.src, args.annotations, args.out, workers=args.workers,
                     progress=not args.quiet, copy=args.copy, drop_incomplete=args.drop_incomplete)
    splits = ", ".join(f"{s} {n}" for s, n in result.records.items())
    print(f"{result.task}: {sum(result.records.values())} records ({splits}) from {result.dataset}; "
          f"{result.files} files ({result.written} written, {result.reused} reused) in {result.seconds:.1f} s")
    print("  complete: " + ", ".join(f"{s} {result.complete[s]}/{n}" for s, n in result.records.items()))
    for gap in result.gaps:
        print(f"  known gap: {gap}")
    if result.problems:
        records = {(p.split, p.index) for p in result.problems}
        print(f"  {len(records)} record(s) with missing or unreadable media:")
        for problem in result.problems[:MAX_PRINTED]:
            print(f"    {problem.line()}")
        if len(result.problems) > MAX_PRINTED:
            print(f"    ... and {len(result.problems) - MAX_PRINTED} more")
    print(f"  report: {result.task_dir / REPORT}")


def run_check(args: argparse.Namespace) -> int:
    """``crabzoo data check``: returns the exit status (0 clean, 2 problems)."""
    from crabzoo.data.avuie import check_media, list_tasks, read_split, resolve_root
    from crabzoo.data.media import MediaLoader
    from crabzoo.data.prepare.manifest import MANIFEST, check_manifest

    tasks = args.tasks or list_tasks(args.root)
    if not tasks:
        raise CrabzooError(f"no task folders under {args.root}; generate data with `crabzoo data synth --out {args.root}`")
    loader = MediaLoader()
    problems: list[str] = []
    print(f"{'task':<9} {'split':<6} {'samples':>8} {'malformed':>9} {'bad media':>9}")
    for task in tasks:
        for split in args.splits:
            result = read_split(args.root, task, split, strict=False)
            if result.missing:
                print(f"{task:<9} {split:<6} {'(no file)':>8}")
                continue
            bad = check_media(result.samples, loader, masks=not args.no_masks)
            problems += [f"{file}[{i}]: {reason}" for file, i, reason in result.skipped]
            problems += bad
            print(f"{task:<9} {split:<6} {len(result.samples):>8} {len(result.skipped):>9} {len(bad):>9}")
    base = resolve_root(args.root)
    for task in tasks:
        if (base / task / MANIFEST).is_file():
            checked, bad = check_manifest(base / task, deep=args.deep)
            problems += bad
            what = "decoded" if args.deep else "size and sha256"
            print(f"{task:<9} manifest: {checked} files, {len(bad)} problem(s) ({what})")
    if problems:
        print(f"\n{len(problems)} problem(s):", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return 2
    print("\nall referenced files exist and decode")
    return 0


def spectrogram(wave: np.ndarray, n_fft: int = 400, hop: int = 160) -> np.ndarray:
    """Log-magnitude spectrogram ``(n_fft // 2 + 1, frames)`` in dB, low frequencies first."""
    if wave.size < n_fft:
        wave = np.pad(wave, (0, n_fft - wave.size))
    frames = 1 + (wave.size - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spec = np.abs(np.fft.rfft(wave[idx] * np.hanning(n_fft)[None, :], axis=1)).T
    return 20.0 * np.log10(spec + 1e-6)


def _sheet(sample: Any, loader: Any, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crabzoo.data.avuie import mask_paths

    images: list[tuple[np.ndarray, np.ndarray | None, str]] = []
    for path in sample.video[:2]:
        if Path(path).suffix.lower() in (".jpg", ".jpeg", ".png"):
            masks = mask_paths(sample)
            mask = loader.read_mask(masks[0]) if masks and masks[0].is_file() else None
            images.append((loader.read_image(path), mask, Path(path).name))
        else:
            frames, times = loader.read_video_frames(path, num_frames=4)
            images += [(f, None, f"t={t:.1f}s") for f, t in zip(frames, times)]
    images = images[:5]
    wave = loader.read_audio(sample.audio[0]) if sample.audio else np.zeros(16000, np.float32)
    n = len(images)
    fig = plt.figure(figsize=(1.6 * n + 3.4, 3.9), dpi=60)
    grid = fig.add_gridspec(2, n + 2, height_ratios=[3, 1.6])
    for k, (img, mask, title) in enumerate(images):
        ax = fig.add_subplot(grid[0, k])
        ax.imshow(img, interpolation="nearest")
        if mask is not None:
            overlay = np.zeros(mask.shape + (4,))
            overlay[mask] = (0.0, 1.0, 0.2, 0.45)
            ax.imshow(overlay, interpolation="nearest")
            ax.contour(mask.astype(float), levels=[0.5], colors="lime", linewidths=0.8)
        ax.set_title(title, fontsize=7)
        ax.axis("off")
    ax = fig.add_subplot(grid[0, n:])
    spec = spectrogram(wave[: 16000 * 10])
    ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=spec.max() - 50, vmax=spec.max(),
              extent=(0, min(wave.size, 160000) / 16000, 0, 8))
    ax.set_xlabel("s", fontsize=7)
    ax.set_ylabel("kHz", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.set_title(f"audio: {Path(sample.audio[0]).name if sample.audio else '-'}", fontsize=7)
    text = f"[{sample.task}] {sample.instruction}\n\u2192 {sample.target or sample.truth}"
    ax = fig.add_subplot(grid[1, :])
    ax.axis("off")
    width = int((1.6 * n + 3.4) * 12)
    ax.text(0, 1, "\n".join(textwrap.wrap(text, width)[:9]), fontsize=7, va="top", family="monospace")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=60)
    plt.close(fig)
    from PIL import Image

    with Image.open(out) as img:  # palette PNGs keep the sheets small enough for the docs
        small = img.convert("RGB").quantize(colors=48)
    small.save(out, optimize=True)


def run_preview(args: argparse.Namespace) -> None:
    """``crabzoo data preview``."""
    from crabzoo.data.avuie import list_tasks, read_split
    from crabzoo.data.media import MediaLoader

    tasks = args.tasks or list_tasks(args.root)
    loader = MediaLoader()
    for task in tasks:
        result = read_split(args.root, task, args.split)
        if not result.samples:
            print(f"{task}: no samples in {args.split}, skipped")
            continue
        sample = result.samples[min(args.index, len(result.samples) - 1)]
        path = args.out / f"{task}.png"
        _sheet(sample, loader, path)
        print(f"{task}: {path}")


def main(argv: list[str]) -> None:
    """Entry point of ``crabzoo data``; errors are :class:`CrabzooError` (exit 2) or argparse errors (exit 2)."""
    args = _parser().parse_args(argv)
    if args.command == "synth":
        run_synth(args)
    elif args.command == "prepare":
        run_prepare(args)
    elif args.command == "check":
        status = run_check(args)
        if status:
            raise SystemExit(status)
    else:
        run_preview(args)
