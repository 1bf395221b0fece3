"""AVSBench, Ref-AVS null and ARIG metrics against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from crabzoo.metrics import ARIGMetric, AVSBenchMetric, RefAVSNullMetric, ciou_auc, eval_fmeasure, mask_iou

PROBS = torch.tensor([[[0.9, 0.2], [0.7, 0.1]], [[0.8, 0.0], [0.0, 0.3]]])
GT = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])


def test_avsbench_miou_empty_ground_truth_rule():
    # frame 1: pred {(0,0),(1,0)} vs gt {(0,0),(0,1)} -> 1/3 ; frame 2: empty truth, 3 of 4 pixels predicted
    # background -> 3/4 ; video = (1/3 + 3/4) / 2 = 13/24
    assert mask_iou(PROBS, GT, from_logits=False) == pytest.approx(13 / 24, abs=1e-6)
    assert mask_iou(torch.logit(PROBS.clamp(1e-6, 1 - 1e-6)), GT) == pytest.approx(13 / 24, abs=1e-6)


def test_avsbench_fscore_hand_value():
    # only frame 1 counts (frame 2 has empty truth). Scores .9 .2 .7 .1 vs truth 1 1 0 0:
    # t <= .1: P 1/2 R 1 -> .565 ; (.1,.2]: P 2/3 R 1 -> .722 ; (.2,.7]: P 1/2 R 1/2 -> .5 ;
    # (.7,.9]: P 1 R 1/2 -> 1.3 * .5 / (.3 + .5) = .8125 ; above: 0 => max .8125
    assert eval_fmeasure(PROBS, GT, from_logits=False) == pytest.approx(0.8125, abs=1e-6)


def test_avsbench_fscore_all_empty_truth_is_zero():
    assert eval_fmeasure(PROBS, torch.zeros_like(GT), from_logits=False) == 0.0


def test_avsbench_metric_parse_failure_and_binary_masks():
    m = AVSBenchMetric()
    m.update([PROBS, None], [GT, GT])
    out = m.compute()
    assert out["miou"].item() == pytest.approx(13 / 48, abs=1e-6)
    assert out["fscore"].item() == pytest.approx(0.40625, abs=1e-6)
    assert (out["n_total"].item(), out["n_parsed"].item()) == (2, 1)
    # a binary mask gives the same numbers with or without the sigmoid path
    binary = PROBS > 0.5
    a, b = AVSBenchMetric(), AVSBenchMetric(from_logits=True)
    a.update([binary], [GT.bool()])
    b.update([binary.float() * 20 - 10], [GT])
    assert a.compute()["miou"].item() == pytest.approx(b.compute()["miou"].item())
    assert a.compute()["fscore"].item() == pytest.approx(b.compute()["fscore"].item())


def test_avsbench_single_frame_and_empty_prediction():
    # empty prediction, empty truth: IoU 1 ; empty prediction, non-empty truth: IoU 0
    m = AVSBenchMetric()
    m.update([torch.zeros(4, 4), torch.zeros(4, 4)], [torch.zeros(4, 4), torch.ones(4, 4)])
    assert m.compute()["miou"].item() == pytest.approx(0.5)


def test_refavs_null_s():
    # 2 of 8 pixels foreground -> sqrt(1/4) = 1/2 ; empty -> 0 ; unparsed -> 1 ; mean 1/2
    mask = torch.zeros(2, 2, 2)
    mask[0, 0, :] = 1
    m = RefAVSNullMetric()
    m.update([mask, torch.zeros(2, 2, 2), None])
    out = m.compute()
    assert out["s"].item() == pytest.approx(0.5)
    assert m.higher_is_better == {"s": False}
    assert (out["n_total"].item(), out["n_parsed"].item()) == (3, 2)


def test_arig_ciou_auc_hand_values():
    # IoUs: 1/3 (boxes), 1 (same box), 0 (unparsed), 1 (box on a mask) -> cIoU 2/4
    # success curve: 1 at t=0, .75 for t in .05...30, .5 for t in .35...1.0
    # AUC = .05*(1+.75)/2 + 5*.05*.75 + .05*(.75+.5)/2 + 13*.05*.5 = .5875
    gt_mask = torch.zeros(4, 4)
    gt_mask[:2, :2] = 1
    m = ARIGMetric()
    m.update(
        [(0, 0, 10, 10), (0, 0, 10, 10), None, {"box": [0, 0, 2, 2]}],
        [(5, 0, 15, 10), {"box": (0, 0, 10, 10)}, (0, 0, 1, 1), {"mask": gt_mask.numpy()}],
    )
    out = m.compute()
    assert out["ciou"].item() == pytest.approx(0.5)
    assert out["auc"].item() == pytest.approx(0.5875)
    assert out["miou"].item() == pytest.approx((1 / 3 + 2) / 4)
    assert (out["n_total"].item(), out["n_parsed"].item()) == (4, 3)


def test_arig_threshold_float_quirk():
    # 0.05 * 3 is 0.15000000000000002, so an IoU of exactly 0.15 fails that threshold (as in the reference)
    ciou, auc = ciou_auc([0.15])
    assert ciou == 0.0
    assert auc == pytest.approx(0.05 * 2 + 0.05 * 0.5)
