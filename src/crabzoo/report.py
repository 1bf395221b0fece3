"""The per-task results table written at the end of ``fit``, ``validate`` and ``test``.

The table lists, per task, its group, every metric with the chance level where the task defines one, and
``n_parsed / n_total`` (unparsable generations and samples with unreadable media count as wrong). It is printed
and written atomically as ``results.json`` and ``results.md`` into the run directory, with the counts of samples
skipped for unreadable media. Tasks scored under a chosen protocol (segmentation masks: ``avsbench`` or
``crab_plus``) are named under ``protocols`` in ``results.json`` and below the table.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import lightning as L


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_rows(results: dict[str, dict[str, float]], chance: dict[str, dict[str, float]] | None = None) -> list[dict[str, Any]]:
    """One row per (task, metric) with the chance level (of the evaluated set) and parse counts."""
    from crabzoo.tasks import get_task

    rows = []
    for task, values in sorted(results.items()):
        group = getattr(get_task(task), "group", "")
        task_chance = (chance or {}).get(task, {})
        n_total, n_parsed = values.get("n_total"), values.get("n_parsed")
        for key, value in values.items():
            if key in ("n_total", "n_parsed"):
                continue
            rows.append(
                {
                    "task": task,
                    "group": group,
                    "metric": key,
                    "value": value,
                    "chance": task_chance.get(key),
                    "n_parsed": n_parsed,
                    "n_total": n_total,
                }
            )
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Render rows as a Markdown table."""

    def fmt(v: Any) -> str:
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
        return str(v)

    lines = ["| task | group | metric | value | chance | parsed / total |", "|---|---|---|---:|---:|---:|"]
    for r in rows:
        parsed = f"{fmt(r['n_parsed'] and int(r['n_parsed']))} / {fmt(r['n_total'] and int(r['n_total']))}"
        lines.append(f"| {r['task']} | {r['group']} | {r['metric']} | {fmt(r['value'])} | {fmt(r['chance'])} | {parsed} |")
    return "\n".join(lines) + "\n"


def protocols_markdown(protocols: dict[str, str]) -> str:
    """The line naming each task's scoring protocol ("" when no task has one)."""
    if not protocols:
        return ""
    named = ", ".join(f"{task}: {name}" for task, name in sorted(protocols.items()))
    return f"\nMask protocol: {named}.\n"


def skipped_markdown(skipped: dict[str, Any]) -> str:
    """The Markdown section of the samples skipped for unreadable media ("" when none)."""
    if not skipped.get("total"):
        return ""
    lines = [f"\n## Skipped samples (unreadable media): {skipped['total']}\n", "| split/task | skipped |", "|---|---:|"]
    lines += [f"| {key} | {n} |" for key, n in skipped["by_task"].items()]
    lines += ["", "Files:", ""] + [f"- `{path}`: {reason}" for path, reason in skipped["files"]]
    return "\n".join(lines) + "\n"


class ReportCallback(L.Callback):
    """Print and save the per-task table after validation/testing, and the samples skipped for unreadable media.

    Every batch's skipped samples (``batch["skipped"]``, filled by the collator in the data workers) are recorded
    per stage; each unreadable file is named once in a warning, and the stage's totals per split and task
    (summed across ranks) are printed at the end of ``fit`` / ``validate`` / ``test`` / ``predict`` and written
    under ``skipped`` in ``results.json`` (and as a section of ``results.md``).

    Args:
        enabled: Write the report.
        filename: Stem of the written files (``results`` -> ``results.json`` + ``results.md``).
    """

    def __init__(self, enabled: bool = True, filename: str = "results") -> None:
        from crabzoo.data.skips import SkipTally

        self.enabled = enabled
        self.filename = filename
        self.skips = SkipTally()

    def _write(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        from crabzoo.data.skips import print_summary

        skipped = self._gather_skips(stage)
        # Trainer.log_dir broadcasts rank 0's folder: read it on every rank, or rank 0 waits for the others forever
        run_dir = Path(trainer.log_dir or trainer.default_root_dir)
        if not trainer.is_global_zero:
            return
        results = getattr(module, "results", None)
        if not self.enabled or not results:
            print_summary(stage, skipped)
            return
        rows = build_rows(results, getattr(module, "chance", None))
        protocols = {t: p for t, p in (getattr(module, "protocols", None) or {}).items() if t in results}
        table = markdown_table(rows) + protocols_markdown(protocols)
        payload = {"stage": stage, "global_step": trainer.global_step, "results": results, "rows": rows,
                   "protocols": protocols, "skipped": skipped}
        atomic_write_text(run_dir / f"{self.filename}.json", json.dumps(payload, indent=2))
        atomic_write_text(
            run_dir / f"{self.filename}.md",
            f"# {stage} results (step {trainer.global_step})\n\n{table}{skipped_markdown(skipped)}",
        )
        print(f"\nPer-task {stage} results (written to {run_dir / self.filename}.md):\n\n{table}")
        print_summary(stage, skipped)

    # ------------------------------------------------------------------ skipped samples, from every batch
    def _gather_skips(self, stage: str) -> dict[str, Any]:
        """The stage's skip totals summed across ranks (call on every rank), then forgotten."""
        skipped = self.skips.gathered(stage)
        self.skips.reset(stage)
        return skipped

    def _record(self, trainer: L.Trainer, batch: Any) -> None:
        if not trainer.sanity_checking:
            self.skips.add(trainer.state.fn.value if trainer.state.fn is not None else "fit", batch)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._record(trainer, batch)

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._record(trainer, batch)

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._record(trainer, batch)

    def on_predict_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._record(trainer, batch)

    # ------------------------------------------------------------------ stage ends
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module, "fit")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._write(trainer, pl_module, "validate")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module, "test")

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from crabzoo.data.skips import print_summary

        skipped = self._gather_skips("predict")
        if trainer.is_global_zero:
            print_summary("predict", skipped)
