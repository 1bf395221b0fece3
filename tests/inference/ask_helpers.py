"""Helpers of the ``crabzoo ask`` / ``crabzoo chat`` tests: a tiny checkpoint fit through the real CLI, CLI runs.

The checkpoint is fit with a learning rate of 1e-9, so the model stays at its (seeded) initialisation: its greedy
generations are varied strings that change with the prompt and the media, which makes "the same answer as the
model's own ``generate``" a real check (a model trained for three steps answers ``........`` to everything).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PARADIGMS = ROOT / "paradigms" / "tiny"
RECIPE = ROOT / "recipes" / "avsynth" / "multitask-ilora.yaml"
MAX_NEW_TOKENS = 8


def fit_args(root: Path, run_dir: Path, *configs: Path, tasks=("ks", "s4"), steps: int = 2) -> list[str]:
    """``crabzoo fit`` arguments of a tiny run on the AVSynth test data (same knobs as tests/paradigms/test_fit.py)."""
    args = ["fit"]
    for c in configs:
        args += ["--config", str(c)]
    return args + [
        "--data.init_args.root", str(root),
        "--data.init_args.synth", "null",
        "--data.init_args.tasks", json.dumps(list(tasks)),
        "--data.init_args.num_workers", "0",
        "--data.init_args.batch_size", "2",
        "--data.init_args.max_val_per_task", "1",
        "--model.init_args.backbone.init_args.tokenizer_corpus", str(root / "AVUIE_2"),
        "--model.init_args.max_new_tokens", str(MAX_NEW_TOKENS),
        "--model.init_args.optimizer.init_args.lr", "1e-9",
        "--trainer.max_steps", str(steps),
        "--trainer.max_epochs", "-1",
        "--trainer.check_val_every_n_epoch", "1",
        "--trainer.limit_val_batches", "1",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(run_dir),
    ]


def fit_tiny(root: Path, run_dir: Path, paradigm: str = "mlp") -> Path:
    """Fit ``paradigms/tiny/<paradigm>.yaml`` + the multi-task I-LoRA recipe for two steps; the ``last.ckpt`` path."""
    import torch

    from crabzoo.lightning_cli import run_lightning_cli

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_lightning_cli(fit_args(root, run_dir, PARADIGMS / f"{paradigm}.yaml", RECIPE))
    finally:
        torch.set_num_threads(threads)
    (ckpt,) = run_dir.glob("version_*/checkpoints/last.ckpt")
    return ckpt


@dataclass
class Clip:
    """Media files of one AVSynth test sample."""

    video: Path
    audio: Path


def ks_clip(root: Path, index: int = 0) -> Clip:
    """Video and audio of the ``index``-th ks test record."""
    base = root / "AVUIE_2" / "ks"
    record = json.loads((base / "test.json").read_text())[index]
    return Clip(base / "video" / record["video_path"], base / "audio" / record["audio_path"])


@dataclass
class Result:
    """What one in-process CLI run printed, and its exit code."""

    code: int
    out: str
    err: str


def run_main(argv: list[str]) -> Result:
    """``crabzoo.cli.main(argv)`` with stdout / stderr captured; the exit code of its ``SystemExit`` (0 if none)."""
    from crabzoo.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return Result(code, out.getvalue(), err.getvalue())


def model_args(ckpt: Path, clip: Clip) -> list[str]:
    """``--ckpt_path`` and the media flags of a clip."""
    return ["--ckpt_path", str(ckpt), "--video", str(clip.video), "--audio", str(clip.audio),
            "--max_new_tokens", str(MAX_NEW_TOKENS)]


def cli_env() -> dict[str, str]:
    """Environment of a ``python -m crabzoo.cli`` subprocess: one thread, the source tree importable."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_cli_process(args: list[str], stdin: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m crabzoo.cli ARGS`` with ``stdin`` piped in; text stdout / stderr."""
    return subprocess.run(
        [sys.executable, "-m", "crabzoo.cli", *args], input=stdin, capture_output=True, text=True,
        env=cli_env(), cwd=str(ROOT), timeout=timeout,
    )
