"""UnAV multi-segment grounding against hand-computed values (mIoU, F1 and the official detection mAP)."""

from __future__ import annotations

import pytest

from crabzoo.metrics import UnAVGroundingMetric, unav_scores
from crabzoo.metrics.unav import MAP_THRESHOLDS, detection_map, remove_duplicates


def scores(preds, truths) -> dict[str, float]:
    m = UnAVGroundingMetric()
    m.update(preds, truths)
    return {k: v.item() for k, v in m.compute().items()}


def test_official_thresholds():
    # np.linspace(0.1, 0.9, 9) as the UnAV code builds them: 0.3 and 0.7 are a hair above the decimal value
    assert MAP_THRESHOLDS[2] == 0.30000000000000004 and MAP_THRESHOLDS[6] == 0.7000000000000001
    assert MAP_THRESHOLDS[4] == 0.5 and MAP_THRESHOLDS[5] == 0.6


def test_unav_hand_values():
    # video 1: dog: pred union [0,3) vs truth [0,4)+[6,8): 3/6 ; car [2,7) vs [2,5): 3/5 ; cat only predicted: 0
    #          mIoU = (1/2 + 3/5 + 0) / 3 = 11/30. Matching: dog [0,3)~[0,4) IoU .75 (the duplicate is a FP),
    #          car IoU .6 -> TP 2 at .3 and .5, TP 1 at .7 ; 4 predicted, 3 true
    # video 2: nothing predicted, nothing true -> mIoU 1 ; video 3: unparsed, 1 true -> mIoU 0
    # mIoU = (11/30 + 1 + 0) / 3 = 41/90 ; F1 = 2 TP / (4 + 4): .5, .5, .25
    # mAP over the true classes {dog, car} (cat has no true event: not scored):
    #   dog: 3 true, 2 predicted, TP 1 while t <= .75 -> AP (1/3)(1/2) = 1/6 ; car: AP 1 while t <= .6
    #   t = .1 .. .6: (1/6 + 1) / 2 = 7/12 ; t = .7: 1/12 ; t = .8, .9: 0 -> average (6 * 7/12 + 1/12) / 9
    preds = [[("dog", 0, 3), ("Dog", 0, 3), ("car", 2, 7), ("cat", 7, 9)], [], None]
    truths = [[("dog", 0, 4), ("dog", 6, 8), ("car", 2, 5)], {"events": []}, [("dog", 0, 10)]]
    out = scores(preds, truths)
    assert out["miou"] == pytest.approx(41 / 90)
    assert (out["f1@0.3"], out["f1@0.5"], out["f1@0.7"]) == pytest.approx((0.5, 0.5, 0.25))
    assert out["map@0.5"] == pytest.approx(7 / 12) and out["map@0.6"] == pytest.approx(7 / 12)
    assert out["map@0.7"] == pytest.approx(1 / 12)
    assert out["map@0.8"] == 0.0 and out["map@0.9"] == 0.0
    assert out["map_avg"] == pytest.approx(43 / 108)
    assert (out["n_total"], out["n_parsed"]) == (3, 2)


def test_unav_one_to_one_matching():
    # one prediction spanning two true events of the same label matches at most one of them
    out = scores([[("a", 0, 4)]], [[("a", 0, 3), ("a", 1, 4)]])
    assert out["f1@0.5"] == pytest.approx(2 * 1 / 3)
    assert out["miou"] == pytest.approx(1.0)
    # mAP: 2 true, 1 predicted, 1 TP (IoU .75) -> (1/2)(1/1) for t <= .7, 0 above
    assert out["map@0.7"] == pytest.approx(0.5) and out["map@0.8"] == 0.0


def test_official_matching_is_sequential_not_global():
    # predictions [0,6) then [0,4); truths [0,4) and [2,8) of one label. IoUs: p1-g1 4/6, p1-g2 4/8, p2-g1 1,
    # p2-g2 2/8. F1 matches globally by IoU: p2-g1, then p1-g2 (.5) -> TP 2 at .5 -> F1 1.
    # The official detection matching takes predictions in order: p1 takes g1 (4/6 > 4/8), p2 finds g1 taken
    # and g2 below .5 -> TP 1 -> AP (1/2)(1/2) = 1/4
    out = scores([[("a", 0, 6), ("a", 0, 4)]], [[("a", 0, 4), ("a", 2, 8)]])
    assert out["f1@0.5"] == pytest.approx(1.0)
    assert out["map@0.5"] == pytest.approx(0.25)


def test_overlapping_predictions_of_one_label():
    # predictions [0,6) and [4,10) against truths [0,5) and [5,10): the interval unions are both [0,10) -> mIoU 1;
    # each prediction overlaps its truth at 5/6 and the other one at 1/10 -> TP 2 up to t = 5/6
    out = scores([[("a", 0, 6), ("a", 4, 10)]], [[("a", 0, 5), ("a", 5, 10)]])
    assert out["miou"] == pytest.approx(1.0)
    assert out["f1@0.7"] == pytest.approx(1.0)
    assert out["map@0.8"] == pytest.approx(1.0) and out["map@0.9"] == 0.0
    assert out["map_avg"] == pytest.approx(8 / 9)


def test_no_predicted_events():
    out = scores([[], None], [[("a", 0, 5)], [("b", 1, 2)]])
    assert out["miou"] == 0.0 and out["f1@0.5"] == 0.0
    assert out["map@0.5"] == 0.0 and out["map_avg"] == 0.0


def test_no_true_events():
    # nothing true and nothing predicted: every score 1 ; predictions without any true event: 0
    nothing = scores([[], []], [[], []])
    assert nothing["miou"] == 1.0 and nothing["f1@0.5"] == 1.0 and nothing["map_avg"] == 1.0
    spurious = scores([[("a", 0, 5)], []], [[], []])
    assert spurious["miou"] == pytest.approx(0.5)  # video 1 scores 0, video 2 scores 1
    assert spurious["f1@0.5"] == 0.0 and spurious["map_avg"] == 0.0


def test_duplicate_true_events_are_dropped():
    # the official evaluation drops a true event repeating one of the same label within 1e-3 s
    assert remove_duplicates([("a", 0.0, 5.0), ("a", 0.0005, 5.0), ("b", 0.0, 5.0), ("a", 0.0, 5.1)]) == [
        ("a", 0.0, 5.0), ("b", 0.0, 5.0), ("a", 0.0, 5.1)]
    out = scores([[("a", 0, 5)]], [[("a", 0, 5), ("a", 0, 5.0005)]])
    assert out["f1@0.5"] == pytest.approx(1.0) and out["map_avg"] == pytest.approx(1.0)


def test_tiou_exactly_at_threshold():
    # IoU 7/10 = 0.7 passes F1's 0.7 but not the official 0.7000000000000001; 3/5 = 0.6 passes mAP's 0.6
    out = scores([[("a", 0, 7)], [("b", 0, 3)]], [[("a", 0, 10)], [("b", 0, 5)]])
    assert out["f1@0.7"] == pytest.approx(0.5)  # a counts, b (0.6) does not
    assert out["map@0.6"] == pytest.approx(1.0) and out["map@0.7"] == pytest.approx(0.0)


def test_labels_outside_the_true_classes_do_not_enter_map():
    assert detection_map([[("a", 0, 5), ("z", 0, 5)]], [[("a", 0, 5)]])[0.5] == 1.0
    assert unav_scores([[("a", 0, 5), ("z", 0, 5)]], [[("a", 0, 5)]])["f1@0.5"] == pytest.approx(2 / 3)
