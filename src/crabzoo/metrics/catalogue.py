"""Which metric each AV-UIE v2 task folder is scored with.

Tasks build their metric in ``Task.make_metric``; :func:`metric_for_task` is the default they can return, so that
every task folder gets the benchmark's metric with the right primary key.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from crabzoo.errors import CrabzooError
from crabzoo.metrics.ave import AVESegmentAccuracy
from crabzoo.metrics.avqa import MusicAVQAMetric
from crabzoo.metrics.avsbench import AVSBenchMetric
from crabzoo.metrics.avvp import AVVPMetric
from crabzoo.metrics.base import BenchmarkMetric
from crabzoo.metrics.captioning import CaptionMetric
from crabzoo.metrics.classification import ClassificationMetric
from crabzoo.metrics.grounding import ARIGMetric
from crabzoo.metrics.refavs import RefAVSNullMetric
from crabzoo.metrics.unav import UnAVGroundingMetric

TASK_METRICS: dict[str, Callable[[], BenchmarkMetric]] = {
    "a2v": ClassificationMetric,
    "v2a": ClassificationMetric,
    "ks": ClassificationMetric,
    "ucf": ClassificationMetric,
    "cremad": ClassificationMetric,
    "mer24": ClassificationMetric,
    "meld": partial(ClassificationMetric, primary="weighted_f1"),
    "mafw": partial(ClassificationMetric, primary="uar"),
    "dfew": partial(ClassificationMetric, primary="uar"),
    "avqa": MusicAVQAMetric,
    "avqa_thu": ClassificationMetric,
    "ave": AVESegmentAccuracy,
    "avvp": AVVPMetric,
    "unav": UnAVGroundingMetric,
    "s4": AVSBenchMetric,
    "ms3": AVSBenchMetric,
    "ref_avs": AVSBenchMetric,
    "ref_avs_null": RefAVSNullMetric,
    "arig": ARIGMetric,
    "avcap": CaptionMetric,
}
"""Task folder -> metric factory (``ref_avs_null`` is the Ref-AVS null split)."""


def metric_for_task(task: str) -> BenchmarkMetric:
    """A fresh metric for ``task`` (a task folder name, or ``ref_avs_null`` for the Ref-AVS null split).

    Raises:
        CrabzooError: unknown task name.
    """
    if task not in TASK_METRICS:
        raise CrabzooError(f"no metric for task {task!r}; known tasks: {', '.join(sorted(TASK_METRICS))}")
    return TASK_METRICS[task]()
