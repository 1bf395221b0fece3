"""UnAV-style multi-segment temporal grounding: mIoU, F1 at IoU 0.3 / 0.5 / 0.7, and UnAV-100's detection mAP.

No scorer exists for the text-generation form of UnAV-100: Crab+ trains on the ``unav`` folder but neither infers
nor scores it (``scripts/finetune/inference_omni.py`` of GeWu-Lab/Crab_Plus lists no ``unav``; its ``utils/`` holds
only the AVVP metrics), and Crab v1 (GeWu-Lab/Crab) has no UnAV code. So mIoU and F1 are the project's own protocol,
and the dataset's official detection mAP is reported next to them. Segments are ``(label, start, end)`` in
seconds; labels are compared after :func:`~crabzoo.metrics.base.normalize_text`. Ground-truth events that repeat
an event of the same label with start and end within 1e-3 s are dropped first, as the official evaluation does.

* mIoU (per video, then the mean over videos): for every label in the union of predicted and true labels, the
  1-D IoU between the union of that label's predicted intervals and the union of its true intervals (a label
  on one side only scores 0); the video's value is the mean over those labels. A video with no true and no
  predicted segment scores 1.0 (the AVVP convention).
* F1@t: per video and label, predicted and true segments are matched one-to-one, greedily by descending IoU,
  a pair counting as a true positive when its IoU >= t (so a duplicated prediction is a false positive). TP,
  the number of predicted and of true segments are pooled over the dataset: F1 = 2 TP / (#pred + #true)
  (1.0 when both are 0).
* mAP@t (``map@0.5`` .. ``map@0.9``) and ``map_avg`` (the mean over tIoU 0.1, 0.2, ..., 0.9): the official
  UnAV-100 evaluation (ttgeng233/UnAV ``libs/utils/metrics.py``, ``ANETdetection`` with the thresholds
  ``np.linspace(0.1, 0.9, 9)`` of ``libs/datasets/unav100.py``) with every generated segment a detection of
  score 1.0. Per class and threshold, each prediction in generation order takes the unmatched true event of its
  video and class with the highest tIoU, when that tIoU >= t (else it is a false positive). Since every score
  is equal, the precision-recall curve is a single point and the interpolated AP is recall x precision =
  (TP / #true) x (TP / #predicted) of that class (0 with no prediction); mAP is the mean over the classes that
  have a true event in the evaluated set. Predictions of other labels do not enter the mAP (the official code
  only scores ground-truth classes). The thresholds are the official floats, so 0.3 and 0.7 are
  0.30000000000000004 and 0.7000000000000001: a tIoU of exactly 0.7 does not count at ``map@0.7``. A set with no
  true event scores 1.0 when nothing is predicted either, else 0.0.

An unparsable prediction has no segments and a video mIoU of 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from torch import Tensor

from crabzoo.metrics.base import BenchmarkMetric, as_float, check_lengths, field, is_unparsed, normalize_text

IOU_THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7)
"""IoU thresholds of the F1 keys."""

MAP_THRESHOLDS: tuple[float, ...] = tuple(float(t) for t in np.linspace(0.1, 0.9, 9))
"""tIoU thresholds of the official UnAV-100 evaluation (``map_avg`` averages over all nine)."""

MAP_REPORTED: tuple[float, ...] = MAP_THRESHOLDS[4:]
"""Thresholds with their own ``map@t`` key (0.5 .. 0.9, as the UnAV-100 paper reports)."""

DUPLICATE_TOLERANCE = 1e-3
"""Ground-truth events of one label whose start and end differ by at most this are one event (official rule)."""

Segment = tuple[str, float, float]


def _key(t: float) -> str:
    return f"{round(t, 1)}"


def interval_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """IoU of two intervals ``(start, end)``."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(0.0, a[1] - a[0]) + max(0.0, b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def remove_duplicates(gt: Sequence[Segment], tol: float = DUPLICATE_TOLERANCE) -> list[Segment]:
    """``gt`` without events repeating an earlier event's label, start and end (within ``tol``)."""
    kept: list[Segment] = []
    for label, s, e in gt:
        if not any(label == k[0] and abs(s - k[1]) <= tol and abs(e - k[2]) <= tol for k in kept):
            kept.append((label, s, e))
    return kept


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


def detection_true_positives(pred: Sequence[Segment], gt: Sequence[Segment], threshold: float) -> dict[str, int]:
    """True positives per label under the official UnAV-100 matching (predictions in order, score ties).

    Each prediction takes the not yet matched true event of its label with the highest tIoU (the first such event
    on a tie) when that tIoU >= ``threshold``.
    """
    taken: set[int] = set()
    tps: dict[str, int] = {}
    for label, ps, pe in pred:
        candidates = [(interval_iou((ps, pe), (gs, ge)), -j) for j, (gl, gs, ge) in enumerate(gt) if gl == label]
        for iou, neg_j in sorted(candidates, reverse=True):
            if iou < threshold:
                break
            if -neg_j not in taken:
                taken.add(-neg_j)
                tps[label] = tps.get(label, 0) + 1
                break
    return tps


def detection_map(preds: Sequence[Sequence[Segment] | None], gts: Sequence[Sequence[Segment]],
                  thresholds: Sequence[float] = MAP_THRESHOLDS) -> dict[float, float]:
    """UnAV-100 detection mAP per tIoU threshold with every prediction scored 1.0 (``None`` = no prediction).

    Ground truths are used as given: pass them through :func:`remove_duplicates` first, as
    :class:`UnAVGroundingMetric` does.
    """
    classes = sorted({label for gt in gts for label, _, _ in gt})
    if not classes:
        nothing_predicted = all(not p for p in preds)
        return {t: 1.0 if nothing_predicted else 0.0 for t in thresholds}
    n_pos = {c: sum(1 for gt in gts for label, _, _ in gt if label == c) for c in classes}
    n_pred = {c: sum(1 for p in preds for label, _, _ in (p or []) if label == c) for c in classes}
    out = {}
    for t in thresholds:
        tp = dict.fromkeys(classes, 0)
        for pred, gt in zip(preds, gts):
            for label, count in detection_true_positives(pred or [], gt, t).items():
                tp[label] += count
        aps = [(tp[c] / n_pos[c]) * (tp[c] / n_pred[c]) if n_pred[c] else 0.0 for c in classes]
        out[t] = sum(aps) / len(aps)
    return out


def unav_scores(preds: Sequence[Sequence[Segment] | None], gts: Sequence[Sequence[Segment]]) -> dict[str, float]:
    """Dataset ``miou``, ``f1@t`` and ``map@t`` / ``map_avg`` (``None`` = unparsable, mIoU 0)."""
    gts = [remove_duplicates(gt) for gt in gts]
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
    maps = detection_map(preds, gts)
    for t in MAP_REPORTED:
        out[f"map@{_key(t)}"] = maps[t]
    out["map_avg"] = sum(maps.values()) / len(maps)
    return out


class UnAVGroundingMetric(BenchmarkMetric):
    """Multi-segment grounding: mIoU, F1@{0.3, 0.5, 0.7}, and UnAV-100 mAP@{0.5, ..., 0.9} with their average.

    ``update(preds, targets)``: per video a list of ``(label, start, end)`` (or a dict holding one under
    ``events`` / ``segments``), or ``None`` for an unparsable generation. Labels are normalised. The videos are
    kept as records: the mAP pools every class over the whole evaluated set.
    """

    primary = "miou"
    higher_is_better: ClassVar[dict[str, bool]] = {
        "miou": True,
        **{f"f1@{t}": True for t in IOU_THRESHOLDS},
        **{f"map@{_key(t)}": True for t in MAP_REPORTED},
        "map_avg": True,
    }
    reference: ClassVar[str] = (
        "crabzoo protocol for mIoU / F1 (no official generative UnAV scorer; see docs/metrics.md); mAP: "
        "ttgeng233/UnAV libs/utils/metrics.py ANETdetection, tIoU 0.1:0.1:0.9, every segment scored 1.0"
    )

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
        records = [[self._segments(p), self._segments(t) or []] for p, t in zip(preds, targets)]
        self._count(preds)
        self._push_records(records)

    def compute(self) -> dict[str, Tensor]:
        """``miou``, ``f1@t``, ``map@t``, ``map_avg`` (fractions), ``n_total``, ``n_parsed``."""
        records = self._all_records()
        preds = [None if p is None else [(label, s, e) for label, s, e in p] for p, _ in records]
        gts = [[(label, s, e) for label, s, e in g] for _, g in records]
        if not records:
            return {**{k: as_float(0.0) for k in self.higher_is_better}, **self._counts()}
        return {**{k: as_float(v) for k, v in unav_scores(preds, gts).items()}, **self._counts()}
