"""Training-time measurements as Lightning callbacks: throughput/MFU and per-task sample counts.

:class:`ThroughputMonitor` logs ``perf/samples_per_s``, ``perf/tokens_per_s`` (all ranks together) and, on a GPU
whose peak is known (or given), ``perf/mfu``: achieved model FLOP/s per device over the device's dense bf16 peak,
with the usual ``6 · N`` FLOPs per token (forward + backward, N = parameters without the embedding tables).
With a frozen base and an adapter the backward skips the weight gradients of the base (about ``4 · N``), so the
``6 · N`` figure is the conventional upper estimate used to compare runs, not a count of executed FLOPs.

:class:`TaskCounter` counts the samples of each task the model has trained on (summed over ranks, restored on
resume) and logs them as ``data/seen/<task>``; the transfer report reads them.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any

import lightning as L
import torch
from torch import nn

PEAK_BF16_FLOPS: dict[str, float] = {
    "H200": 989.4e12,
    "H100 SXM": 989.4e12,
    "H100 80GB HBM3": 989.4e12,
    "H100 NVL": 835.0e12,
    "H100 PCIe": 756.0e12,
    "H100": 989.4e12,
    "A100": 312.0e12,
    "L40S": 362.1e12,
    "L4": 121.0e12,
    "A10G": 70.0e12,
}
"""Dense bf16 tensor-core peak FLOP/s by device-name fragment (first match in this order wins)."""


def peak_flops(device: torch.device | str | None = None) -> float | None:
    """Dense bf16 peak of a CUDA device from its name, or ``None`` (CPU or unknown GPU)."""
    if not torch.cuda.is_available():
        return None
    device = torch.device(device) if device is not None else torch.device("cuda")
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, value in PEAK_BF16_FLOPS.items():
        if fragment in name:
            return value
    return None


def count_parameters(model: nn.Module, exclude_embeddings: bool = True) -> int:
    """Parameters of a model (global sizes for sharded ``DTensor`` parameters), without embedding tables."""
    skip: set[int] = set()
    if exclude_embeddings:
        for m in model.modules():
            if isinstance(m, nn.Embedding):
                skip.update(id(p) for p in m.parameters(recurse=False))
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def batch_counts(batch: Any) -> tuple[int, int]:
    """``(samples, tokens)`` of a batch.

    crabzoo batches (a dict with an ``input_ids`` list of unpadded sequences) count their real tokens; other
    dicts and tuples count the first 2-D integer tensor (token ids) they hold.
    """
    if isinstance(batch, dict) and "input_ids" in batch:
        ids = batch["input_ids"]
        if isinstance(ids, torch.Tensor):
            mask = batch.get("attention_mask")
            return ids.shape[0], int(mask.sum()) if mask is not None else ids.numel()
        return len(ids), int(sum(t.numel() for t in ids))
    values = list(batch.values()) if isinstance(batch, dict) else list(batch) if isinstance(batch, (list, tuple)) else [batch]
    for v in values:
        if isinstance(v, torch.Tensor) and v.dim() == 2 and not v.is_floating_point():
            return v.shape[0], v.numel()
    first = next((v for v in values if isinstance(v, torch.Tensor)), None)
    return (first.shape[0], 0) if first is not None else (0, 0)


class ThroughputMonitor(L.Callback):
    """Logs samples/s, tokens/s and MFU of the training steps over a sliding window.

    Args:
        window: Steps averaged per measurement.
        flops_per_token: FLOPs per trained token (default ``6 · N`` of the model).
        peak: Peak FLOP/s of one device (default: from the GPU name; ``None`` on CPU: no MFU).
        log_every_n_steps: Logging period in optimizer steps.
    """

    def __init__(
        self, window: int = 20, flops_per_token: float | None = None, peak: float | None = None, log_every_n_steps: int = 10
    ) -> None:
        self.window = window
        self.flops_per_token = flops_per_token
        self.peak = peak
        self.log_every_n_steps = max(1, log_every_n_steps)
        self.history: deque[tuple[float, int, int]] = deque(maxlen=window)
        self.last: dict[str, float] = {}
        self._start: float | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.peak is None:
            self.peak = peak_flops(pl_module.device if pl_module.device.type == "cuda" else None)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.flops_per_token is None:
            self.flops_per_token = 6.0 * count_parameters(pl_module)

    def _sync(self, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._sync(pl_module)
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._start is None:
            return
        self._sync(pl_module)
        samples, tokens = batch_counts(batch)
        self.history.append((time.perf_counter() - self._start, samples, tokens))
        if len(self.history) < min(self.window, 2) or trainer.global_step % self.log_every_n_steps:
            return
        self.last = self.compute(trainer.world_size)
        for name, value in self.last.items():
            pl_module.log(f"perf/{name}", value, on_step=True, on_epoch=False, rank_zero_only=True)

    def compute(self, world_size: int = 1) -> dict[str, float]:
        """Rates over the window: all-rank samples/s and tokens/s, per-device MFU when the peak is known."""
        seconds = sum(h[0] for h in self.history) or 1e-12
        samples = sum(h[1] for h in self.history)
        tokens = sum(h[2] for h in self.history)
        out = {"samples_per_s": world_size * samples / seconds, "tokens_per_s": world_size * tokens / seconds}
        if self.peak and self.flops_per_token:
            out["mfu"] = self.flops_per_token * tokens / seconds / self.peak
        return out


class TaskCounter(L.Callback):
    """Counts trained samples per task (``batch["tasks"]``) over all ranks; kept in checkpoints.

    The task names of each batch are gathered from every rank (one small collective per step), so every rank
    holds the global counts and the checkpoint written by rank 0 restores them exactly.

    Attributes:
        counts: Task -> samples seen by all ranks.
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        tasks = list(batch["tasks"]) if isinstance(batch, dict) and "tasks" in batch else []
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, tasks)
            tasks = [t for part in gathered for t in part]
        self.counts.update(tasks)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for task, n in sorted(self.counts.items()):
            pl_module.log(f"data/seen/{task}", float(n), rank_zero_only=True)

    def state_dict(self) -> dict[str, Any]:
        return {"counts": dict(self.counts)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.counts = Counter(state_dict.get("counts", {}))
