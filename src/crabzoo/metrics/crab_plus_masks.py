"""Crab+'s own mask scores: per-frame Jaccard and F-score of binary masks, averaged over frames.

Reference: GeWu-Lab/Crab_Plus ``seg/scripts/inference_3.py`` (``calculate_metrics``), which scores each SAM2
mask against its ground truth (any non-zero pixel is foreground) and reports the plain mean over all frames:

* J = |pred AND gt| / |pred OR gt|, and J = 1 when the union is empty (both masks empty);
* P = TP / |pred|, and P = 1 when nothing is predicted; R = TP / |gt|, and R = 1 when the ground truth is empty;
* F = (1 + 0.3) P R / (0.3 P + R), and F = 0 when P + R = 0.

Unlike the AVSBench protocol (:mod:`crabzoo.metrics.avsbench`) there is no grouping into videos, no sigmoid
and no threshold sweep, and an empty ground truth is scored by the rules above. Crab+ drops unparsable
generations before scoring; crabzoo keeps them as wrong (see :mod:`crabzoo.tasks.seg_metric`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from crabzoo.errors import CrabzooError

BETA2 = 0.3
"""Weight of precision in the F-measure (beta squared), as in the AVSBench protocol."""


def frame_scores(pred: Tensor, gt: Tensor) -> dict[str, Tensor]:
    """Per-frame Jaccard, precision, recall and F-score of binary masks under Crab+'s rule.

    Args:
        pred: ``[N, H, W]`` predicted masks (non-zero is foreground).
        gt: ``[N, H, W]`` ground-truth masks (non-zero is foreground).

    Returns:
        ``jaccard``, ``precision``, ``recall`` and ``fscore``, each ``[N]`` float64.
    """
    if pred.ndim != 3 or pred.shape != gt.shape:
        raise CrabzooError(
            f"Crab+ mask scores: expected pred and gt of the same [N, H, W] shape, got {tuple(pred.shape)} "
            f"and {tuple(gt.shape)}"
        )
    p, g = pred != 0, gt != 0
    tp = (p & g).sum((1, 2)).double()
    union = (p | g).sum((1, 2)).double()
    n_pred, n_gt = p.sum((1, 2)).double(), g.sum((1, 2)).double()
    one = torch.ones_like(tp)
    jaccard = torch.where(union == 0, one, tp / union.clamp(min=1))
    precision = torch.where(n_pred == 0, one, tp / n_pred.clamp(min=1))
    recall = torch.where(n_gt == 0, one, tp / n_gt.clamp(min=1))
    denominator = BETA2 * precision + recall
    fscore = torch.where(
        precision + recall == 0, torch.zeros_like(tp), (1 + BETA2) * precision * recall / denominator.clamp(min=1e-12)
    )
    return {"jaccard": jaccard, "precision": precision, "recall": recall, "fscore": fscore}


def mean_scores(pred: Tensor, gt: Tensor) -> tuple[float, float]:
    """Mean Jaccard and mean F-score over the frames of ``pred`` / ``gt`` (``[N, H, W]``; 0 for no frame)."""
    if pred.shape[0] == 0:
        return 0.0, 0.0
    frames = frame_scores(pred, gt)
    return float(frames["jaccard"].mean()), float(frames["fscore"].mean())
