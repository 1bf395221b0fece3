"""Helpers of the last.ckpt and predict tests: a small AVSynth set, fit/predict arguments for the real CLI,
subprocess runs of ``python -m crabzoo.cli`` and the per-step training losses of a run."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import lightning as L

ROOT = Path(__file__).resolve().parents[2]
PARADIGM = ROOT / "paradigms" / "tiny" / "mlp.yaml"
RECIPE = ROOT / "recipes" / "avsynth" / "multitask-ilora.yaml"
TASKS = ("ks", "emotion")


def make_data(out: Path) -> Path:
    """AVSynth with 16 training and 4 test samples of each of two tasks (bare answers): 16 batches of 2 per epoch."""
    from crabzoo.data.avsynth import synthesize

    synthesize(out, clips=40, seed=0, tasks=list(TASKS), workers=1, soundtrack=False, reasoning=False)
    return out


def common_args(root: Path, run_dir: Path) -> list[str]:
    """Data, tokenizer and trainer options shared by fit and predict."""
    return [
        "--config", str(PARADIGM), "--config", str(RECIPE),
        "--data.init_args.root", str(root),
        "--data.init_args.synth", "null",
        "--data.init_args.tasks", json.dumps(list(TASKS)),
        "--data.init_args.num_workers", "0",
        "--data.init_args.batch_size", "2",
        "--model.init_args.backbone.init_args.tokenizer_corpus", str(root / "AVUIE_2"),
        "--model.init_args.max_new_tokens", "8",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(run_dir),
    ]


def fit_args(root: Path, run_dir: Path, steps: int, every_n_steps: int = 100, *extra: str) -> list[str]:
    """``crabzoo fit`` of the tiny MLP paradigm for ``steps`` optimizer steps, logging the loss at every step."""
    return ["fit", *common_args(root, run_dir),
            "--trainer.max_steps", str(steps),
            "--trainer.max_epochs", "-1",
            "--trainer.log_every_n_steps", "1",
            "--last_checkpoint.every_n_steps", str(every_n_steps),
            *extra]


def pace_args(seconds: float, marker: Path) -> list[str]:
    """Append a :class:`Pace` callback (the test module folder must be on ``PYTHONPATH``)."""
    spec = {"class_path": "ckpt_helpers.Pace", "init_args": {"seconds": seconds, "marker": str(marker)}}
    return ["--trainer.callbacks+", json.dumps(spec)]


def run_cli(args: list[str]) -> None:
    """Run a Lightning subcommand in this process, single-threaded."""
    import torch

    from crabzoo.lightning_cli import run_lightning_cli

    torch.set_num_threads(1)
    run_lightning_cli(args)


def start_cli(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m crabzoo.cli ARGS`` in a subprocess (this folder on ``PYTHONPATH``), output to ``log``."""
    path = os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
    full_env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", **(env or {}))
    fh = open(log, "w")
    return subprocess.Popen([sys.executable, "-m", "crabzoo.cli", *args], env=full_env, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)


def wait_for(condition, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Poll ``condition()`` every 20 ms; fail with the subprocess log if it exits or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) first:\n{log.read_text()[-3000:] if log else ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s:\n{log.read_text()[-3000:] if log else ''}")
        time.sleep(0.02)


def versions(run_dir: Path) -> list[Path]:
    """The run's ``version_N`` folders in order."""
    return sorted(run_dir.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))


def train_losses(version: Path) -> dict[int, float]:
    """Optimizer step (1-based) -> ``train/loss`` from a run's ``metrics.csv``."""
    out = {}
    with open(version / "metrics.csv") as fh:
        for row in csv.DictReader(fh):
            if row.get("train/loss"):
                out[int(row["step"]) + 1] = float(row["train/loss"])
    return out


class Pace(L.Callback):
    """Sleeps after every training batch and writes the optimizer step reached into ``marker`` (for kill tests).

    Args:
        seconds: Sleep per batch.
        marker: File holding the last finished step.
    """

    def __init__(self, seconds: float = 0.2, marker: str = "step.txt") -> None:
        self.seconds = seconds
        self.marker = Path(marker)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.marker.write_text(str(trainer.global_step))
        time.sleep(self.seconds)


def launch_cli(args: list[str], log_dir: Path, world: int = 2, timeout: float = 300.0) -> None:
    """``python -m crabzoo.cli ARGS`` as ``world`` CPU ranks over gloo (Lightning's external-launch variables)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs, logs = [], []
    for rank in range(world):
        env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "LOCAL_RANK": str(rank), "NODE_RANK": "0",
               "WORLD_SIZE": str(world)}
        logs.append(log_dir / f"rank{rank}.log")
        procs.append(start_cli([*args, "--trainer.accelerator", "cpu", "--trainer.devices", str(world),
                                "--trainer.strategy", "ddp"], logs[-1], env))
    try:
        codes = [p.wait(timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if any(codes):
        raise AssertionError(f"ranks exited with {codes}:\n" + "\n----\n".join(log.read_text()[-3000:] for log in logs))
