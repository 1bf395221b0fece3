"""Helpers of the ``crabzoo export`` tests: tiny LoRA / I-LoRA checkpoints fit through the real CLI, CLI runs.

The runs are fit with a learning rate of 1e-9 (the model stays at its seeded initialisation, so greedy
generations are varied strings rather than one repeated token), then the adapter's zero-initialised up-projections
get random values: the adapter changes the model's outputs, so "the merged model equals the adapted one" is a
real check of the merge.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PARADIGM = ROOT / "paradigms" / "tiny" / "mlp.yaml"
RECIPES = {name: ROOT / "recipes" / "avsynth" / f"multitask-{name}.yaml" for name in ("lora", "ilora")}
MAX_NEW_TOKENS = 8


def fit_args(root: Path, run_dir: Path, *configs: Path, tasks=("ks", "a2v"), steps: int = 2) -> list[str]:
    """``crabzoo fit`` arguments of a tiny run on the AVSynth test data (the knobs of tests/paradigms/test_fit.py)."""
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


def fit_tiny(root: Path, run_dir: Path, adapter: str) -> Path:
    """Fit the tiny MLP paradigm with the ``lora`` or ``ilora`` recipe for two steps; its ``last.ckpt``."""
    import torch

    from crabzoo.lightning_cli import run_lightning_cli

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_lightning_cli(fit_args(root, run_dir, PARADIGM, RECIPES[adapter]))
    finally:
        torch.set_num_threads(threads)
    (ckpt,) = run_dir.glob("version_*/checkpoints/last.ckpt")
    return ckpt


def with_random_adapter(ckpt: Path, name: str = "adapted.ckpt", std: float = 0.05, seed: int = 0) -> Path:
    """A copy of ``ckpt`` (same folder, so the run's config.yaml is found) whose ``lora_B`` tensors are random."""
    import torch

    data = torch.load(ckpt, map_location="cpu", weights_only=True)
    g = torch.Generator().manual_seed(seed)
    for key, value in data["state_dict"].items():
        if ".lora_B" in key:
            data["state_dict"][key] = torch.randn(value.shape, generator=g, dtype=value.dtype) * std
    out = ckpt.with_name(name)
    torch.save(data, out)
    return out


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


def samples(answerer, root: Path) -> list[dict]:
    """Three questions: two ks clips (test and train) with the task's prompt, and a free-form one about the first."""
    base = root / "AVUIE_2" / "ks"
    records = [json.loads((base / f"{split}.json").read_text())[0] for split in ("test", "train")]
    clips = [(str(base / "video" / r["video_path"]), str(base / "audio" / r["audio_path"])) for r in records]
    items = [answerer.build("", video=v, audio=a, task="ks") for v, a in clips]
    items.append(answerer.build("What do you see and hear?", video=clips[0][0], audio=clips[0][1]))
    return items


def prompt_logits(model, batch) -> "object":
    """Logits ``(B, L, V)`` of the paradigm over the spliced prompts of a collated batch."""
    import torch

    with torch.no_grad():
        inputs, attention, _ = model.splice(batch["prompt_ids"], None, model.media_embeddings(batch))
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        return model.backbone(inputs, attention, positions)
