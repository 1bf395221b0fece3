"""Training budget of every run of a transfer study, in optimizer steps and passes over each task's data.

Training batches hold samples of one task (:class:`crabzoo.data.datamodule.TaskBatchSampler`), so an epoch of a
run is ``Σ_t steps_per_epoch(n_t)`` steps over the tasks it trains on. Under the ``epochs`` budget (the paper's
protocol) every run trains ``E`` epochs: the single-task run of task ``t`` takes ``steps_per_epoch(n_t) · E``
steps and the multi-task run ``Σ_t steps_per_epoch(n_t) · E`` steps, so every task sees its own data ``E``
times in both regimes. Under the ``steps`` budget every run takes the same ``S`` steps, so the multi-task run
sees each task fewer times than the single-task run does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from crabzoo.errors import CrabzooError


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Optimizer steps of one pass over ``n`` samples of one task (single process, no accumulation)."""
    if batch_size < 1:
        raise CrabzooError(f"batch_size must be at least 1, not {batch_size}")
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def run_budgets(
    sizes: Mapping[str, int],
    batch_size: int,
    budget: str = "epochs",
    epochs: int = 1,
    steps: int = 100,
    drop_last: bool = False,
) -> dict[str, dict[str, Any]]:
    """Steps and passes per task of every run scope: each task alone, and ``all`` (the multi-task run).

    Args:
        sizes: Training samples per task.
        batch_size: Samples per batch.
        budget: ``epochs`` or ``steps`` (as in the study file).
        epochs: Epochs per run under ``epochs``.
        steps: Steps per run under ``steps``.
        drop_last: Each task's last incomplete batch is dropped.

    Returns:
        ``scope -> {"steps": int, "passes": {task: float}}`` with ``passes`` the number of times the run sees
        each of its tasks' data.

    Raises:
        CrabzooError: An unknown budget, or a task with no full batch.
    """
    if budget not in ("epochs", "steps"):
        raise CrabzooError(f"budget must be 'epochs' or 'steps', not {budget!r}")
    per_epoch = {task: steps_per_epoch(n, batch_size, drop_last) for task, n in sizes.items()}
    empty = sorted(task for task, s in per_epoch.items() if s == 0)
    if empty:
        raise CrabzooError(f"task(s) {empty} have fewer samples than batch_size {batch_size}; lower the batch size")
    scopes = {task: (task,) for task in sizes}
    scopes["all"] = tuple(sizes)
    out: dict[str, dict[str, Any]] = {}
    for scope, tasks in scopes.items():
        epoch_steps = sum(per_epoch[t] for t in tasks)
        total = epoch_steps * epochs if budget == "epochs" else steps
        out[scope] = {"steps": total, "passes": {t: total / epoch_steps for t in tasks}}
    return out
