"""Benchmark-exact metrics, each a ``torchmetrics.Metric`` with process-synced state.

Every metric has two layers: a functional core that takes the reference scorer's own inputs and returns its
outputs (for checks against the reference implementations), and a :class:`BenchmarkMetric` subclass whose
``update(preds, targets)`` takes parser outputs (``None`` = unparsable, counted in ``n_total`` but not
``n_parsed`` and scored as wrong). ``compute()`` returns ``dict[str, Tensor]``; see ``docs/metrics.md``.
"""

from crabzoo.metrics.ave import AVESegmentAccuracy, ave_segment_accuracy
from crabzoo.metrics.avqa import MusicAVQAMetric, avqa_accuracy, question_type
from crabzoo.metrics.avsbench import AVSBenchMetric, eval_fmeasure, mask_iou
from crabzoo.metrics.avvp import AVVPMetric, avvp_dataset_scores, avvp_video_scores, event_level, segment_level
from crabzoo.metrics.base import BenchmarkMetric, is_unparsed, normalize_text
from crabzoo.metrics.catalogue import TASK_METRICS, metric_for_task
from crabzoo.metrics.captioning import CaptionMetric, MeteorScorer, bleu, cider_d, meteor, ptb_tokenize, rouge_l
from crabzoo.metrics.classification import (
    ClassificationMetric,
    accuracy,
    unweighted_average_recall,
    weighted_average_recall,
    weighted_f1,
)
from crabzoo.metrics.grounding import ARIGMetric, box_iou, ciou_auc, map_iou
from crabzoo.metrics.refavs import RefAVSNullMetric, metric_s_for_null
from crabzoo.metrics.unav import UnAVGroundingMetric, detection_map, unav_scores

__all__ = [
    "ARIGMetric",
    "AVESegmentAccuracy",
    "AVSBenchMetric",
    "AVVPMetric",
    "BenchmarkMetric",
    "CaptionMetric",
    "ClassificationMetric",
    "MeteorScorer",
    "MusicAVQAMetric",
    "RefAVSNullMetric",
    "TASK_METRICS",
    "UnAVGroundingMetric",
    "accuracy",
    "ave_segment_accuracy",
    "avqa_accuracy",
    "avvp_dataset_scores",
    "avvp_video_scores",
    "bleu",
    "box_iou",
    "cider_d",
    "ciou_auc",
    "detection_map",
    "eval_fmeasure",
    "event_level",
    "is_unparsed",
    "map_iou",
    "mask_iou",
    "meteor",
    "metric_for_task",
    "metric_s_for_null",
    "normalize_text",
    "ptb_tokenize",
    "question_type",
    "rouge_l",
    "segment_level",
    "unav_scores",
    "unweighted_average_recall",
    "weighted_average_recall",
    "weighted_f1",
]
