"""AVE and AVVP metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from crabzoo.metrics import AVESegmentAccuracy, AVVPMetric, ave_segment_accuracy, event_level, segment_level
from crabzoo.metrics.avvp import events_to_matrix


def test_ave_hand_values():
    # truth: bg bg dog dog dog dog dog bg bg bg ; prediction dog over [3, 8):
    # bg bg bg dog dog dog dog dog bg bg -> wrong at seconds 2 and 7 -> 8/10; second clip unparsed -> 0/10
    truth = ["background"] * 2 + ["dog"] * 5 + ["background"] * 3
    m = AVESegmentAccuracy()
    m.update([[("Dog", 3, 8)], None], [truth, {"labels": truth}])
    out = m.compute()
    assert out["accuracy"].item() == pytest.approx(8 / 20)
    assert out["n_total"].item() == 2 and out["n_parsed"].item() == 1


def test_ave_single_event_dict():
    # dog over [2, 7) against truth dog over [2, 8): second 7 wrong -> 9/10
    m = AVESegmentAccuracy()
    m.update([{"label": "dog", "start": 2, "end": 7}], [{"label": "Dog", "start": 2, "end": 8}])
    assert m.compute()["accuracy"].item() == pytest.approx(0.9)


def test_ave_short_prediction_counts_missing_segments_wrong():
    m = AVESegmentAccuracy()
    m.update([["a", "b"]], [["a", "b", "c", "d"]])
    assert m.compute()["accuracy"].item() == pytest.approx(0.5)


def test_ave_functional_argmax_ties_take_first_class():
    scores = np.zeros((1, 10, 3))
    scores[0, :, 0] = scores[0, :, 1] = 0.5  # tie between classes 0 and 1 -> class 0
    gt = np.zeros((1, 10), dtype=int)
    gt[0, :4] = 1
    assert ave_segment_accuracy(scores, gt) == pytest.approx(0.6)


def _video():
    pred = {"audio": [("dog", 0, 3), ("speech", 5, 7)], "visual": [("dog", 2, 6)]}
    truth = {"audio": [("dog", 0, 4)], "visual": [("dog", 2, 6)]}
    return pred, truth


# Hand computation for _video (classes dog, speech):
# segment audio: dog TP3 FN1 -> 6/7, speech FP2 -> 0 => 3/7 ; visual dog TP4 -> 1
# segment AV: truth dog {2,3}, pred dog {2} -> TP1 FN1 -> 2/3 ; pooled: dog TP7 FN1 -> 14/15, speech 0 -> 7/15
# event audio: dog [0,3) vs [0,4) IoU 3/4 -> TP, speech FP -> (1 + 0)/2 ; visual 1 ; AV [2,3) vs [2,4) IoU 1/2 -> 1
# event pooled: dog TP2 -> 1, speech FP1 -> 0 -> 1/2
ONE_VIDEO = {
    "seg_audio": 3 / 7, "seg_visual": 1.0, "seg_av": 2 / 3, "seg_event": 7 / 15,
    "event_audio": 0.5, "event_visual": 1.0, "event_av": 1.0, "event_event": 0.5,
}  # fmt: skip


def test_avvp_one_video_hand_values():
    m = AVVPMetric()
    m.update(*map(list, zip(_video())))
    out = m.compute()
    for key, value in ONE_VIDEO.items():
        assert out[key].item() == pytest.approx(value), key
    assert out["seg_type"].item() == pytest.approx((3 / 7 + 1 + 2 / 3) / 3)
    assert out["event_type"].item() == pytest.approx(5 / 6)


def test_avvp_no_event_video_scores_one_and_unparsed_scores_zero():
    pred, truth = _video()
    empty = {"audio": [], "visual": []}
    m = AVVPMetric()
    m.update([pred, empty, None], [truth, empty, empty])
    out = m.compute()
    for key, value in ONE_VIDEO.items():
        assert out[key].item() == pytest.approx((value + 1.0 + 0.0) / 3), key
    assert out["n_total"].item() == 3 and out["n_parsed"].item() == 2


def test_avvp_duplicate_and_touching_events_merge_into_one_run():
    # two identical predictions and two touching ones are one run [0, 4) -> exact match, F1 1 everywhere
    truth = {"audio": [("dog", 0, 4)], "visual": []}
    m = AVVPMetric()
    m.update([{"audio": [("dog", 0, 2), ("dog", 2, 4), ("dog", 0, 2)], "visual": []}], [truth])
    out = m.compute()
    assert out["seg_audio"].item() == 1.0 and out["event_audio"].item() == 1.0
    assert out["seg_visual"].item() == 1.0  # no visual class is active


def test_avvp_union_of_labels_equals_25_class_matrices():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mats = [(rng.random((25, 10)) < 0.3) * (rng.random((25, 1)) < 0.15) for _ in range(4)]
        pa, pv, ga, gv = (m.astype(float) for m in mats)
        full_s = segment_level(pa, pv, pa * pv, ga, gv, ga * gv)
        full_e = event_level(pa, pv, pa * pv, ga, gv, ga * gv)
        used = [c for c in range(25) if pa[c].any() or pv[c].any() or ga[c].any() or gv[c].any()]
        sub = [m[used] for m in (pa, pv, ga, gv)]
        assert np.allclose(full_s, segment_level(sub[0], sub[1], sub[0] * sub[1], sub[2], sub[3], sub[2] * sub[3]))
        assert np.allclose(full_e, event_level(sub[0], sub[1], sub[0] * sub[1], sub[2], sub[3], sub[2] * sub[3]))


def test_events_to_matrix_clamps_to_ten_segments():
    mat = events_to_matrix([("a", -2, 3), ("a", 8, 14)], ["a"])
    assert mat.tolist() == [[1, 1, 1, 0, 0, 0, 0, 0, 1, 1]]


def test_ave_prediction_without_events_scores_its_background_seconds():
    # truth: dog over seconds 2..4 (3 s), background on the other 7; "no event" is right on those 7
    metric = AVESegmentAccuracy()
    metric.update([{"events": []}], [{"events": [["dog", 2, 5]]}])
    out = metric.compute()
    assert float(out["accuracy"]) == pytest.approx(7 / 10)
    assert int(out["n_parsed"]) == 1
