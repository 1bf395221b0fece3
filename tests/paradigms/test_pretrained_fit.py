"""The pretrained paradigms (Whisper tiny.en + DINOv2-S/14 + SmolLM2-135M-Instruct, all real weights) through the
real CLI: a 3-step fit leaves the LLM untouched and moves the adapter and connectors; the checkpoint holds only
what trained and reloads to the same losses.

Uses the packaged weights (installed by ``make install``) and the shared conversion cache (``$CRABZOO_CACHE``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from crabzoo import pretrained

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PARADIGMS = [ROOT / "paradigms" / "pretrained" / f"{name}.yaml" for name in ("mlp", "qformer")]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("pretrained"),  # one worker: the real weights load and convert once
    pytest.mark.skipif(
        not all(pretrained.available(n) for n in pretrained.WEIGHTS),
        reason="needs the packaged weights (`make install`)",
    ),
]


@pytest.fixture(scope="module", params=PARADIGMS, ids=lambda p: p.stem)
def fitted(request, avsynth_root, tmp_path_factory):
    """A 3-step fit of the paradigm (validation and checkpoint at step 3) with a FitProbe; its folders."""
    from crabzoo.lightning_cli import run_lightning_cli

    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))  # the probe callback's module, for its class_path
    tmp = tmp_path_factory.mktemp(request.param.stem)
    run_dir, probe = tmp / "run", tmp / "probe"
    torch.set_num_threads(2)
    run_lightning_cli([
        "fit",
        "--config", str(request.param),
        "--config", str(ROOT / "recipes" / "quickstart-pretrained.yaml"),
        "--data.init_args.root", str(avsynth_root),
        "--data.init_args.synth", "null",
        "--data.init_args.tasks", json.dumps(["ks", "a2v"]),
        "--data.init_args.num_workers", "0",
        "--data.init_args.batch_size", "2",
        "--data.init_args.max_val_per_task", "2",
        "--model.init_args.feature_cache", str(tmp / "features"),
        "--model.init_args.max_new_tokens", "4",
        "--trainer.max_steps", "3",
        "--trainer.max_epochs", "-1",
        "--trainer.val_check_interval", "3",
        "--trainer.check_val_every_n_epoch", "null",
        "--trainer.limit_val_batches", "1",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(run_dir),
        "--trainer.callbacks+", "pretrained_helpers.FitProbe",
        "--trainer.callbacks.out", str(probe),
    ])
    (version,) = run_dir.glob("version_*")
    return version, probe


def test_fit_trains_adapter_and_connectors_only(fitted):
    version, probe = fitted
    report = json.loads((probe / "probe.json").read_text())
    change, numel = report["max_change"], report["numel"]
    added = numel["llm"] - 134_515_008  # SmolLM2-135M-Instruct, every base weight frozen, plus the rows of the
    assert 0 < added <= 16 * 576 and added % 576 == 0  # placeholder tokens (576 wide, tied input / output) ...
    assert change["llm"] == 0.0  # ... and untouched by the fit
    assert change["encoder"] == 0.0 and numel["encoder"] > 30e6  # Whisper tiny.en encoder + DINOv2-S/14
    assert change["adapter"] > 0 and change["connector"] > 0
    assert json.loads((version / "results.json").read_text())["global_step"] == 3


def test_checkpoint_holds_trained_weights_only_and_reloads_identically(fitted):
    from crabzoo.inference.loading import load_trained

    version, probe = fitted
    ckpts = sorted((version / "checkpoints").glob("*.ckpt"))
    assert ckpts
    ckpt_path = ckpts[-1]
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"]
    report = json.loads((probe / "probe.json").read_text())["numel"]
    saved = sum(v.numel() for v in state.values())
    assert saved == report["adapter"] + report["connector"] + report.get("llm_trained", 0)
    assert not any(k.startswith("backbone.model.") and "lora" not in k for k in state)
    # float32 weights and two Adam moments of what trained, not the 540 MB of frozen LLM weights
    assert ckpt_path.stat().st_size < 3 * 4 * saved + 2e6 and saved < 0.1 * report["llm"]

    model = load_trained(str(ckpt_path))
    recorded = torch.load(probe / "probe.pt", map_location="cpu", weights_only=True)
    with torch.no_grad():
        per_sample = model(recorded["batch"])["per_sample"].float()
    torch.testing.assert_close(per_sample, recorded["per_sample"], rtol=0, atol=1e-6)


def last_checkpoint(version: Path) -> Path:
    return sorted((version / "checkpoints").glob("*.ckpt"))[-1]


def test_ask_answers_about_a_clip_from_the_adapter_only_checkpoint(fitted, avsynth_root):
    import contextlib
    import io

    from crabzoo.cli import main

    version, _ = fitted
    base = avsynth_root / "AVUIE_2" / "ks"
    record = json.loads((base / "test.json").read_text())[0]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main([
            "ask", "--ckpt_path", str(last_checkpoint(version)), "--task", "ks", "--json", "--max_new_tokens", "4",
            "--video", str(base / "video" / record["video_path"]), "--audio", str(base / "audio" / record["audio_path"]),
        ])
    answer = json.loads(out.getvalue())
    assert answer["task"] == "ks" and isinstance(answer["generation"], str) and isinstance(answer["parse_ok"], bool)


def test_export_reloads_to_the_checkpoints_losses(fitted, tmp_path):
    from crabzoo.cli import main
    from crabzoo.export import load_exported

    version, probe = fitted
    main(["export", "--ckpt_path", str(last_checkpoint(version)), "--out", str(tmp_path / "export")])
    model = load_exported(tmp_path / "export")
    recorded = torch.load(probe / "probe.pt", map_location="cpu", weights_only=True)
    with torch.no_grad():
        per_sample = model(recorded["batch"])["per_sample"].float()
    # LoRA is merged into the weights (a different summation order), I-LoRA is kept as it is
    torch.testing.assert_close(per_sample, recorded["per_sample"], rtol=0, atol=1e-4)
