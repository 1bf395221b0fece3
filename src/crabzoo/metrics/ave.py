"""AVE (audio-visual event localisation) segment accuracy.

Reference: YapengTian/AVE-ECCV18 ``supervised_main.py``, function ``compute_acc``: each 1-s segment of a 10-s clip
gets the argmax class (29 classes: 28 events + background; ``np.argmax`` breaks ties towards the lower index);
accuracy is the share of correct segments pooled over all segments of all clips (402 test clips -> 4,020
segments). An unparsable clip scores all 10 segments wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from torch import Tensor

from crabzoo.errors import CrabzooError
from crabzoo.metrics.base import BenchmarkMetric, PrimaryTerms, as_float, check_lengths, field, is_unparsed, normalize_text

BACKGROUND = "background"
"""Label of a segment without an audio-visual event."""


def ave_segment_accuracy(pred: np.ndarray, gt: np.ndarray) -> float:
    """Pooled segment accuracy of AVE.

    Args:
        pred: Class scores ``[N, 10, C]`` (argmax taken per segment) or class indices ``[N, 10]``.
        gt: One-hot / score labels ``[N, 10, C]`` or class indices ``[N, 10]``.

    Returns:
        Correct segments / all segments (0 for an empty input).
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.ndim == 3:
        pred = pred.argmax(axis=-1)
    if gt.ndim == 3:
        gt = gt.argmax(axis=-1)
    if pred.shape != gt.shape:
        raise CrabzooError(f"ave_segment_accuracy: prediction shape {pred.shape} != ground-truth shape {gt.shape}")
    return float((pred == gt).sum() / gt.size) if gt.size else 0.0


def events_to_segments(
    events: Sequence[Sequence[Any]], n_segments: int = 10, background: str = BACKGROUND
) -> list[str]:
    """Per-second labels from ``[(label, start, end), ...]`` (integer seconds, end exclusive).

    Later events overwrite earlier ones where they overlap; uncovered seconds are ``background``.
    """
    labels = [background] * n_segments
    for label, start, end in events:
        for i in range(max(0, int(start)), min(n_segments, int(end))):
            labels[i] = str(label)
    return labels


class AVESegmentAccuracy(BenchmarkMetric):
    """AVE segment accuracy over 10 x 1-s segments.

    ``update(preds, targets)``: each prediction / target is a list of 10 per-second labels (``"background"``
    for none), a list of ``(label, start, end)`` events, a dict holding either under ``labels`` / ``segments``
    / ``events``, a single-event dict ``{"label", "start", "end"}``, or ``None`` for an unparsable generation. Labels are normalised (strip, lower-case).
    A prediction with fewer segments than its target scores the missing ones wrong.

    Args:
        n_segments: Segments per clip (10).
    """

    primary = "accuracy"
    higher_is_better: ClassVar[dict[str, bool]] = {"accuracy": True}
    reference: ClassVar[str] = "YapengTian/AVE-ECCV18 supervised_main.py compute_acc()"
    row_width: ClassVar[int] = 2

    def __init__(self, n_segments: int = 10, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_segments = n_segments

    def _labels(self, value: Any) -> list[str] | None:
        if is_unparsed(value):
            return None
        if isinstance(value, dict) and "start" in value and "end" in value:  # one event: {label, start, end}
            label = field(value, ("label", "event", "answer"), "AVESegmentAccuracy")
            value = [(label, value["start"], value["end"])]
        value = field(value, ("labels", "segments", "events"), "AVESegmentAccuracy")
        if is_unparsed(value):
            return None
        items = list(value)
        if not items or not isinstance(items[0], str):  # events (none at all: every second is background)
            items = events_to_segments(items, self.n_segments)
        return [normalize_text(x) for x in items]

    def update(self, preds: Sequence[Any], targets: Sequence[Any]) -> None:
        """Add a batch of clips."""
        check_lengths(preds, targets, "AVESegmentAccuracy")
        rows = []
        for p, t in zip(preds, targets):
            truth = self._labels(t) or []
            pred = self._labels(p) or []
            correct = sum(1 for i, label in enumerate(truth) if i < len(pred) and pred[i] == label)
            rows.append([correct, len(truth)])
        self._count(preds)
        self._push_rows(rows)

    def compute(self) -> dict[str, Tensor]:
        """``accuracy`` (fraction of segments), ``n_total``, ``n_parsed``."""
        rows = self._all_rows()
        total = float(rows[:, 1].sum())
        return {"accuracy": as_float(float(rows[:, 0].sum()) / total if total else 0.0), **self._counts()}

    def primary_terms(self) -> PrimaryTerms:
        """Correct segments over segments, per clip: the accuracy pools them."""
        rows = self._all_rows().cpu().numpy()
        return PrimaryTerms.per_sample(rows[:, 0], rows[:, 1])
