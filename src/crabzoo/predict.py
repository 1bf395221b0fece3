"""``crabzoo predict`` output: one JSON line per sample in ``<run dir>/predictions.jsonl``.

Each record holds the sample's ``id`` (``<task>/<split>/<index>``), ``task``, the ``prompt`` the model saw
(chat template and media placeholders included), the raw ``generation``, the parsed ``answer`` (``null`` when
the parser cannot read the text) and ``parse_ok`` (with ``parse_error`` when false). Samples whose media could
not be read get a record with an empty generation and the file and reason in ``parse_error``. The file is what
``crabzoo evaluate --predictions`` reads (it matches records by ``id`` and reads the text from ``generation``).

In a multi-process run every rank predicts its share of the batches; rank 0 gathers the records, sorts them
by task and id, and writes the file once, so one and many processes write the same file.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import lightning as L

PREDICTIONS_NAME = "predictions.jsonl"
"""File name of the predictions, in the run directory."""


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (dataclasses as dicts, tuples as lists, tensors and arrays as lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def prediction_record(sample_id: str, task: str, prompt: str | None, generation: str) -> dict[str, Any]:
    """The record of one generation, with the task parser's answer.

    Args:
        sample_id: The sample's id.
        task: Its task name.
        prompt: The prompt text the model saw.
        generation: The decoded generation.
    """
    from crabzoo.tasks import get_task
    from crabzoo.tasks.base import ParseFailure

    parsed = get_task(task).parse(generation)
    record: dict[str, Any] = {"id": sample_id, "task": task, "prompt": prompt, "generation": generation}
    if isinstance(parsed, ParseFailure):
        return {**record, "answer": None, "parse_ok": False, "parse_error": parsed.reason}
    return {**record, "answer": jsonable(parsed), "parse_ok": True}


def skipped_record(skipped: dict[str, Any]) -> dict[str, Any]:
    """The record of a sample whose media could not be read (an entry of ``batch["skipped"]``)."""
    return {
        "id": skipped["id"], "task": skipped["task"], "prompt": None, "generation": "", "answer": None,
        "parse_ok": False, "parse_error": f"unreadable media: {skipped['file']}: {skipped['reason']}",
    }


def _natural(text: str) -> list[Any]:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", text) if p]


def sort_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records by task, then id in natural order (``ks/test/2`` before ``ks/test/10``); one per id."""
    unique: dict[str, dict[str, Any]] = {}
    for record in records:
        unique.setdefault(str(record["id"]), record)
    return sorted(unique.values(), key=lambda r: (str(r["task"]), _natural(str(r["id"]))))


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """One JSON object per line, written atomically."""
    from crabzoo.report import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def gather_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rank's records, on every rank (this process's alone when not distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(records)
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, list(records))
    return [r for part in parts for r in part]


class PredictionWriter(L.Callback):
    """crabzoo predict writes one JSON line per sample to <default_root_dir>/version_N/predictions.jsonl.

    ``version_N`` is the predict run's own directory (beside its ``config.yaml``); see :mod:`crabzoo.predict`.

    The records are what the paradigm's ``predict_step`` returns for each batch; they are gathered from every
    rank, sorted by task and id, and written once by rank 0 (atomically).

    Args:
        enabled: Write the file.
        filename: File name inside the predict run's directory (``trainer.log_dir``).
    """

    def __init__(self, enabled: bool = True, filename: str = PREDICTIONS_NAME) -> None:
        self.enabled = enabled
        self.filename = filename
        self.records: list[dict[str, Any]] = []
        self.path: Path | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.records = []

    def on_predict_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self.enabled and outputs:
            self.records.extend(r for r in outputs if isinstance(r, dict) and "id" in r)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled:
            return
        records = sort_records(gather_records(self.records))
        self.records = []
        self.path = Path(trainer.log_dir or trainer.default_root_dir) / self.filename  # log_dir: call on every rank
        if not trainer.is_global_zero:
            return
        write_jsonl(self.path, records)
        parsed = sum(bool(r["parse_ok"]) for r in records)
        print(f"crabzoo predict: wrote {len(records)} predictions ({parsed} parsed) to {self.path}")
