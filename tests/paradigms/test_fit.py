"""End-to-end: every tiny paradigm trains a few steps on AVSynth through the real CLI and reports metrics."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = sorted(p for p in (ROOT / "paradigms" / "tiny").glob("*.yaml") if p.stem not in ("omni", "modular-seg"))


def fit_args(root: Path, run_dir: Path, *configs: Path, tasks=("ks", "s4"), steps: int = 3) -> list[str]:
    args = ["fit"]
    for c in configs:
        args += ["--config", str(c)]
    return args + [
        "--data.init_args.root", str(root),
        "--data.init_args.synth", "null",
        "--data.init_args.tasks", json.dumps(list(tasks)),
        "--data.init_args.num_workers", "0",
        "--data.init_args.batch_size", "2",
        "--data.init_args.max_val_per_task", "2",
        "--model.init_args.backbone.init_args.tokenizer_corpus", str(root / "AVUIE_2"),
        "--model.init_args.max_new_tokens", "8",
        "--trainer.max_steps", str(steps),
        "--trainer.max_epochs", "-1",
        "--trainer.check_val_every_n_epoch", "1",
        "--trainer.limit_val_batches", "2",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(run_dir),
    ]


def run_cli(args: list[str]) -> None:
    import torch

    from crabzoo.lightning_cli import run_lightning_cli

    torch.set_num_threads(1)
    run_lightning_cli(args)


@pytest.mark.slow
@pytest.mark.parametrize("paradigm", TINY, ids=lambda p: p.stem)
def test_tiny_paradigm_fits_and_reports(paradigm, avsynth_root, tmp_path):
    run_dir = tmp_path / "run"
    run_cli(fit_args(avsynth_root, run_dir, paradigm, ROOT / "recipes" / "avsynth" / "multitask-ilora.yaml"))
    (version,) = run_dir.glob("version_*")
    report = json.loads((version / "results.json").read_text())
    assert report["global_step"] == 3
    for task in ("ks", "s4"):
        scores = report["results"][task]
        assert scores["n_total"] >= 1 and 0 <= scores["n_parsed"] <= scores["n_total"]
    assert (version / "config.yaml").is_file() and (version / "metrics.csv").is_file()
    assert list((version / "checkpoints").glob("*.ckpt"))
    assert (version / "results.md").read_text().startswith("# fit results")
    # I-LoRA router telemetry: mean gate per task x layer x head, saved at validation, drawn by `crabzoo plot routes`
    (telemetry,) = version.glob("router_telemetry/*.json")
    summary = json.loads(telemetry.read_text())
    assert set(summary["tasks"]) == {"ks", "s4"}
    gates = next(iter(summary["mean_gate"]["ks"].values()))
    assert len(gates) == 3 and abs(sum(gates) - 1) < 1e-5
    if paradigm.stem == "mlp":
        from crabzoo.adapters.plot import main as plot_main

        plot_main(["routes", str(version), "--out", str(tmp_path / "plots")])
        assert list((tmp_path / "plots").glob("*.png"))
