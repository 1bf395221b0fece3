"""ARIG (audio-referred image grounding) cIoU and AUC, the sound-source localisation protocol.

Reference: the ``Evaluator`` of LVS / EZ-VSL (e.g. stoneMo/EZ-VSL ``utils.py``: ``cal_CIOU``,
``finalize_cIoU``, ``finalize_AUC``): per sample an IoU between the predicted and true localisation maps,
IoU = |pred AND gt| / (|gt| + |pred AND NOT gt|); then

* cIoU = share of samples with IoU >= 0.5;
* AUC = trapezoidal area (``sklearn.metrics.auc``) under the success curve ``(t, share of IoU >= t)`` for the
  21 thresholds ``t = 0.05 * i``, ``i = 0..20`` (Python floats, so ``0.05 * 3 = 0.15000000000000002``).

(Crab's ``utils/ciou.py`` is the box-regression Complete-IoU and is not this metric.) Structured inputs: a
predicted box ``(x1, y1, x2, y2)`` against a true box (continuous box IoU) or a true mask (the box is rasterised
on the mask's pixel grid, pixels ``[floor(x1), ceil(x2))``, then the map IoU above). An unparsable prediction
has IoU 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from torch import Tensor

from crabzoo.errors import CrabzooError
from crabzoo.metrics.base import BenchmarkMetric, as_float, check_lengths, field, is_unparsed

THRESHOLDS: tuple[float, ...] = tuple(0.05 * i for i in range(21))


def ciou_auc(ious: Sequence[float]) -> tuple[float, float]:
    """``(cIoU, AUC)`` from per-sample IoUs, as ``finalize_cIoU`` / ``finalize_AUC``; ``(0, 0)`` when empty."""
    values = np.asarray(list(ious), dtype=np.float64)
    if values.size == 0:
        return 0.0, 0.0
    ciou = float(np.mean(values >= 0.5))
    success = [float(np.sum(values >= t) / values.size) for t in THRESHOLDS]
    auc = float(np.trapezoid(success, THRESHOLDS))
    return ciou, auc


def map_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of binary maps as ``cal_CIOU``: ``sum(pred*gt) / (sum(gt) + sum(pred*(gt==0)))`` (0 when both empty)."""
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    denom = gt.sum() + (pred * (gt == 0)).sum()
    return float((pred * gt).sum() / denom) if denom else 0.0


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Continuous IoU of two ``(x1, y1, x2, y2)`` boxes (0 for empty boxes)."""
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = max(0.0, ax2 - ax1) * max(0.0, ay2 - ay1) + max(0.0, bx2 - bx1) * max(0.0, by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def box_to_mask(box: Sequence[float], height: int, width: int) -> np.ndarray:
    """Binary ``[height, width]`` map of the pixels covered by ``(x1, y1, x2, y2)`` (``[floor, ceil)``)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    mask = np.zeros((height, width))
    c1, c2 = max(0, math.floor(x1)), min(width, math.ceil(x2))
    r1, r2 = max(0, math.floor(y1)), min(height, math.ceil(y2))
    if c2 > c1 and r2 > r1:
        mask[r1:r2, c1:c2] = 1
    return mask


def _is_box(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 4 and all(isinstance(v, (int, float)) for v in value)


class ARIGMetric(BenchmarkMetric):
    """cIoU (share of IoU >= 0.5) and AUC of the success curve, plus the mean IoU.

    ``update(preds, targets)``: a prediction is a box ``(x1, y1, x2, y2)``, a binary map, a dict with ``box``
    or ``mask``, or ``None``; a target is a box, a binary map or a dict with ``box`` / ``mask`` (same pixel
    frame as the prediction, e.g. 224 x 224).
    """

    primary = "ciou"
    higher_is_better: ClassVar[dict[str, bool]] = {"ciou": True, "auc": True, "miou": True}
    reference: ClassVar[str] = "stoneMo/EZ-VSL utils.py Evaluator.cal_CIOU(), finalize_cIoU(), finalize_AUC()"
    row_width: ClassVar[int] = 1

    @staticmethod
    def _geometry(value: Any, what: str) -> Any:
        if isinstance(value, dict):
            value = field(value, ("box", "bbox", "mask"), what)
        if _is_box(value):
            return [float(v) for v in value]
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim != 2:
            raise CrabzooError(f"{what}: expected a box (x1, y1, x2, y2) or a [H, W] map, got shape {arr.shape}")
        return (arr != 0).astype(np.float64)

    def update(self, preds: Sequence[Any], targets: Sequence[Any]) -> None:
        """Add a batch of predicted and true boxes / maps."""
        check_lengths(preds, targets, "ARIGMetric")
        rows = []
        for p, t in zip(preds, targets):
            if is_unparsed(p):
                rows.append([0.0])
                continue
            pred, gt = self._geometry(p, "ARIGMetric prediction"), self._geometry(t, "ARIGMetric target")
            if isinstance(pred, list) and isinstance(gt, list):
                rows.append([box_iou(pred, gt)])
                continue
            if isinstance(gt, list):
                gt = box_to_mask(gt, *pred.shape)
            if isinstance(pred, list):
                pred = box_to_mask(pred, *gt.shape)
            if pred.shape != gt.shape:
                raise CrabzooError(f"ARIGMetric: predicted map {pred.shape} and true map {gt.shape} differ")
            rows.append([map_iou(pred, gt)])
        self._count(preds)
        self._push_rows(rows)

    def compute(self) -> dict[str, Tensor]:
        """``ciou``, ``auc``, ``miou`` (fractions), ``n_total``, ``n_parsed``."""
        ious = self._all_rows()[:, 0].tolist()
        ciou, auc = ciou_auc(ious)
        miou = sum(ious) / len(ious) if ious else 0.0
        return {"ciou": as_float(ciou), "auc": as_float(auc), "miou": as_float(miou), **self._counts()}
