"""Ref-AVS null split: the S metric (lower is better).

Reference: GeWu-Lab/Ref-AVS ``utils/utility.py`` function ``metric_s_for_null`` and its use in the test loop:
on the null split no object is referred to, so the ideal mask is empty. Per sample (all its frames together),
``S = sqrt(#foreground pixels / #pixels)`` with foreground = ``sigmoid(logit) > 0.5``; the split's value is the
mean of S over samples (the reference weights by frame count, equal for every Ref-AVS clip).

An unparsable prediction scores S = 1 (a full mask), the worst value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from crabzoo.metrics.base import BenchmarkMetric, as_float, field, is_unparsed


def metric_s_for_null(pred: Tensor, from_logits: bool = True) -> float:
    """S of one sample: square root of the predicted-foreground share of all its pixels.

    Args:
        pred: Masks of any shape (``[F, H, W]``, ``[S, T, H, W]``), logits by default.
        from_logits: Apply the sigmoid first (the reference does).
    """
    pred = torch.as_tensor(pred).float()
    prob = torch.sigmoid(pred) if from_logits else pred
    foreground = (prob > 0.5).int().sum()
    return float(torch.sqrt(foreground / pred.numel()))


class RefAVSNullMetric(BenchmarkMetric):
    """Ref-AVS null-split S (mean over samples of sqrt of the predicted foreground ratio).

    ``update(preds, targets=None)``: per sample a predicted mask (bool, probabilities, or logits with
    ``from_logits=True``) or ``None``; targets are ignored (the null split has none) and may be omitted.

    Args:
        from_logits: Predictions are logits.
    """

    primary = "s"
    higher_is_better: ClassVar[dict[str, bool]] = {"s": False}
    reference: ClassVar[str] = "GeWu-Lab/Ref-AVS utils/utility.py metric_s_for_null()"
    row_width: ClassVar[int] = 1

    def __init__(self, from_logits: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.from_logits = from_logits

    def update(self, preds: Sequence[Any], targets: Sequence[Any] | None = None) -> None:
        """Add a batch of predicted masks."""
        rows = []
        for p in preds:
            if is_unparsed(p):
                rows.append([1.0])
            else:
                rows.append([metric_s_for_null(field(p, ("mask", "masks"), "RefAVSNullMetric"), self.from_logits)])
        self._count(preds)
        self._push_rows(rows)

    def compute(self) -> dict[str, Tensor]:
        """``s`` (lower is better), ``n_total``, ``n_parsed``."""
        rows = self._all_rows()
        return {"s": as_float(float(rows[:, 0].mean()) if len(rows) else 0.0), **self._counts()}
