"""Router telemetry: mean gate per task × layer × head, accumulated during validation.

Usage by a LightningModule (the exact calls)::

    tel = adapter.telemetry
    # on_validation_epoch_start
    tel.reset(); tel.enable()
    # validation_step, before the forward
    tel.start(batch_task_names, mask=attention_mask)   # mask (B, L), optional
    # on_validation_epoch_end
    summary = tel.summary(); tel.save(run_dir / "router_telemetry" / f"epoch={epoch:03d}.json"); tel.disable()

A layer whose input has a leading dimension equal to the number of samples (``(B, L, d)``, the LLM) is
attributed per sample to that sample's task, counting only tokens where ``mask`` is true when the mask has
shape ``(B, L)``. Layers with other input layouts (e.g. an encoder that flattens or re-batches its inputs)
are pooled under the task ``"(all)"``. Sums stay on the device; nothing synchronises until :meth:`summary`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from torch import Tensor

ALL_TASKS = "(all)"
FORMAT = "crabzoo.router_telemetry/1"


class RouterTelemetry:
    """Accumulates mean router gates per task, layer and head while enabled."""

    def __init__(self) -> None:
        self.enabled = False
        self.tasks: list[str] = []
        self._sample_tasks: Tensor | None = None
        self._mask: Tensor | None = None
        self._token_tasks: Tensor | None = None
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, Tensor] = {}

    def enable(self) -> None:
        """Start recording gates on every forward (validation)."""
        self.enabled = True

    def disable(self) -> None:
        """Stop recording; accumulated sums are kept until :meth:`reset`."""
        self.enabled = False
        self._sample_tasks, self._mask, self._token_tasks = None, None, None

    def reset(self) -> None:
        """Forget all accumulated sums."""
        self.tasks, self._sums, self._counts = [], {}, {}
        self._sample_tasks, self._mask, self._token_tasks = None, None, None

    def _task_index(self, name: str) -> int:
        if name not in self.tasks:
            self.tasks.append(name)
        return self.tasks.index(name)

    def start(
        self, task_names_per_sample: list[str], mask: Tensor | None = None, sample_of_token: Tensor | None = None
    ) -> None:
        """Declare the task of each sample of the next forward, and optionally which tokens count.

        Args:
            task_names_per_sample: One task name per sample of the batch.
            mask: ``(B, L)`` bool/int tensor, true for real tokens (e.g. the attention mask).
            sample_of_token: For packed rows (several samples per row), the sample index of every token
                ``(R, L)``, ``-1`` on padding: each token counts for its own sample's task (``mask`` is ignored).
        """
        tasks = torch.tensor([self._task_index(t) for t in task_names_per_sample], dtype=torch.long)
        self._sample_tasks, self._mask = tasks, mask
        self._token_tasks = None
        if sample_of_token is not None:
            self._token_tasks = tasks.to(sample_of_token.device)[sample_of_token.clamp(min=0)]
            self._mask = sample_of_token >= 0

    def _grow(self, layer: str, n_heads: int, device: torch.device) -> tuple[Tensor, Tensor]:
        n_tasks = len(self.tasks)
        sums = self._sums.get(layer)
        if sums is None:
            sums = torch.zeros(0, n_heads, dtype=torch.float64, device=device)
            self._counts[layer] = torch.zeros(0, dtype=torch.float64, device=device)
        if sums.shape[0] < n_tasks:
            pad = n_tasks - sums.shape[0]
            sums = torch.cat([sums, sums.new_zeros(pad, n_heads)])
            self._counts[layer] = torch.cat([self._counts[layer], sums.new_zeros(pad)])
        self._sums[layer] = sums
        return sums, self._counts[layer]

    @torch.no_grad()
    def record(self, layer: str, gates: Tensor) -> None:
        """Add the gates ``(..., N)`` of one layer's forward (called by the layers)."""
        if not self.enabled:
            return
        gates = gates.detach().to(torch.float64)
        n = gates.shape[-1]
        tasks = self._sample_tasks
        token_tasks = self._token_tasks
        if token_tasks is not None and tuple(gates.shape[:-1]) == tuple(token_tasks.shape):
            weight = self._mask.to(device=gates.device, dtype=gates.dtype).reshape(-1)
            idx = token_tasks.to(gates.device).reshape(-1)
            sums, counts = self._grow(layer, n, gates.device)
            sums.index_add_(0, idx, gates.reshape(-1, n) * weight.unsqueeze(-1))
            counts.index_add_(0, idx, weight)
        elif tasks is not None and gates.dim() >= 3 and gates.shape[0] == tasks.numel():
            per_sample = gates.reshape(gates.shape[0], -1, n)
            weight = torch.ones(per_sample.shape[:2], dtype=gates.dtype, device=gates.device)
            mask = self._mask
            if mask is not None and tuple(mask.shape) == tuple(per_sample.shape[:2]):
                weight = mask.to(device=gates.device, dtype=gates.dtype)
            sums, counts = self._grow(layer, n, gates.device)
            idx = tasks.to(gates.device)
            sums.index_add_(0, idx, (per_sample * weight.unsqueeze(-1)).sum(dim=1))
            counts.index_add_(0, idx, weight.sum(dim=1))
        else:
            i = self._task_index(ALL_TASKS)
            sums, counts = self._grow(layer, n, gates.device)
            flat = gates.reshape(-1, n)
            sums[i] += flat.sum(dim=0)
            counts[i] += flat.shape[0]

    def summary(self) -> dict:
        """``{"format", "tasks", "layers", "mean_gate": {task: {layer: [g_1..g_N]}}, "tokens": {...}}``."""
        layers = list(self._sums)
        mean: dict[str, dict[str, list[float]]] = {t: {} for t in self.tasks}
        tokens: dict[str, dict[str, int]] = {t: {} for t in self.tasks}
        for layer in layers:
            sums, counts = self._sums[layer].cpu(), self._counts[layer].cpu()
            for i, task in enumerate(self.tasks):
                if i < counts.numel() and counts[i] > 0:
                    mean[task][layer] = (sums[i] / counts[i]).tolist()
                    tokens[task][layer] = int(counts[i])
        tasks = [t for t in self.tasks if mean[t]]
        return {
            "format": FORMAT,
            "tasks": tasks,
            "layers": layers,
            "mean_gate": {t: mean[t] for t in tasks},
            "tokens": {t: tokens[t] for t in tasks},
        }

    def save(self, path: str | Path) -> Path:
        """Write :meth:`summary` as JSON (atomically); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(self.summary(), f, indent=1)
        os.replace(tmp, path)
        return path
