"""Crab+'s mask rule (mask_protocol: crab_plus) against hand-computed values, beside the AVSBench protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crabzoo.errors import CrabzooError
from crabzoo.metrics.crab_plus_masks import frame_scores, mean_scores


def box(rows: slice, cols: slice, size: int = 4) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[rows, cols] = True
    return mask


# pred: rows 0-1 x cols 0-1 (4 px); gt: rows 0-1 x cols 1-3 (6 px); overlap: rows 0-1 x col 1 (2 px)
PRED = box(slice(0, 2), slice(0, 2))
GT = box(slice(0, 2), slice(1, 4))
EMPTY = np.zeros((4, 4), dtype=bool)
# J = 2 / 8 ; P = 2 / 4 ; R = 2 / 6 ; F = 1.3 * (1/2) * (1/3) / (0.3 * 1/2 + 1/3) = (13/60) / (29/60) = 13/29
J_ORDINARY, F_ORDINARY = 0.25, 13 / 29


def scores(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float, float, float]:
    """``(J, P, R, F)`` of one frame."""
    out = frame_scores(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None])
    return tuple(float(out[k][0]) for k in ("jaccard", "precision", "recall", "fscore"))


def test_ordinary_frame():
    j, p, r, f = scores(PRED, GT)
    assert (j, p) == (J_ORDINARY, 0.5) and r == pytest.approx(1 / 3, abs=1e-12)
    assert f == pytest.approx(F_ORDINARY, abs=1e-12)


def test_empty_union_scores_jaccard_one():
    # nothing predicted and nothing true: J = 1 ; P = 1 and R = 1, so F = 1.3 / 1.3 = 1
    assert scores(EMPTY, EMPTY) == (1.0, 1.0, 1.0, 1.0)


def test_no_predicted_pixel_scores_precision_one():
    # P = 1 (nothing predicted), R = 0 / 6 = 0 -> F = 1.3 * 0 / (0.3 + 0) = 0 ; J = 0 / 6 = 0
    assert scores(EMPTY, GT) == (0.0, 1.0, 0.0, 0.0)


def test_no_ground_truth_pixel_scores_recall_one():
    # R = 1 (nothing true), P = 0 / 4 = 0 -> F = 1.3 * 0 / (0 + 1) = 0 ; J = 0 / 4 = 0
    assert scores(PRED, EMPTY) == (0.0, 0.0, 1.0, 0.0)


def test_prediction_inside_the_truth():
    # pred rows 0-1 x col 1 (2 px, all true): J = 2/6, P = 1, R = 2/6, F = 1.3 * (1/3) / (0.3 + 1/3) = 13/19
    j, p, r, f = scores(box(slice(0, 2), slice(1, 2)), GT)
    assert (j, p, r) == pytest.approx((1 / 3, 1.0, 1 / 3), abs=1e-12) and f == pytest.approx(13 / 19, abs=1e-12)


def test_mean_over_frames():
    preds = torch.from_numpy(np.stack([PRED, EMPTY, PRED, EMPTY]))
    gts = torch.from_numpy(np.stack([GT, EMPTY, EMPTY, GT]))
    j, f = mean_scores(preds, gts)
    assert j == pytest.approx((J_ORDINARY + 1 + 0 + 0) / 4, abs=1e-12)
    assert f == pytest.approx((F_ORDINARY + 1 + 0 + 0) / 4, abs=1e-12)
    assert mean_scores(preds[:0], gts[:0]) == (0.0, 0.0)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(CrabzooError, match="same \\[N, H, W\\] shape"):
        frame_scores(torch.zeros(1, 4, 4), torch.zeros(1, 4, 5))


def segmentation_metric(protocol: str):
    from crabzoo.tasks import get_task

    return get_task("s4").make_metric(protocol=protocol)


def truth(mask: np.ndarray, video: str) -> dict:
    return {"mask": mask, "video": video, "category": "dog"}


def test_segmentation_metric_protocols_on_the_same_frames():
    """Video a: the ordinary frame and a frame with empty truth; video b: one empty frame; then one unparsed frame.

    crab_plus: mean over the four frames of J = (1/4, 0, 1, 0) and F = (13/29, 0, 1, 0).
    avsbench: per video, then over videos. a: IoU (1/4 + 12/16) / 2 = 1/2 (an empty truth scores the share of
    background predicted), F of its one non-empty frame = max over thresholds = 13/29; b: IoU 1, F 0 (no
    non-empty truth); the unparsed frame (scored as the complement of its truth) is its own video with IoU 0;
    its F is that of threshold 0 of the sweep, where every pixel counts as predicted: P = 6/16, R = 1,
    F = 1.3 * 0.375 / (0.1125 + 1) -> mIoU (1/2 + 1 + 0) / 3 = 1/2, F (13/29 + 0 + 0.4875 / 1.1125) / 3.
    """
    from crabzoo.tasks.base import ParseFailure

    preds = [{"mask": PRED, "category": "dog"}, {"mask": PRED, "category": "dog"}, {"mask": EMPTY, "category": "cat"},
             ParseFailure("no box", "")]
    truths = [truth(GT, "a"), truth(EMPTY, "a"), truth(EMPTY, "b"), truth(GT, "c")]
    out = {}
    for protocol in ("crab_plus", "avsbench"):
        metric = segmentation_metric(protocol)
        assert metric.protocol == protocol
        metric.update(preds, truths)
        out[protocol] = {k: float(v) for k, v in metric.compute().items()}
    plus, bench = out["crab_plus"], out["avsbench"]
    assert plus["miou"] == pytest.approx((0.25 + 0 + 1 + 0) / 4, abs=1e-6)
    assert plus["fscore"] == pytest.approx((13 / 29 + 0 + 1 + 0) / 4, abs=1e-6)
    assert bench["miou"] == pytest.approx(0.5, abs=1e-5)
    assert bench["fscore"] == pytest.approx((13 / 29 + 0.4875 / 1.1125) / 3, abs=1e-5)
    for result in (plus, bench):
        assert (result["n_total"], result["n_parsed"]) == (4, 3)
        assert result["category_accuracy"] == pytest.approx(2 / 4)


def test_unknown_protocol_names_the_choices():
    with pytest.raises(CrabzooError, match="avsbench or crab_plus"):
        segmentation_metric("crab")


def test_protocol_line_of_the_report():
    from crabzoo.report import protocols_markdown

    assert protocols_markdown({}) == ""
    assert protocols_markdown({"s4": "crab_plus", "ms3": "crab_plus"}) == "\nMask protocol: ms3: crab_plus, s4: crab_plus.\n"
