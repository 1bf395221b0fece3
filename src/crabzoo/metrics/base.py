"""Shared machinery of the benchmark metrics.

Every metric in :mod:`crabzoo.metrics` is a :class:`BenchmarkMetric`: a ``torchmetrics.Metric`` whose states are
tensors with a ``sum`` or ``cat`` reduction, so ``sync`` across processes and ``merge_state`` give the same result
as one process seeing all samples. Each metric:

* takes parser outputs (``None`` or a :class:`~crabzoo.tasks.base.ParseFailure` for an unparsable generation)
  and ground truths in ``update(preds, targets)``;
* counts every sample in ``n_total`` and the readable ones in ``n_parsed``; an unparsable sample is scored as a
  wrong answer, never dropped;
* declares ``primary`` (the headline key) and ``higher_is_better`` (key -> direction) for the transfer study.

Two kinds of state cover every metric: ``rows`` (one float64 row of per-sample scores per sample, for metrics
that are means or pooled sums of per-sample quantities) and ``records`` (JSON records stored as UTF-8 bytes, for
metrics that need the whole evaluated set, e.g. CIDEr-D's document frequencies or a label vocabulary).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor
from torchmetrics import Metric

from crabzoo.errors import CrabzooError
from crabzoo.tasks.base import ParseFailure

_SPACES = re.compile(r"\s+")


def is_unparsed(pred: Any) -> bool:
    """True for a generation the parser could not read (``None`` or a :class:`ParseFailure`)."""
    return pred is None or isinstance(pred, ParseFailure)


def normalize_text(text: str) -> str:
    """Strip, lower-case and collapse runs of whitespace to one space."""
    return _SPACES.sub(" ", str(text).strip().lower())


def field(value: Any, keys: Sequence[str], what: str) -> Any:
    """``value`` itself, or the first of ``keys`` present when ``value`` is a dict (a task's truth record).

    Raises:
        CrabzooError: ``value`` is a dict without any of ``keys``.
    """
    if isinstance(value, dict):
        for key in keys:
            if key in value:
                return value[key]
        raise CrabzooError(f"{what}: record has none of the keys {list(keys)}; got {sorted(value)}")
    return value


def check_lengths(preds: Sequence[Any], targets: Sequence[Any], what: str) -> None:
    """Raise :class:`CrabzooError` unless ``preds`` and ``targets`` have the same length."""
    if len(preds) != len(targets):
        raise CrabzooError(f"{what}.update: {len(preds)} predictions but {len(targets)} targets; pass one per sample")


class BenchmarkMetric(Metric):
    """Base class: ``n_total`` / ``n_parsed`` counters plus ``rows`` and ``records`` states.

    Attributes:
        primary: Key of the headline value in :meth:`compute`'s output.
        higher_is_better: Direction of every score key (``n_total`` / ``n_parsed`` excluded).
        reference: The reference implementation reproduced (repository, file, function).
        row_width: Number of per-sample values pushed by :meth:`_push_row` (0 when unused).
    """

    full_state_update: ClassVar[bool] = False
    is_differentiable: ClassVar[bool] = False
    primary: str = ""
    higher_is_better: ClassVar[dict[str, bool]] = {}  # type: ignore[assignment]
    reference: ClassVar[str] = ""
    row_width: ClassVar[int] = 0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("n_total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("n_parsed", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("rows", default=[], dist_reduce_fx="cat")
        self.add_state("records", default=[], dist_reduce_fx="cat")
        self.add_state("record_lengths", default=[], dist_reduce_fx="cat")

    # ------------------------------------------------------------------ counters
    def _count(self, preds: Sequence[Any]) -> None:
        parsed = sum(0 if is_unparsed(p) else 1 for p in preds)
        self.n_total += len(preds)
        self.n_parsed += parsed

    def _counts(self) -> dict[str, Tensor]:
        return {"n_total": self.n_total.clone(), "n_parsed": self.n_parsed.clone()}

    # ------------------------------------------------------------------ numeric rows
    def _push_rows(self, rows: Sequence[Sequence[float]]) -> None:
        if rows:
            self.rows.append(torch.tensor(rows, dtype=torch.float64, device=self.n_total.device))

    def _all_rows(self) -> Tensor:
        rows = self.rows
        if isinstance(rows, Tensor):
            return rows.reshape(-1, self.row_width).double()
        if not rows:
            return torch.zeros(0, self.row_width, dtype=torch.float64, device=self.n_total.device)
        return torch.cat([r.reshape(-1, self.row_width) for r in rows]).double()

    # ------------------------------------------------------------------ JSON records
    def _push_records(self, records: Sequence[Any]) -> None:
        device = self.n_total.device
        for record in records:
            data = json.dumps(record, ensure_ascii=False).encode("utf-8")
            self.records.append(torch.tensor(list(data), dtype=torch.uint8, device=device))
            self.record_lengths.append(torch.tensor([len(data)], dtype=torch.long, device=device))

    def _all_records(self) -> list[Any]:
        data, lengths = self.records, self.record_lengths
        if isinstance(data, list):
            if not data:
                return []
            data, lengths = torch.cat(data), torch.cat(lengths)
        blob = bytes(data.cpu().tolist())
        out, offset = [], 0
        for n in lengths.cpu().tolist():
            out.append(json.loads(blob[offset : offset + n].decode("utf-8")))
            offset += n
        return out


def as_float(value: float) -> Tensor:
    """A float64 scalar tensor (the dtype every score is reported in)."""
    return torch.tensor(float(value), dtype=torch.float64)
