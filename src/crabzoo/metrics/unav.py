"""UnAV-style multi-segment temporal grounding: mIoU and F1 at IoU 0.3 / 0.5 / 0.7.

There is no official scorer for the text-generation form of UnAV-100 (the dataset's own protocol is detection
mAP over ranked proposals, which a generated answer does not provide), so this module defines the protocol the
project uses; it is documented in ``docs/metrics.md``. Segments are ``(label, start, end)`` in seconds.

* mIoU (per video, then the mean over videos): for every label in the union of predicted and true labels, the
  1-D IoU between the union of that label's predicted intervals and the union of its true intervals (a label
  on one side only scores 0); the video's value is the mean over those labels. A video with no true and no
  predicted segment scores 1.0 (the AVVP convention).
* F1@t: per video and label, predicted and true segments are matched one-to-one, greedily by descending IoU,
  a pair counting as a true positive when its IoU >= t (so a duplicated prediction is a false positive). TP,
  the number of predicted and of true segments are pooled over the dataset: F1 = 2 TP / (#pred + #true)
  (1.0 when both are 0).

An unparsable prediction has no segments and a video mIoU of 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from torch import Tensor

from crabzoo.metrics.base import BenchmarkMetric, as_float, check_lengths, field, is_unparsed, normalize_text

IOU_THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7)

Segment = tuple[str, float, float]


def interval_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """IoU of two intervals ``(start, end)``."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(0.0, a[1] - a[0]) + max(0.0, b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def _merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for s, e in sorted(intervals):
        if e <= s:
            continue
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def _length(intervals: list[tuple[float, float]]) -> float:
    return sum(e - s for s, e in intervals)


def _set_iou(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    a, b = _merge(a), _merge(b)
    inter = sum(max(0.0, min(e1, e2) - max(s1, s2)) for s1, e1 in a for s2, e2 in b)
    union = _length(a) + _length(b) - inter
    return inter / union if union > 0 else 0.0


def video_miou(pred: Sequence[Segment], gt: Sequence[Segment]) -> float:
    """Mean over labels (union of both sides) of the IoU of the label's interval unions; 1.0 if both empty."""
    labels = sorted({s[0] for s in pred} | {s[0] for s in gt})
    if not labels:
        return 1.0
    scores = []
    for label in labels:
        p = [(float(s), float(e)) for lab, s, e in pred if lab == label]
        g = [(float(s), float(e)) for lab, s, e in gt if lab == label]
        scores.append(_set_iou(p, g))
    return sum(scores) / len(scores)


def matched_true_positives(pred: Sequence[Segment], gt: Sequence[Segment], threshold: float) -> int:
    """One-to-one greedy matching (descending IoU, same label) counting pairs with IoU >= ``threshold``."""
    pairs = []
    for i, (pl, ps, pe) in enumerate(pred):
        for j, (gl, gs, ge) in enumerate(gt):
            if pl == gl:
                iou = interval_iou((float(ps), float(pe)), (float(gs), float(ge)))
                if iou >= threshold:
                    pairs.append((-iou, i, j))
    used_p, used_g, tp = set(), set(), 0
    for _, i, j in sorted(pairs):
        if i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
            tp += 1
    return tp


def unav_scores(preds: Sequence[Sequence[Segment] | None], gts: Sequence[Sequence[Segment]]) -> dict[str, float]:
    """Dataset ``miou`` and ``f1@0.3`` / ``f1@0.5`` / ``f1@0.7`` (``None`` = unparsable, mIoU 0)."""
    mious, tps, n_pred, n_gt = [], [0] * len(IOU_THRESHOLDS), 0, 0
    for pred, gt in zip(preds, gts):
        mious.append(0.0 if pred is None else video_miou(pred, gt))
        pred = pred or []
        n_pred += len(pred)
        n_gt += len(gt)
        for k, t in enumerate(IOU_THRESHOLDS):
            tps[k] += matched_true_positives(pred, gt, t)
    out = {"miou": sum(mious) / len(mious) if mious else 0.0}
    for k, t in enumerate(IOU_THRESHOLDS):
        out[f"f1@{t}"] = 2 * tps[k] / (n_pred + n_gt) if n_pred + n_gt else 1.0
    return out


class UnAVGroundingMetric(BenchmarkMetric):
    """Multi-segment grounding mIoU and F1@{0.3, 0.5, 0.7}.

    ``update(preds, targets)``: per video a list of ``(label, start, end)`` (or a dict holding one under
    ``events`` / ``segments``), or ``None`` for an unparsable generation. Labels are normalised.
    """

    primary = "miou"
    higher_is_better: ClassVar[dict[str, bool]] = {"miou": True, **{f"f1@{t}": True for t in IOU_THRESHOLDS}}
    reference: ClassVar[str] = "crabzoo protocol (no official generative UnAV scorer); see docs/metrics.md"
    row_width: ClassVar[int] = 3 + len(IOU_THRESHOLDS)

    @staticmethod
    def _segments(value: Any) -> list[Segment] | None:
        if is_unparsed(value):
            return None
        value = field(value, ("events", "segments"), "UnAVGroundingMetric")
        if is_unparsed(value):
            return None
        return [(normalize_text(label), float(s), float(e)) for label, s, e in value]

    def update(self, preds: Sequence[Any], targets: Sequence[Any]) -> None:
        """Add a batch of videos."""
        check_lengths(preds, targets, "UnAVGroundingMetric")
        rows = []
        for p, t in zip(preds, targets):
            pred, gt = self._segments(p), self._segments(t) or []
            miou = 0.0 if pred is None else video_miou(pred, gt)
            pred = pred or []
            tps = [matched_true_positives(pred, gt, th) for th in IOU_THRESHOLDS]
            rows.append([miou, len(pred), len(gt), *tps])
        self._count(preds)
        self._push_rows(rows)

    def compute(self) -> dict[str, Tensor]:
        """``miou``, ``f1@0.3``, ``f1@0.5``, ``f1@0.7`` (fractions), ``n_total``, ``n_parsed``."""
        rows = self._all_rows()
        out = {"miou": as_float(float(rows[:, 0].mean()) if len(rows) else 0.0)}
        denom = float(rows[:, 1].sum() + rows[:, 2].sum())
        for k, t in enumerate(IOU_THRESHOLDS):
            out[f"f1@{t}"] = as_float(2 * float(rows[:, 3 + k].sum()) / denom if denom else 1.0)
        return {**out, **self._counts()}
