"""Segmentation metric glue: parsed predictions -> masks -> mIoU / F-score (and Ref-AVS null S).

Two mask protocols, chosen with ``protocol`` (``model.init_args.mask_protocol`` in YAML):

* ``avsbench`` (default): frames are grouped into videos (the reference scores each video's frames together:
  mIoU is the mean over frames, the F-score the max of the video's frame-averaged precision/recall curve),
  then averaged over videos (:mod:`crabzoo.metrics.avsbench`).
* ``crab_plus``: Crab+'s own rule on binary masks, averaged over frames (:mod:`crabzoo.metrics.crab_plus_masks`):
  Jaccard 1 on an empty union, P = 1 with no predicted pixel, R = 1 with no ground-truth pixel.

The Ref-AVS null split is scored with S in both.
An unparsable frame is scored with the mask that is wrong on every pixel (the complement of the ground
truth): it contributes 0 to the IoU, and 0 to Crab+'s F; the AVSBench F-score sweep starts at threshold 0,
where every pixel of any prediction is foreground, so there its F is that whole-frame point's, as the
reference gives any wrong or empty binary mask. On the Ref-AVS null split it scores S = 1, the worst value.
Masks are kept bit-packed (224 x 224 -> 6.3 kB per frame) in process-synced ``cat`` states.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from crabzoo.metrics import AVSBenchMetric, RefAVSNullMetric
from crabzoo.errors import CrabzooError
from crabzoo.metrics.base import BenchmarkMetric, PrimaryTerms, as_float, check_lengths, is_unparsed
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

    def _unit_scores(
        self, groups: dict[str, list[int]], preds: Tensor, gts: Tensor
    ) -> tuple[list[list[int]], np.ndarray]:
        """The protocol's scoring units and their ``[miou, fscore]`` rows (``[U, 2]``).

        A unit is a video (its frames scored together) under ``avsbench`` and a frame under ``crab_plus``.
        """
        if self.protocol == "crab_plus":
            from crabzoo.metrics.crab_plus_masks import frame_scores

            rows = [i for group in groups.values() for i in group]
            if not rows:
                return [], np.zeros((0, 2))
            frames = frame_scores(preds[rows], gts[rows])
            scores = torch.stack([frames["jaccard"], frames["fscore"]], 1).double().numpy()
            return [[i] for i in rows], scores
        metric = AVSBenchMetric(from_logits=False)
        for rows in groups.values():
            metric.update([preds[rows]], [gts[rows]])
        return list(groups.values()), metric._all_rows().cpu().numpy()

    def _scores(self, groups: dict[str, list[int]], preds: Tensor, gts: Tensor) -> tuple[float, float]:
        units, scores = self._unit_scores(groups, preds, gts)
        if not units:
            return 0.0, 0.0
        return float(scores[:, 0].mean()), float(scores[:, 1].mean())

    def _groups(self, records: list[Any]) -> dict[str, dict[str, list[int]]]:
        """Split key (``all``, ``seen``, ``unseen``, the null split) -> video key -> frame positions."""
        by_split: dict[str, dict[str, list[int]]] = {}
        for i, (video, _, split, _, _) in enumerate(records):
            key = split if split == NULL_SPLIT else SPLIT_NAMES.get(split, "all")
            by_split.setdefault(key, {}).setdefault(f"{split}/{video}" if video else f"#{i}", []).append(i)
        return by_split

    def sample_states(self) -> list[dict[str, Any]] | None:
        """Each frame's record plus its predicted and true masks (bit-packed, base64) under ``masks``."""
        states = super().sample_states()
        if states is None:
            return None
        pred, gt = self._packed(self.pred_bits), self._packed(self.gt_bits)
        if len(pred) != len(states) or len(gt) != len(states):
            return None
        for state, p, g in zip(states, pred, gt):
            state["masks"] = [base64.b64encode(p.tobytes()).decode("ascii"), base64.b64encode(g.tobytes()).decode("ascii")]
        return states

    def load_sample_states(self, states: Sequence[dict[str, Any]]) -> None:
        """Reset, then hold exactly ``states`` (records and masks, see :meth:`sample_states`).

        Raises:
            CrabzooError: A state without masks (recorded before masks were kept).
        """
        if any(not state.get("masks") for state in states):
            raise CrabzooError(
                "SegmentationMetric: a per-sample state has no masks (recorded by an older version); "
                "score the run again to record them"
            )
        super().load_sample_states(states)
        device = self.n_total.device
        if states:
            pred = np.stack([np.frombuffer(base64.b64decode(s["masks"][0]), dtype=np.uint8) for s in states])
            gt = np.stack([np.frombuffer(base64.b64decode(s["masks"][1]), dtype=np.uint8) for s in states])
            self.pred_bits.append(torch.from_numpy(pred.copy()).to(device))
            self.gt_bits.append(torch.from_numpy(gt.copy()).to(device))

    @staticmethod
    def _packed(state: Any) -> np.ndarray:
        if isinstance(state, list):
            if not state:
                return np.zeros((0, 0), dtype=np.uint8)
            state = torch.cat(state)
        return state.cpu().numpy()

    def primary_terms(self) -> PrimaryTerms | None:
        """mIoU as a mean over the protocol's units (videos or frames) of the positive splits."""
        records = self._all_records()
        positive = {v: rows for k, g in self._groups(records).items() if k != NULL_SPLIT for v, rows in g.items()}
        if not positive:
            return None
        units, scores = self._unit_scores(positive, self._masks(self.pred_bits), self._masks(self.gt_bits))
        return PrimaryTerms(scores[:, 0].astype(np.float64), np.ones(len(units)), tuple(tuple(u) for u in units))

    def compute(self) -> dict[str, Tensor]:
        """``miou``, ``fscore``, ``category_accuracy`` (s4 / ms3) or the Ref-AVS split keys, with the counts."""
        records = self._all_records()
        preds, gts = self._masks(self.pred_bits), self._masks(self.gt_bits)
        out: dict[str, Tensor] = {}
        by_split = self._groups(records)
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
