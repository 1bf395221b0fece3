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

For the transfer study's paired bootstrap, a metric hands out one JSON-ready state per sample
(:meth:`BenchmarkMetric.sample_states`), is rebuilt from any list of them (:meth:`BenchmarkMetric.load_sample_states`),
and, where its primary score is a ratio of sums over resampling units, says so (:meth:`BenchmarkMetric.primary_terms`):
then a thousand resamples cost two matrix products instead of a thousand ``compute`` calls.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
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


@dataclass(frozen=True)
class PrimaryTerms:
    """A primary score written as a ratio of sums over resampling units: ``score = sum(num) / sum(den)``.

    A unit is one sample, or the samples scored together (a video's frames for the AVSBench mask scores); a
    bootstrap resample draws units with replacement and weights each unit's ``num`` and ``den`` by its draws.

    Attributes:
        num: Numerator per unit (float64).
        den: Denominator per unit (float64, positive).
        units: Per unit, the positions of its samples in the order they were given to the metric.
        exact: ``True`` when the score of every resample equals the metric recomputed on the resampled units;
            ``False`` when that holds on the full set only (CIDEr-D: the document frequencies stay those of the
            full test set).
    """

    num: np.ndarray
    den: np.ndarray
    units: tuple[tuple[int, ...], ...]
    exact: bool = True

    @classmethod
    def per_sample(cls, num: Sequence[float], den: Sequence[float] | None = None, exact: bool = True) -> PrimaryTerms:
        """Terms with one unit per sample (``den`` 1 each when omitted)."""
        num_array = np.asarray(num, dtype=np.float64)
        den_array = np.ones_like(num_array) if den is None else np.asarray(den, dtype=np.float64)
        return cls(num_array, den_array, tuple((i,) for i in range(len(num_array))), exact)

    def score(self) -> float:
        """The primary score on the full set (``0.0`` when the denominators sum to 0)."""
        total = float(self.den.sum())
        return float(self.num.sum()) / total if total else 0.0


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

    # ------------------------------------------------------------------ per-sample states (bootstrap)
    def sample_states(self) -> list[dict[str, Any]] | None:
        """One ``{"row": [...] | None, "record": ... | None}`` per evaluated sample, or ``None``.

        ``None`` when the state is not one row and/or one record per sample (then a resample cannot be rebuilt).
        """
        n = int(self.n_total)
        rows = self._all_rows().cpu().tolist() if self.row_width else []
        records = self._all_records()
        if n == 0 or len(rows) not in (0, n) or len(records) not in (0, n) or not (rows or records):
            return None
        return [{"row": rows[i] if rows else None, "record": records[i] if records else None} for i in range(n)]

    def load_sample_states(self, states: Sequence[dict[str, Any]]) -> None:
        """Reset, then hold exactly ``states`` (from :meth:`sample_states`, in any order, repeats allowed).

        Every restored sample counts as parsed: an unparsed one is already scored as wrong in its state.
        """
        self.reset()
        device = self.n_total.device
        rows = [s["row"] for s in states if s.get("row") is not None]
        if rows:
            self.rows.append(torch.tensor(rows, dtype=torch.float64, device=device))
        records = [s["record"] for s in states if s.get("record") is not None]
        if records:
            self._push_records(records)
        self.n_total += len(states)
        self.n_parsed += len(states)
        self._update_count = 1

    def primary_terms(self) -> PrimaryTerms | None:
        """The primary score as :class:`PrimaryTerms` over the samples held, or ``None`` (no such form).

        Subclasses whose primary score is a mean or a pooled ratio override this; ``None`` makes the bootstrap
        recompute the metric on every resample instead.
        """
        return None


def as_float(value: float) -> Tensor:
    """A float64 scalar tensor (the dtype every score is reported in)."""
    return torch.tensor(float(value), dtype=torch.float64)
