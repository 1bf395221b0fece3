"""Single-label classification: accuracy, weighted F1 (MELD), UAR and WAR (DFEW, MAFW).

References reproduced:

* accuracy / WAR: share of samples whose predicted label equals the true label (WAR, "weighted average recall",
  is the accuracy: per-class recalls weighted by class support).
* weighted F1: ``sklearn.metrics.f1_score(y_true, y_pred, average="weighted")`` as the MELD baselines
  (declare-lab/MELD) report it: per-class F1 over the union of true and predicted labels, weighted by true
  support (so a label that is only ever predicted has weight 0), zero division -> 0.
* UAR ("unweighted average recall"): the mean over the ground-truth classes of per-class recall, as the DFEW /
  MAFW evaluation code computes it from the confusion matrix over the dataset's fixed label set. sklearn's
  ``recall_score(average="macro")`` differs when a label is only ever predicted (it adds a 0 recall for it); the
  benchmark code does not, and neither does this module. Pass ``classes`` to average over a fixed label set
  (classes absent from the ground truth then score a recall of 0, like sklearn with ``labels=``).

An unparsable prediction (``None``) never equals any label: it is a false negative for the true class and a
false positive of no real class.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import Any, ClassVar

from torch import Tensor

from crabzoo.errors import CrabzooError
from crabzoo.metrics.base import BenchmarkMetric, PrimaryTerms, as_float, check_lengths, field, is_unparsed, normalize_text

_UNPARSED = "\x00unparsed"  # sentinel label that no real label can equal


def _clean(preds: Sequence[Hashable | None]) -> list[Hashable]:
    return [_UNPARSED if p is None else p for p in preds]


def accuracy(preds: Sequence[Hashable | None], targets: Sequence[Hashable]) -> float:
    """Share of exact matches; ``None`` predictions are wrong. An empty input scores 0."""
    if not targets:
        return 0.0
    return sum(1 for p, t in zip(_clean(preds), targets) if p == t) / len(targets)


def weighted_f1(preds: Sequence[Hashable | None], targets: Sequence[Hashable]) -> float:
    """Support-weighted mean of per-class F1, as ``sklearn.metrics.f1_score(average="weighted")``."""
    preds = _clean(preds)
    if not targets:
        return 0.0
    tp: Counter = Counter()
    n_pred: Counter = Counter(preds)
    support: Counter = Counter(targets)
    for p, t in zip(preds, targets):
        if p == t:
            tp[t] += 1
    total = 0.0
    for label, n_true in support.items():
        denom = n_pred[label] + n_true  # 2TP + FP + FN
        f1 = 2.0 * tp[label] / denom if denom else 0.0
        total += f1 * n_true
    return total / len(targets)


def unweighted_average_recall(
    preds: Sequence[Hashable | None], targets: Sequence[Hashable], classes: Sequence[Hashable] | None = None
) -> float:
    """Mean per-class recall over the ground-truth classes (or over ``classes`` when given)."""
    preds = _clean(preds)
    support: Counter = Counter(targets)
    hits: Counter = Counter(t for p, t in zip(preds, targets) if p == t)
    labels = list(classes) if classes is not None else list(support)
    if not labels:
        return 0.0
    return sum(hits[c] / support[c] if support[c] else 0.0 for c in labels) / len(labels)


def weighted_average_recall(preds: Sequence[Hashable | None], targets: Sequence[Hashable]) -> float:
    """Support-weighted mean of per-class recall, which equals :func:`accuracy`."""
    return accuracy(preds, targets)


class ClassificationMetric(BenchmarkMetric):
    """Accuracy, weighted F1, UAR and WAR over normalised string labels.

    ``update(preds, targets)``: ``preds`` are labels (``str``), dicts holding one under ``key``, or ``None`` /
    ``ParseFailure`` for an unparsable generation; ``targets`` are labels or truth dicts.

    Args:
        primary: Headline key: ``accuracy`` (default), ``weighted_f1`` (MELD) or ``uar`` (DFEW, MAFW).
        keys: Dict keys tried, in order, when a prediction or target is a dict.
        normalize: Label normaliser (default strip + lower-case + collapse spaces); ``None`` compares verbatim.
        classes: Fixed label set for UAR (normalised like the labels); default: the ground-truth classes.
    """

    primary = "accuracy"
    higher_is_better: ClassVar[dict[str, bool]] = {
        "accuracy": True,
        "weighted_f1": True,
        "uar": True,
        "war": True,
    }
    reference: ClassVar[str] = "sklearn.metrics accuracy_score / f1_score(average='weighted'); DFEW/MAFW UAR, WAR"

    def __init__(
        self,
        primary: str = "accuracy",
        keys: Sequence[str] = ("answer", "label"),
        normalize: Callable[[str], str] | None = normalize_text,
        classes: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if primary not in self.higher_is_better:
            choices = list(self.higher_is_better)
            raise CrabzooError(f"ClassificationMetric: unknown primary {primary!r}; use one of {choices}")
        self.primary = primary
        self.keys = tuple(keys)
        self.normalize = normalize
        self.classes = None if classes is None else [self._norm(c) for c in classes]

    def _norm(self, label: Any) -> str:
        label = str(label)
        return self.normalize(label) if self.normalize else label

    def _label(self, value: Any) -> str | None:
        if is_unparsed(value):
            return None
        value = field(value, self.keys, type(self).__name__)
        return None if is_unparsed(value) else self._norm(value)

    def update(self, preds: Sequence[Any], targets: Sequence[Any]) -> None:
        """Add a batch of predictions and ground truths."""
        check_lengths(preds, targets, type(self).__name__)
        self._count(preds)
        self._push_records([[self._label(p), self._label(t)] for p, t in zip(preds, targets)])

    def compute(self) -> dict[str, Tensor]:
        """``accuracy``, ``weighted_f1``, ``uar``, ``war`` (fractions in [0, 1]), ``n_total``, ``n_parsed``."""
        records = self._all_records()
        preds = [r[0] for r in records]
        targets = [r[1] for r in records]
        return {
            "accuracy": as_float(accuracy(preds, targets)),
            "weighted_f1": as_float(weighted_f1(preds, targets)),
            "uar": as_float(unweighted_average_recall(preds, targets, self.classes)),
            "war": as_float(weighted_average_recall(preds, targets)),
            **self._counts(),
        }

    def primary_terms(self) -> PrimaryTerms | None:
        """Per-sample correctness when the primary score is ``accuracy`` (F1 and UAR are not ratios of sums)."""
        if self.primary != "accuracy":
            return None
        return PrimaryTerms.per_sample([float(r[0] is not None and r[0] == r[1]) for r in self._all_records()])
