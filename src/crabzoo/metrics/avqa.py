"""MUSIC-AVQA accuracy: overall, per question type and per Audio / Visual / Audio-Visual group.

Reference: GeWu-Lab/MUSIC-AVQA ``net_grd_avst/main_avst.py``, function ``test``: every question is put in one
of nine buckets by its ``type`` field (a JSON list such as ``["Audio-Visual", "Counting"]``); a bucket's
accuracy is its share of correct answers; a group's accuracy pools its buckets' questions (not the mean of the
bucket accuracies); ``Avg`` is the accuracy over all questions. Answers are compared after normalisation (strip,
lower-case, collapsed spaces); an unparsable answer is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from torch import Tensor

from crabzoo.errors import CrabzooError
from crabzoo.metrics.base import BenchmarkMetric, PrimaryTerms, as_float, check_lengths, field, is_unparsed, normalize_text

QUESTION_TYPES: dict[tuple[str, str], str] = {
    ("audio", "counting"): "A-Count",
    ("audio", "comparative"): "A-Comp",
    ("visual", "counting"): "V-Count",
    ("visual", "location"): "V-Loc",
    ("audio-visual", "existential"): "AV-Exist",
    ("audio-visual", "counting"): "AV-Count",
    ("audio-visual", "location"): "AV-Loc",
    ("audio-visual", "comparative"): "AV-Comp",
    ("audio-visual", "temporal"): "AV-Temp",
}
"""``(modality, kind)`` of the ``type`` field -> bucket name."""

GROUP_OF: dict[str, str] = {name: name.split("-")[0] for name in QUESTION_TYPES.values()}
"""Bucket -> group (``A``, ``V``, ``AV``)."""

GROUP_KEYS: dict[str, str] = {"A": "Audio", "V": "Visual", "AV": "AV"}


def question_type(value: Any) -> str:
    """Bucket name of a MUSIC-AVQA ``type`` field (JSON string or list), e.g. ``'["Audio", "Counting"]'``.

    Raises:
        CrabzooError: the value is not one of the nine MUSIC-AVQA question types.
    """
    if isinstance(value, str) and value in GROUP_OF:
        return value
    parsed = value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
    if isinstance(parsed, (list, tuple)) and len(parsed) == 2:
        key = (str(parsed[0]).strip().lower(), str(parsed[1]).strip().lower())
        if key in QUESTION_TYPES:
            return QUESTION_TYPES[key]
    raise CrabzooError(
        f"MUSIC-AVQA question type {value!r} is not one of {sorted(GROUP_OF)} or a type field such as "
        "'[\"Audio-Visual\", \"Counting\"]'"
    )


def avqa_accuracy(correct: Sequence[bool], types: Sequence[str]) -> dict[str, float]:
    """Per-bucket, per-group and overall accuracy from per-question correctness.

    Args:
        correct: One boolean per question.
        types: The question's bucket name or raw ``type`` field.

    Returns:
        Keys ``Avg``, ``Audio``, ``Visual``, ``AV`` and the nine bucket names; a bucket or group without
        questions is left out.
    """
    hits: dict[str, list[int]] = {}
    for ok, kind in zip(correct, types):
        bucket = question_type(kind)
        for key in (bucket, GROUP_KEYS[GROUP_OF[bucket]], "Avg"):
            hits.setdefault(key, [0, 0])
            hits[key][0] += int(bool(ok))
            hits[key][1] += 1
    return {key: c / n for key, (c, n) in hits.items()}


class MusicAVQAMetric(BenchmarkMetric):
    """MUSIC-AVQA accuracy, overall (``Avg``), per group and per question type.

    ``update(preds, targets, types=None)``: ``preds`` are answers (``str``, dict with ``answer``, or ``None``);
    ``targets`` are answers or truth dicts; ``types`` are the questions' ``type`` fields, read from the truth
    dicts' ``type`` key when omitted.

    Args:
        normalize: Answer normaliser (default strip + lower-case + collapse spaces).
    """

    primary = "Avg"
    higher_is_better: ClassVar[dict[str, bool]] = {
        "Avg": True,
        "Audio": True,
        "Visual": True,
        "AV": True,
        **{name: True for name in QUESTION_TYPES.values()},
    }
    reference: ClassVar[str] = "GeWu-Lab/MUSIC-AVQA net_grd_avst/main_avst.py test()"

    def __init__(self, normalize: Callable[[str], str] | None = normalize_text, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.normalize = normalize

    def _answer(self, value: Any) -> str | None:
        if is_unparsed(value):
            return None
        value = field(value, ("answer", "label"), "MusicAVQAMetric")
        if is_unparsed(value):
            return None
        return self.normalize(str(value)) if self.normalize else str(value)

    def update(self, preds: Sequence[Any], targets: Sequence[Any], types: Sequence[Any] | None = None) -> None:
        """Add a batch of answers, true answers and question types."""
        check_lengths(preds, targets, "MusicAVQAMetric")
        if types is None:
            types = [field(t, ("type", "question_type"), "MusicAVQAMetric target") for t in targets]
        check_lengths(types, targets, "MusicAVQAMetric (types)")
        rows = []
        for p, t, kind in zip(preds, targets, types):
            pred, truth = self._answer(p), self._answer(t)
            rows.append([question_type(kind), pred is not None and pred == truth])
        self._count(preds)
        self._push_records(rows)

    def compute(self) -> dict[str, Tensor]:
        """Accuracies (fractions) for ``Avg``, groups and buckets present, plus ``n_total`` / ``n_parsed``."""
        records = self._all_records()
        scores = avqa_accuracy([r[1] for r in records], [r[0] for r in records])
        scores.setdefault("Avg", 0.0)
        order = ["Avg", "Audio", "Visual", "AV", *QUESTION_TYPES.values()]
        return {**{k: as_float(scores[k]) for k in order if k in scores}, **self._counts()}

    def primary_terms(self) -> PrimaryTerms:
        """Per-question correctness: ``Avg`` is their mean."""
        return PrimaryTerms.per_sample([float(bool(r[1])) for r in self._all_records()])
