"""Segmentation metric glue: parsed predictions -> masks -> mIoU / F-score (and Ref-AVS null S).

Two mask protocols, chosen with ``protocol`` (``model.init_args.mask_protocol`` in YAML):

* ``avsbench`` (default): frames are grouped into videos (the reference scores each video's frames together:
  mIoU is the mean over frames, the F-score the max of the video's frame-averaged precision/recall curve),
  then averaged over videos (:mod:`crabzoo.metrics.avsbench`).
* ``crab_plus``: Crab+'s own rule on binary masks, averaged over frames (:mod:`crabzoo.metrics.crab_plus_masks`):
  Jaccard 1 on an empty union, P = 1 with no predicted pixel, R = 1 with no ground-truth pixel.

The Ref-AVS null split is scored with S in both.
An unparsable frame is scored with the mask that is wrong on every pixel (the complement of the ground
truth), so it contributes 0 to both IoU and F; on the Ref-AVS null split it scores S = 1, the worst value.
Masks are kept bit-packed (224 x 224 -> 6.3 kB per frame) in process-synced ``cat`` states.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from crabzoo.metrics import AVSBenchMetric, RefAVSNullMetric
from crabzoo.errors import CrabzooError
from crabzoo.metrics.base import BenchmarkMetric, as_float, check_lengths, is_unparsed
from crabzoo.tasks.masks import SIZE, default_prompter, prediction_mask, read_mask

NULL_SPLIT = "test_n"
SPLIT_NAMES = {"test_s": "seen", "test_u": "unseen"}

MASK_PROTOCOLS = ("avsbench", "crab_plus")
"""Names of the mask protocols (see the module docstring)."""


def check_protocol(protocol: str) -> str:
    """``protocol`` if it names a mask protocol, else a :class:`CrabzooError` listing them."""
    if protocol not in MASK_PROTOCOLS:
        raise CrabzooError(
            f"mask_protocol {protocol!r} is unknown: choose {' or '.join(MASK_PROTOCOLS)} (model.init_args.mask_protocol)"
        )
    return protocol


class SegmentationMetric(BenchmarkMetric):
    """mIoU and F-score of s4 / ms3 / ref_avs predictions, with Ref-AVS per-split keys.

    ``update(preds, truths)``: ``preds`` are parser outputs (``{"box", "points", ...}``, ``{"exists": False}``,
    ``{"mask": array}`` for a mask-token model, or a failure); ``truths`` are the tasks' truth dicts with
    ``mask_path`` (or ``mask``), ``video`` (grouping key), ``category`` / ``name`` and, for ref_avs, ``split``.

    Args:
        prompter: Prompt stage turning box + points into a mask (default: box filling).
        protocol: ``avsbench`` or ``crab_plus`` (see the module docstring).
    """

    primary = "miou"
    higher_is_better: ClassVar[dict[str, bool]] = {"miou": True, "fscore": True, "category_accuracy": True}
    reference: ClassVar[str] = (
        "OpenNLPLab/AVSBench utility.py mask_iou / Eval_Fmeasure; GeWu-Lab/Ref-AVS metric_s_for_null"
    )

    ref: ClassVar[bool] = False

    def __init__(self, prompter: Any = None, protocol: str = "avsbench", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.protocol = check_protocol(protocol)
        self.prompter = prompter if prompter is not None else default_prompter()
        self.add_state("pred_bits", default=[], dist_reduce_fx="cat")
        self.add_state("gt_bits", default=[], dist_reduce_fx="cat")

    def _truth_mask(self, truth: dict[str, Any]) -> np.ndarray:
        if truth.get("mask") is not None:
            from crabzoo.tasks.masks import resize_mask

            return resize_mask(truth["mask"], SIZE)
        if truth.get("split") == NULL_SPLIT or not truth.get("mask_path"):
            return np.zeros(SIZE, dtype=bool)
        return read_mask(truth["mask_path"], SIZE)

    def update(self, preds: Sequence[Any], targets: Sequence[Any]) -> None:
        """Add a batch of frames (one prediction and one truth dict per frame)."""
        check_lengths(preds, targets, "SegmentationMetric")
        records, pbits, gbits = [], [], []
        for p, t in zip(preds, targets):
            gt = self._truth_mask(t)
            parsed = not is_unparsed(p)
            pred = prediction_mask(p, self.prompter, t.get("image_path"), SIZE) if parsed else ~gt
            name = t.get("category") if t.get("category") is not None else t.get("name")
            said = p.get("category", p.get("name")) if parsed else None
            category_ok = parsed and None not in (name, said) and str(said).strip().lower() == str(name).strip().lower()
            exists_ok = parsed and bool(p.get("exists", True)) == bool(t.get("exists", True))
            video, split = str(t.get("video", "")), str(t.get("split", ""))
            records.append([video, parsed, split, bool(category_ok), bool(exists_ok)])
            pbits.append(np.packbits(pred.reshape(-1)))
            gbits.append(np.packbits(gt.reshape(-1)))
        self._count(preds)
        self._push_records(records)
        if pbits:
            self.pred_bits.append(torch.from_numpy(np.stack(pbits)).to(self.n_total.device))
            self.gt_bits.append(torch.from_numpy(np.stack(gbits)).to(self.n_total.device))

    def _masks(self, state: Any) -> Tensor:
        width = SIZE[0] * SIZE[1]
        if isinstance(state, list):
            if not state:
                return torch.zeros(0, *SIZE)
            state = torch.cat(state)
        bits = np.unpackbits(state.cpu().numpy().reshape(-1, (width + 7) // 8), axis=1)[:, :width]
        return torch.from_numpy(bits.reshape(-1, *SIZE).astype(np.float32))

    def _scores(self, groups: dict[str, list[int]], preds: Tensor, gts: Tensor) -> tuple[float, float]:
        if self.protocol == "crab_plus":
            from crabzoo.metrics.crab_plus_masks import mean_scores

            rows = [i for group in groups.values() for i in group]
            return mean_scores(preds[rows], gts[rows])
        metric = AVSBenchMetric(from_logits=False)
        for rows in groups.values():
            metric.update([preds[rows]], [gts[rows]])
        out = metric.compute()
        return float(out["miou"]), float(out["fscore"])

    def compute(self) -> dict[str, Tensor]:
        """``miou``, ``fscore``, ``category_accuracy`` (s4 / ms3) or the Ref-AVS split keys, with the counts."""
        records = self._all_records()
        preds, gts = self._masks(self.pred_bits), self._masks(self.gt_bits)
        out: dict[str, Tensor] = {}
        by_split: dict[str, dict[str, list[int]]] = {}
        for i, (video, _, split, _, _) in enumerate(records):
            key = split if split == NULL_SPLIT else SPLIT_NAMES.get(split, "all")
            by_split.setdefault(key, {}).setdefault(f"{split}/{video}" if video else f"#{i}", []).append(i)
        positive = {v: rows for k, g in by_split.items() if k != NULL_SPLIT for v, rows in g.items()}
        miou, fscore = self._scores(positive, preds, gts) if positive else (0.0, 0.0)
        out["miou"], out["fscore"] = as_float(miou), as_float(fscore)
        if self.ref:
            for name in ("seen", "unseen"):
                if name in by_split:
                    m, f = self._scores(by_split[name], preds, gts)
                    out[f"miou_{name}"], out[f"fscore_{name}"] = as_float(m), as_float(f)
            if NULL_SPLIT in by_split:
                null = RefAVSNullMetric(from_logits=False)
                for rows in by_split[NULL_SPLIT].values():
                    null.update([preds[rows]])
                out["s_null"] = as_float(float(null.compute()["s"]))
            out["exists_accuracy"] = as_float(sum(r[4] for r in records) / len(records) if records else 0.0)
        else:
            out["category_accuracy"] = as_float(sum(r[3] for r in records) / len(records) if records else 0.0)
        return {**out, **self._counts()}


class RefAVSMetric(SegmentationMetric):
    """Ref-AVS: mIoU / F-score over the seen and unseen splits together and apart, S on the null split, and the
    share of correct true/false (object present) answers."""

    ref: ClassVar[bool] = True
    higher_is_better: ClassVar[dict[str, bool]] = {
        "miou": True, "fscore": True, "miou_seen": True, "fscore_seen": True,
        "miou_unseen": True, "fscore_unseen": True, "s_null": False, "exists_accuracy": True,
    }  # fmt: skip
