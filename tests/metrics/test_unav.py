"""UnAV multi-segment grounding against hand-computed values."""

from __future__ import annotations

import pytest

from crabzoo.metrics import UnAVGroundingMetric


def test_unav_hand_values():
    # video 1: dog: pred union [0,3) vs truth [0,4)+[6,8): 3/6 ; car [2,7) vs [2,5): 3/5 ; cat only predicted: 0
    #          mIoU = (1/2 + 3/5 + 0) / 3 = 11/30. Matching: dog [0,3)~[0,4) IoU .75 (the duplicate is a FP),
    #          car IoU .6 -> TP 2 at .3 and .5, TP 1 at .7 ; 4 predicted, 3 true
    # video 2: nothing predicted, nothing true -> mIoU 1 ; video 3: unparsed, 1 true -> mIoU 0
    # mIoU = (11/30 + 1 + 0) / 3 = 41/90 ; F1 = 2 TP / (4 + 4): .5, .5, .25
    preds = [[("dog", 0, 3), ("Dog", 0, 3), ("car", 2, 7), ("cat", 7, 9)], [], None]
    truths = [[("dog", 0, 4), ("dog", 6, 8), ("car", 2, 5)], {"events": []}, [("dog", 0, 10)]]
    m = UnAVGroundingMetric()
    m.update(preds, truths)
    out = m.compute()
    assert out["miou"].item() == pytest.approx(41 / 90)
    assert out["f1@0.3"].item() == pytest.approx(0.5)
    assert out["f1@0.5"].item() == pytest.approx(0.5)
    assert out["f1@0.7"].item() == pytest.approx(0.25)
    assert (out["n_total"].item(), out["n_parsed"].item()) == (3, 2)


def test_unav_one_to_one_matching():
    # one prediction spanning two true events of the same label matches at most one of them
    m = UnAVGroundingMetric()
    m.update([[("a", 0, 4)]], [[("a", 0, 3), ("a", 1, 4)]])
    out = m.compute()
    assert out["f1@0.5"].item() == pytest.approx(2 * 1 / 3)
    assert out["miou"].item() == pytest.approx(1.0)
