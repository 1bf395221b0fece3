"""``save_frozen: false`` keeps only what trains in a checkpoint, and loading puts the frozen values back."""

from __future__ import annotations

import copy

import lightning as L
import torch
import yaml

from crabzoo.inference.loading import model_from_configs
from crabzoo.paradigms.base import AVLLM


def tiny_model(tmp_path, save_frozen: bool) -> AVLLM:
    """paradigms/tiny/mlp.yaml with a LoRA adapter and only the connectors + adapter training."""
    from pathlib import Path

    base = yaml.safe_load((Path(__file__).resolve().parents[2] / "paradigms" / "tiny" / "mlp.yaml").read_text())
    init = base["model"]["init_args"]
    init["adapter"] = {"class_path": "crabzoo.adapters.LoRA", "init_args": {"rank": 4, "alpha": 8}}
    init["train_groups"] = ["connector"]
    init["save_frozen"] = save_frozen
    path = tmp_path / f"model_{save_frozen}.yaml"
    path.write_text(yaml.safe_dump(base))
    torch.manual_seed(0)
    model, _ = model_from_configs([path])
    return model


def test_checkpoint_without_frozen_weights_reloads_identically(tmp_path):
    model = tiny_model(tmp_path, save_frozen=False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = model.frozen_parameter_names()
    assert trainable and frozen and not trainable & frozen
    with torch.no_grad():  # what a few training steps would do to the trained parameters
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    ckpt_path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt_path)
    ckpt = torch.load(ckpt_path, weights_only=True, map_location="cpu")
    saved = set(ckpt["state_dict"])
    params = dict(model.named_parameters())
    assert {k for k in saved if k in params} == trainable  # every trained parameter, no frozen one
    assert set(ckpt["crabzoo_frozen_omitted"]) == frozen

    full = tiny_model(tmp_path, save_frozen=True)
    trainer.strategy.connect(full)
    full_path = tmp_path / "full.ckpt"
    trainer.save_checkpoint(full_path)
    assert ckpt_path.stat().st_size < full_path.stat().st_size / 2

    fresh = tiny_model(tmp_path, save_frozen=False)  # same seed: the frozen weights rebuild identically
    fresh.on_load_checkpoint(ckpt)
    fresh.load_state_dict(ckpt["state_dict"], strict=True)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[name], value, rtol=0, atol=0, msg=name)
