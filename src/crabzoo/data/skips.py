"""Samples skipped because their media could not be decoded: the item, the strict-mode error and the tally.

A data worker turns a sample whose media fail into a small *skipped item* (:func:`skipped_item`: task, id,
truth, file, reason) instead of dropping it; the collator moves these into ``batch["skipped"]``, so the main
process learns of every skip even when workers do the decoding. :class:`SkipTally` (kept by
:class:`crabzoo.report.ReportCallback`) warns once per file per process, counts skips per stage, split and task,
sums the counts across ranks and reports them at the end of the run. At validation and test the paradigm also
scores every skipped sample as an unparsed (wrong) prediction of its task (:func:`skipped_predictions`).
"""

from __future__ import annotations

import sys
import warnings
from collections import defaultdict
from typing import Any

from crabzoo.errors import CrabzooError

SKIPPED_KEY = "skipped"
"""Key marking a skipped item, and the batch key of the skipped samples' records."""

_WARNED: set[str] = set()
"""Files already named in a warning by this process."""


class SkippedMediaWarning(UserWarning):
    """A sample was skipped because one of its media files cannot be read (one warning per file per process)."""


class CorruptMediaError(CrabzooError):
    """Strict mode: a sample's media could not be decoded (one line, also when raised in a data worker).

    PyTorch re-raises a worker's exception as ``type(err)(text)``, where ``text`` holds the worker's traceback;
    this class keeps only the original message (the traceback's last line), so the CLI still prints one line.

    Args:
        message: The message, or the re-raised worker text.
    """

    def __init__(self, message: str) -> None:
        if "Traceback (most recent call last)" in message:
            last = [ln for ln in message.strip().splitlines() if ln.strip()][-1]
            prefix = f"{type(self).__module__}.{type(self).__qualname__}: "
            message = last.split(prefix, 1)[1] if prefix in last else last
        super().__init__(message)


def skipped_item(sample: Any, path: str, reason: str) -> dict[str, Any]:
    """The item a dataset returns for a sample whose media failed (counted and scored, never silently dropped)."""
    return {
        SKIPPED_KEY: True,
        "id": sample.id,
        "task": sample.task,
        "split": getattr(sample, "split", ""),
        "truth": sample.truth,
        "file": str(path),
        "reason": str(reason),
    }


def is_skipped(item: Any) -> bool:
    """True for ``None`` or a :func:`skipped_item`."""
    return item is None or (isinstance(item, dict) and bool(item.get(SKIPPED_KEY)))


def split_skipped(items: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(kept, skipped)``: the decoded items, and the records of the skipped ones (without the marker key).

    A bare ``None`` (a skip from a dataset that returns nothing) is counted by the caller but has no record.
    """
    kept = [it for it in items if not is_skipped(it)]
    skipped = [{k: v for k, v in it.items() if k != SKIPPED_KEY} for it in items if it is not None and is_skipped(it)]
    return kept, skipped


def skipped_predictions(batch: dict[str, Any]) -> dict[str, tuple[list[Any], list[Any]]]:
    """Per task, one :class:`~crabzoo.tasks.base.ParseFailure` and the truth for every skipped sample of a batch."""
    from crabzoo.tasks.base import ParseFailure

    out: dict[str, tuple[list[Any], list[Any]]] = defaultdict(lambda: ([], []))
    for rec in batch.get(SKIPPED_KEY) or []:
        preds, truths = out[rec["task"]]
        preds.append(ParseFailure(f"media unreadable: {rec['file']}: {rec['reason']}"))
        truths.append(rec["truth"])
    return dict(out)


class SkipTally:
    """Skipped samples of one process, by stage (``fit``, ``validate``, ...) and ``split`` / ``task``."""

    def __init__(self) -> None:
        self.records: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def add(self, stage: str, batch: Any) -> None:
        """Record a batch's skipped samples under ``stage`` and warn once per file per process."""
        if not isinstance(batch, dict):
            return
        for rec in batch.get(SKIPPED_KEY) or []:
            entry = {k: rec.get(k) for k in ("task", "id", "split", "file", "reason")}
            self.records[stage].append(entry)
            if entry["file"] not in _WARNED:
                _WARNED.add(entry["file"])
                warnings.warn(
                    f"skipped sample {entry['id']} ({entry['task']}): cannot read {entry['file']}: {entry['reason']}",
                    SkippedMediaWarning,
                    stacklevel=2,
                )

    def gathered(self, stage: str) -> dict[str, Any]:
        """``{"total", "by_task", "files"}`` of ``stage`` over all ranks (call on every rank); each sample once."""
        records = list(self.records.get(stage, []))
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, records)
            records = [r for part in parts for r in part]
        unique = {(rec["split"], rec["task"], rec["id"]): rec for rec in records}  # each sample once, whatever the epochs
        records = list(unique.values())
        by_task: dict[str, int] = defaultdict(int)
        for rec in records:
            by_task[f"{rec['split'] or stage}/{rec['task']}"] += 1
        files = sorted({(rec["file"], rec["reason"]) for rec in records})
        return {"total": len(records), "by_task": dict(sorted(by_task.items())), "files": [list(f) for f in files]}

    def reset(self, stage: str) -> None:
        """Forget ``stage``'s records."""
        self.records.pop(stage, None)


def summary_lines(stage: str, skipped: dict[str, Any]) -> list[str]:
    """The printed lines of a stage's skip totals (empty when nothing was skipped)."""
    if not skipped.get("total"):
        return []
    lines = [f"Skipped {skipped['total']} sample(s) with unreadable media during {stage}:"]
    lines += [f"  {key}: {n}" for key, n in skipped["by_task"].items()]
    return lines


def print_summary(stage: str, skipped: dict[str, Any]) -> None:
    """Print :func:`summary_lines` to stdout (nothing when no sample was skipped)."""
    lines = summary_lines(stage, skipped)
    if lines:
        print("\n" + "\n".join(lines), file=sys.stdout, flush=True)
