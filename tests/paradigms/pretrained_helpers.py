"""A callback that records what a fit changed, for the pretrained-paradigm tests.

``FitProbe`` snapshots every parameter when training starts; when the fit ends it writes ``probe.json`` (the
largest change of each parameter group) and ``probe.pt`` (the first validation batch and the model's per-sample
loss on it, in eval mode) into ``out``, so a test can compare a reloaded checkpoint with the model that wrote it.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch


def group_of(name: str, trainable: bool) -> str:
    """``adapter`` / ``connector`` / ``llm`` / ``encoder`` (by parameter name and whether it trains)."""
    if "lora" in name or "router" in name:
        return "adapter"
    if "connector" in name:
        return "connector"
    if name.startswith("backbone."):
        return "llm" if not trainable else "llm_trained"
    return "encoder" if "encoder" in name else "other"


class FitProbe(L.Callback):
    """Record the per-group parameter change of a fit and the model's loss on one validation batch.

    Args:
        out: Folder of ``probe.json`` and ``probe.pt``.
    """

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.before: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.before = {n: p.detach().clone() for n, p in pl_module.named_parameters()}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        change: dict[str, float] = {}
        counts: dict[str, int] = {}
        for name, p in pl_module.named_parameters():
            group = group_of(name, p.requires_grad)
            diff = float((p.detach() - self.before[name]).abs().max())
            change[group] = max(change.get(group, 0.0), diff)
            counts[group] = counts.get(group, 0) + p.numel()
        batch = next(iter(trainer.datamodule.val_dataloader()))
        pl_module.eval()
        with torch.no_grad():
            per_sample = pl_module(batch)["per_sample"].float()
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "probe.json").write_text(json.dumps({"max_change": change, "numel": counts}))
        torch.save({"batch": batch, "per_sample": per_sample}, self.out / "probe.pt")
