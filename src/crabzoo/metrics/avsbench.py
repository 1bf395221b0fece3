"""AVSBench (S4, MS3) mask mIoU and F-score.

Reference: OpenNLPLab/AVSBench ``avs_scripts/avs_s4/utils/utility.py``, functions ``mask_iou``, ``_eval_pr`` and
``Eval_Fmeasure``, called per test batch of one video (5 frames) by ``avs_scripts/avs_s4/test.py``, which then
averages the per-video values (``pyutils.AverageMeter``). Both reference functions take *logits*.

* mIoU: a frame's prediction is ``sigmoid(logit) > 0.5``; IoU = |pred AND gt| / (|pred OR gt| + 1e-7); a frame
  whose ground truth is empty scores the fraction of pixels predicted background (intersection = pixels where
  both are 0, union = all pixels); the video's value is the mean over its frames.
* F-score: ``sigmoid`` then, for 255 thresholds ``linspace(0, 1 - 1e-10, 255)`` (float32, so the last is 1.0),
  ``pred >= t``; precision = TP / (|pred| + 1e-20), recall = TP / (|gt| + 1e-20); F = (1 + 0.3) P R / (0.3 P + R)
  with NaN -> 0; the curve is averaged over the video's frames with non-empty ground truth (frames with empty
  ground truth are skipped; a video with none scores 0), and the video's value is the maximum over thresholds
  of that mean curve. Computed in float32 like the reference.

The structured metric takes probabilities or binary masks by default (``from_logits=False``), which skips the
sigmoid; for binary masks both give the same numbers. An unparsable prediction scores 0 IoU and 0 F for its
video, the worst value either metric can take.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from crabzoo.errors import CrabzooError
from crabzoo.metrics.base import BenchmarkMetric, as_float, check_lengths, field, is_unparsed

BETA2 = 0.3
"""Weight of precision in the F-measure (beta squared)."""

N_THRESHOLDS = 255


def mask_iou(pred: Tensor, target: Tensor, eps: float = 1e-7, from_logits: bool = True) -> float:
    """Mean IoU over frames of one video, as the reference ``mask_iou``.

    Args:
        pred: ``[N, H, W]`` logits (or probabilities with ``from_logits=False``).
        target: ``[N, H, W]`` binary ground truth.
        eps: Added to the union.
        from_logits: Apply the sigmoid first (the reference does).
    """
    if pred.ndim != 3 or pred.shape != target.shape:
        raise CrabzooError(f"mask_iou: expected pred and target of the same [N, H, W] shape, got {tuple(pred.shape)} "
                           f"and {tuple(target.shape)}")
    pred, target = pred.float(), target.float()
    n, num_pixels = pred.shape[0], pred.shape[-1] * pred.shape[-2]
    empty = target.sum(2).sum(1) == 0
    prob = torch.sigmoid(pred) if from_logits else pred
    binary = (prob > 0.5).float()
    inter = (binary * target).sum(2).sum(1)
    union = torch.maximum(binary, target).sum(2).sum(1)
    inter_empty = ((1 - target) * (1 - binary)).sum(2).sum(1)
    inter[empty] = inter_empty[empty]
    union[empty] = float(num_pixels)
    return float(torch.sum(inter / (union + eps)) / n)


def _precision_recall(prob: Tensor, gt: Tensor, num: int) -> tuple[Tensor, Tensor]:
    thresholds = torch.linspace(0, 1 - 1e-10, num)
    above = (prob.unsqueeze(0) >= thresholds.view(-1, 1, 1)).float()
    tp = (above * gt).sum((1, 2))
    precision = tp / (above.sum((1, 2)) + 1e-20)
    recall = tp / (gt.sum() + 1e-20)
    return precision, recall


def eval_fmeasure(
    pred: Tensor, gt: Tensor, measure_path: str | None = None, pr_num: int = N_THRESHOLDS, from_logits: bool = True
) -> float:
    """Max over thresholds of the frame-averaged F-measure curve of one video (reference ``Eval_Fmeasure``).

    Args:
        pred: ``[N, H, W]`` logits (or probabilities with ``from_logits=False``).
        gt: ``[N, H, W]`` binary ground truth.
        measure_path: Ignored; kept so calls written for the reference signature work unchanged.
        pr_num: Number of thresholds (255).
        from_logits: Apply the sigmoid first (the reference does).
    """
    pred, gt = pred.float().cpu(), gt.float().cpu()
    prob = torch.sigmoid(pred) if from_logits else pred
    avg_f, count = torch.zeros(pr_num), 0
    for i in range(prob.shape[0]):
        if torch.mean(gt[i]) == 0.0:
            continue
        precision, recall = _precision_recall(prob[i], gt[i], pr_num)
        f = (1 + BETA2) * precision * recall / (BETA2 * precision + recall)
        f[f != f] = 0
        avg_f = avg_f + f
        count += 1
    if count == 0:
        return 0.0
    return float((avg_f / count).max())


def _as_frames(mask: Any, what: str) -> Tensor:
    mask = torch.as_tensor(mask)
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim != 3:
        raise CrabzooError(f"{what}: expected a mask of shape [H, W] or [F, H, W], got {tuple(mask.shape)}")
    return mask


class AVSBenchMetric(BenchmarkMetric):
    """AVSBench mIoU and F-score over videos (or single frames).

    ``update(preds, targets)``: per sample a mask ``[F, H, W]`` or ``[H, W]`` (bool, probabilities, or logits
    with ``from_logits=True``) or ``None``; targets are binary masks of the same shape (any non-zero pixel is
    foreground) or dicts holding one under ``mask``. Each sample is one reference batch (a video): its mIoU is
    the mean over its frames and its F-score the max of its frame-averaged curve; the dataset values are means
    over samples.

    Args:
        from_logits: Predictions are logits (apply the sigmoid, as the reference does).
    """

    primary = "miou"
    higher_is_better: ClassVar[dict[str, bool]] = {"miou": True, "fscore": True}
    reference: ClassVar[str] = "OpenNLPLab/AVSBench avs_scripts/avs_s4/utils/utility.py mask_iou(), Eval_Fmeasure()"
    row_width: ClassVar[int] = 2

    def __init__(self, from_logits: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.from_logits = from_logits

    def update(self, preds: Sequence[Any], targets: Sequence[Any]) -> None:
        """Add a batch of predicted and true masks."""
        check_lengths(preds, targets, "AVSBenchMetric")
        rows = []
        for p, t in zip(preds, targets):
            gt = (_as_frames(field(t, ("mask", "masks"), "AVSBenchMetric"), "AVSBenchMetric target") != 0).float()
            if is_unparsed(p):
                rows.append([0.0, 0.0])
                continue
            pred = _as_frames(field(p, ("mask", "masks"), "AVSBenchMetric"), "AVSBenchMetric prediction").float()
            if pred.shape != gt.shape:
                raise CrabzooError(f"AVSBenchMetric: predicted mask {tuple(pred.shape)} and ground truth "
                                   f"{tuple(gt.shape)} differ; resize the prediction to the ground truth first")
            rows.append([mask_iou(pred, gt, from_logits=self.from_logits),
                         eval_fmeasure(pred, gt, from_logits=self.from_logits)])
        self._count(preds)
        self._push_rows(rows)

    def compute(self) -> dict[str, Tensor]:
        """``miou`` and ``fscore`` (fractions), ``n_total``, ``n_parsed``."""
        rows = self._all_rows()
        means = rows.mean(0).tolist() if len(rows) else [0.0, 0.0]
        return {"miou": as_float(means[0]), "fscore": as_float(means[1]), **self._counts()}
