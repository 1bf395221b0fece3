"""AVVP (audio-visual video parsing) segment-level and event-level F1.

Reference: YapengTian/AVVP-ECCV20 ``utils/eval_metrics.py`` (functions ``segment_level``, ``event_level``,
``extract_event``, ``event_wise_metric``) driven by ``main_avvp.py`` ``eval``. Per video, binary matrices
``[25 classes, 10 segments]`` for audio and visual predictions and truths; audio-visual = audio AND visual.

* Segment level: per class, TP / FP / FN over the 10 segments; F1 = 2TP / (2TP + FN + FP) for every *active*
  class (TP + FP > 0 or TP + FN > 0), averaged over the active classes; a video without any active class scores
  1.0 ("all true negatives").
* Event level: events are maximal runs of 1s of one class. A predicted event is a TP when its IoU with *any* true
  event of the same class is >= 0.5, else a FP; a true event with no predicted event at IoU >= 0.5 is a FN (the
  matching is not one-to-one, so two predicted events may both match one true event). Then the same per-class
  F1, active-class mean and 1.0 rule.
* ``Event@AV`` pools the audio and visual TP / FP / FN per class before the F1 (not the mean of two F1s);
  ``Type@AV`` is the mean of the audio, visual and audio-visual dataset means.
* Dataset scores are means over videos of the per-video scores.

Structured inputs use the union of the labels a video mentions instead of the 25-class matrix. That is exact:
a class with no predicted and no true segment is inactive at both levels, contributes nothing to any count and is
skipped by the active-class rule. An unknown label in a prediction is an active class with only false positives.
Events of one class that overlap or touch merge into one run, as in the reference's matrices. An unparsable
prediction scores 0 on every key (an empty prediction of a video without events would otherwise score 1.0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from torch import Tensor

from crabzoo.metrics.base import BenchmarkMetric, as_float, check_lengths, field, is_unparsed, normalize_text

KEYS: tuple[str, ...] = (
    "seg_audio",
    "seg_visual",
    "seg_av",
    "seg_type",
    "seg_event",
    "event_audio",
    "event_visual",
    "event_av",
    "event_type",
    "event_event",
)
"""Output keys: ``seg_*`` segment level, ``event_*`` event level; ``*_type`` = Type@AV, ``*_event`` = Event@AV."""


def _f1_active(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> float:
    active = (tp + fp != 0) | (tp + fn != 0)
    if not active.any():
        return 1.0
    scores = [2 * tp[i] / (2 * tp[i] + fn[i] + fp[i]) for i in np.flatnonzero(active)]
    return float(sum(scores) / len(scores))


def _segment_counts(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp = (pred * gt).sum(axis=1)
    fn = ((1 - pred) * gt).sum(axis=1)
    fp = (pred * (1 - gt)).sum(axis=1)
    return tp, fp, fn


def extract_events(seq: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of 1s in a binary sequence as ``(start, end)`` with ``end`` exclusive."""
    runs, start = [], None
    for i, v in enumerate(list(seq) + [0]):
        if v == 1 and start is None:
            start = i
        elif v != 1 and start is not None:
            runs.append((start, i))
            start = None
    return runs


def _iou_ok(a: tuple[int, int], b: tuple[int, int]) -> bool:
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter >= 0.5 * union


def _event_counts(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = pred.shape[0]
    tp, fp, fn = np.zeros(n), np.zeros(n), np.zeros(n)
    for c in range(n):
        p_events, g_events = extract_events(pred[c]), extract_events(gt[c])
        for e in p_events:
            if any(_iou_ok(e, g) for g in g_events):
                tp[c] += 1
            else:
                fp[c] += 1
        for g in g_events:
            if not any(_iou_ok(g, e) for e in p_events):
                fn[c] += 1
    return tp, fp, fn


def _four_scores(counts: Any, so_a, so_v, so_av, gt_a, gt_v, gt_av) -> tuple[float, float, float, float]:
    tp_a, fp_a, fn_a = counts(so_a, gt_a)
    tp_v, fp_v, fn_v = counts(so_v, gt_v)
    tp_av, fp_av, fn_av = counts(so_av, gt_av)
    f_a = _f1_active(tp_a, fp_a, fn_a)
    f_v = _f1_active(tp_v, fp_v, fn_v)
    f = _f1_active(tp_a + tp_v, fp_a + fp_v, fn_a + fn_v)
    f_av = _f1_active(tp_av, fp_av, fn_av)
    return f_a, f_v, f, f_av


def segment_level(so_a, so_v, so_av, gt_a, gt_v, gt_av) -> tuple[float, float, float, float]:
    """Segment-level F1 of one video: ``(audio, visual, pooled audio+visual, audio-visual)``.

    Arguments are binary arrays ``[classes, segments]`` in the reference's order (predictions then truths).
    """
    args = [np.asarray(x, dtype=np.float64) for x in (so_a, so_v, so_av, gt_a, gt_v, gt_av)]
    return _four_scores(_segment_counts, *args)


def event_level(so_a, so_v, so_av, gt_a, gt_v, gt_av) -> tuple[float, float, float, float]:
    """Event-level F1 (IoU >= 0.5) of one video: ``(audio, visual, pooled audio+visual, audio-visual)``."""
    args = [np.asarray(x, dtype=np.float64) for x in (so_a, so_v, so_av, gt_a, gt_v, gt_av)]
    return _four_scores(_event_counts, *args)


def avvp_video_scores(pred_a, pred_v, gt_a, gt_v) -> dict[str, float]:
    """All per-video scores from binary ``[classes, segments]`` audio / visual matrices (AV = AND).

    Returns:
        ``seg_audio``, ``seg_visual``, ``seg_av``, ``seg_event`` (pooled) and the ``event_*`` counterparts.
    """
    pa, pv, ga, gv = (np.asarray(x, dtype=np.float64) for x in (pred_a, pred_v, gt_a, gt_v))
    mats = (pa, pv, pa * pv, ga, gv, ga * gv)
    s = segment_level(*mats)
    e = event_level(*mats)
    return {
        "seg_audio": s[0], "seg_visual": s[1], "seg_event": s[2], "seg_av": s[3],
        "event_audio": e[0], "event_visual": e[1], "event_event": e[2], "event_av": e[3],
    }  # fmt: skip


def avvp_dataset_scores(videos: Sequence[dict[str, float]]) -> dict[str, float]:
    """Means over videos plus Type@AV (``*_type``: mean of audio, visual and audio-visual means)."""
    out: dict[str, float] = {}
    for level in ("seg", "event"):
        for kind in ("audio", "visual", "av", "event"):
            key = f"{level}_{kind}"
            out[key] = float(np.mean([v[key] for v in videos])) if videos else 0.0
        out[f"{level}_type"] = (out[f"{level}_av"] + out[f"{level}_audio"] + out[f"{level}_visual"]) / 3.0
    return {k: out[k] for k in KEYS}


def events_to_matrix(events: Sequence[Sequence[Any]], labels: Sequence[str], n_segments: int = 10) -> np.ndarray:
    """Binary ``[len(labels), n_segments]`` matrix from ``[(label, start, end), ...]`` (end exclusive)."""
    index = {label: i for i, label in enumerate(labels)}
    mat = np.zeros((len(labels), n_segments))
    for label, start, end in events:
        mat[index[label], max(0, int(start)) : max(0, min(n_segments, int(end)))] = 1
    return mat


class AVVPMetric(BenchmarkMetric):
    """AVVP segment- and event-level F1 (audio, visual, audio-visual, Type@AV, Event@AV).

    ``update(preds, targets)``: each is a dict ``{"audio": [(label, start, end), ...], "visual": [...]}``
    (integer seconds, end exclusive, 10 segments) or ``None`` for an unparsable generation. Labels are
    normalised (strip, lower-case, collapsed spaces; underscores kept).

    Args:
        n_segments: Segments per video (10).
    """

    primary = "seg_type"
    higher_is_better: ClassVar[dict[str, bool]] = {k: True for k in KEYS}
    reference: ClassVar[str] = "YapengTian/AVVP-ECCV20 utils/eval_metrics.py segment_level(), event_level()"
    row_width: ClassVar[int] = 8

    _ROW = ("seg_audio", "seg_visual", "seg_av", "seg_event", "event_audio", "event_visual", "event_av", "event_event")

    def __init__(self, n_segments: int = 10, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_segments = n_segments

    @staticmethod
    def _events(value: Any, modality: str) -> list[tuple[str, int, int]]:
        events = field(value, (modality,), "AVVPMetric") if isinstance(value, dict) else []
        return [(normalize_text(label), int(s), int(e)) for label, s, e in (events or [])]

    def update(self, preds: Sequence[Any], targets: Sequence[Any]) -> None:
        """Add a batch of videos."""
        check_lengths(preds, targets, "AVVPMetric")
        rows = []
        for p, t in zip(preds, targets):
            if is_unparsed(p):
                rows.append([0.0] * self.row_width)
                continue
            pa, pv = self._events(p, "audio"), self._events(p, "visual")
            ga, gv = self._events(t, "audio"), self._events(t, "visual")
            labels = sorted({e[0] for e in pa + pv + ga + gv})
            mats = [events_to_matrix(x, labels, self.n_segments) for x in (pa, pv, ga, gv)]
            scores = avvp_video_scores(*mats)
            rows.append([scores[k] for k in self._ROW])
        self._count(preds)
        self._push_rows(rows)

    def compute(self) -> dict[str, Tensor]:
        """Dataset means (fractions) for every key of :data:`KEYS`, plus ``n_total`` / ``n_parsed``."""
        rows = self._all_rows()
        videos = [dict(zip(self._ROW, r)) for r in rows.tolist()]
        return {**{k: as_float(v) for k, v in avvp_dataset_scores(videos).items()}, **self._counts()}
