"""Per-sample evaluation records of a run, so a transfer Δ can be bootstrapped over test samples.

:class:`SampleRecorder` (added to every run of a transfer study) copies, at the end of each validation, every
task metric's per-sample state (its ``rows`` and ``records``, see :mod:`crabzoo.metrics.base`) with the sample
ids into ``samples.json`` next to the run's ``results.json``, with the run's trainable parameters per module group
and the training samples seen per task (from :class:`crabzoo.monitor.TaskCounter` when the run has one). :func:`recompute` puts a subset of those
per-sample states back into a fresh metric of the task and calls its ``compute``: the task's own metric,
evaluated on a bootstrap resample.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning as L
SAMPLES = "samples.json"
"""File name of the per-sample records in a run's log directory."""


def metric_samples(metric: Any) -> list[dict[str, Any]] | None:
    """The metric's per-sample states (:meth:`~crabzoo.metrics.base.BenchmarkMetric.sample_states`), or ``None``."""
    if not hasattr(metric, "sample_states"):
        return None
    return metric.sample_states()


def recompute(metric: Any, samples: list[dict[str, Any]]) -> dict[str, float]:
    """The metric's ``compute`` on exactly ``samples`` (states from :func:`metric_samples`); resets it first."""
    metric.load_sample_states(samples)
    return {k: float(v) for k, v in metric.compute().items()}


def trainable_parameters(module: Any) -> dict[str, int]:
    """Trainable parameters per module group (``module_groups()`` when the module has it) and in ``total``.

    With a frozen LLM the ``llm`` group's trainable parameters are its adapter's (LoRA or I-LoRA).
    """
    counts: dict[str, int] = {}
    if hasattr(module, "module_groups"):
        for name, group in module.module_groups().items():
            counts[name] = sum(p.numel() for p in group.parameters() if p.requires_grad)
    counts["total"] = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return counts


def seen_per_task(trainer: L.Trainer) -> dict[str, int]:
    """Training samples seen per task, from the trainer's :class:`~crabzoo.monitor.TaskCounter` (empty if none)."""
    from crabzoo.monitor import TaskCounter

    for callback in trainer.callbacks:
        if isinstance(callback, TaskCounter):
            return {task: int(n) for task, n in sorted(callback.counts.items())}
    return {}


class SampleRecorder(L.Callback):
    """Write ``samples.json``: per task, the ids and per-sample metric states of the last validation.

    Only single-process runs are recorded (with several processes the order of the gathered states is not the
    order of the ids seen here).
    """

    def __init__(self) -> None:
        self._ids: dict[str, list[Any]] = defaultdict(list)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._ids = defaultdict(list)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if not isinstance(batch, dict) or "tasks" not in batch:
            return
        ids = batch.get("ids") or [None] * len(batch["tasks"])
        for task, sample_id in zip(batch["tasks"], ids):
            self._ids[task].append(sample_id if sample_id is None else str(sample_id))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.world_size > 1 or not trainer.is_global_zero:
            return
        from crabzoo.report import atomic_write_text

        tasks: dict[str, Any] = {}
        for task, metric in getattr(pl_module, "val_metrics", {}).items():
            samples = metric_samples(metric)
            ids = self._ids.get(task, [])
            if samples is None or len(samples) != len(ids):
                continue
            if any(i is None for i in ids):
                ids = [str(i) for i in range(len(ids))]
            tasks[task] = {"ids": ids, "samples": samples}
        if tasks:
            run_dir = Path(trainer.log_dir or trainer.default_root_dir)
            payload = {
                "global_step": trainer.global_step,
                "trainable_parameters": trainable_parameters(pl_module),
                "seen": seen_per_task(trainer),
                "tasks": tasks,
            }
            atomic_write_text(run_dir / SAMPLES, json.dumps(payload, default=str))
