"""Primary scores as ratios of sums over units, and the weighted-sum bootstrap that uses them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crabzoo.errors import CrabzooError
from crabzoo.metrics.base import PrimaryTerms
from crabzoo.tasks import get_task
from crabzoo.transfer.bootstrap import mean_metric, paired_bootstrap_seeds, paired_bootstrap_terms
from crabzoo.transfer.samples import metric_samples, recompute


def _terms(task: str, preds: list, truths: list) -> tuple[PrimaryTerms, dict[str, float]]:
    metric = get_task(task).make_metric()
    metric.update(preds, truths)
    return metric.primary_terms(), {k: float(v) for k, v in metric.compute().items()}


def test_accuracy_terms_count_unparsed_answers_as_wrong() -> None:
    terms, scores = _terms("ks", [{"answer": "dog"}, {"answer": "cat"}, None, {"answer": "Car "}],
                           [{"answer": "dog"}, {"answer": "dog"}, {"answer": "car"}, {"answer": "car"}])
    assert terms.num.tolist() == [1.0, 0.0, 0.0, 1.0] and terms.den.tolist() == [1.0] * 4
    assert terms.units == ((0,), (1,), (2,), (3,)) and terms.exact
    assert terms.score() == scores["accuracy"] == 0.5


def test_a_primary_that_is_not_a_ratio_has_no_terms() -> None:
    from crabzoo.metrics.classification import ClassificationMetric

    metric = ClassificationMetric(primary="weighted_f1")
    metric.update(["a", "b"], ["a", "a"])
    assert metric.primary_terms() is None


def test_ave_pools_segments_over_clips() -> None:
    # clip 1: 10 segments, 6 right (dog 0-4 predicted 0-6: seconds 4 and 5 wrong, background elsewhere right)
    terms, scores = _terms("ave", [{"events": [["dog", 0, 6]]}, None],
                           [{"events": [["dog", 0, 4]]}, {"events": [["car", 2, 10]]}])
    assert terms.num.tolist() == [8.0, 0.0] and terms.den.tolist() == [10.0, 10.0]
    assert terms.score() == pytest.approx(scores["accuracy"]) == pytest.approx(8 / 20)


def test_avqa_average_is_the_mean_over_questions() -> None:
    truths = [{"answer": "yes", "type": '["Audio", "Counting"]'}, {"answer": "two", "type": '["Visual", "Location"]'},
              {"answer": "no", "type": '["Audio-Visual", "Existential"]'}]
    terms, scores = _terms("avqa", [{"answer": "yes"}, {"answer": "three"}, {"answer": "no"}], truths)
    assert terms.num.tolist() == [1.0, 0.0, 1.0]
    assert terms.score() == pytest.approx(scores["Avg"]) == pytest.approx(2 / 3)


def test_cider_terms_average_to_the_corpus_score_and_are_marked_inexact() -> None:
    caps = ["a man plays the guitar on a stage", "a dog barks loudly in the yard", "two cars race along a road"]
    preds = [{"caption": caps[0]}, {"caption": "a dog barks in a yard"}, None]
    terms, scores = _terms("avcap", preds, [{"captions": [c]} for c in caps])
    assert not terms.exact and terms.num[2] == 0.0
    assert terms.score() == pytest.approx(scores["cider_d"], abs=1e-12)


def _seg_metric(protocol: str = "avsbench"):
    from crabzoo.tasks.seg_metric import SegmentationMetric

    return SegmentationMetric(protocol=protocol)


def _frames() -> tuple[list, list]:
    gt = np.zeros((224, 224), dtype=bool)
    gt[0:112, 0:112] = True  # a quarter of the frame
    half = np.zeros_like(gt)
    half[0:112, 0:56] = True  # half of the object: IoU 1/2
    preds = [{"mask": gt}, {"mask": half}, None, {"mask": gt}]
    truths = [{"mask": gt, "video": v, "split": "test", "category": "dog"} for v in ("a", "a", "a", "b")]
    return preds, truths


def test_segmentation_states_keep_masks_and_rebuild_the_same_scores() -> None:
    preds, truths = _frames()
    metric = _seg_metric()
    metric.update(preds, truths)
    scores = {k: float(v) for k, v in metric.compute().items()}
    states = metric_samples(metric)
    assert len(states) == 4 and all(len(s["masks"]) == 2 for s in states)
    rebuilt = recompute(_seg_metric(), states)
    assert rebuilt.pop("n_parsed") == 4  # restored states count as parsed: the unparsed frame's mask is in its state
    assert rebuilt == pytest.approx({k: v for k, v in scores.items() if k != "n_parsed"})
    # video a: frames IoU 1, 1/2, 0 -> 1/2; video b: 1 -> mIoU 3/4
    assert scores["miou"] == pytest.approx(0.75)
    with pytest.raises(CrabzooError, match="no masks"):
        _seg_metric().load_sample_states([{k: v for k, v in s.items() if k != "masks"} for s in states])


def test_segmentation_units_are_videos_under_avsbench_and_frames_under_crab_plus() -> None:
    preds, truths = _frames()
    avsbench = _seg_metric()
    avsbench.update(preds, truths)
    terms = avsbench.primary_terms()
    assert terms.units == ((0, 1, 2), (3,)) and terms.num.tolist() == pytest.approx([0.5, 1.0])
    crab_plus = _seg_metric("crab_plus")
    crab_plus.update(preds, truths)
    terms = crab_plus.primary_terms()
    assert terms.units == ((0,), (1,), (2,), (3,)) and terms.num.tolist() == pytest.approx([1.0, 0.5, 0.0, 1.0])
    assert terms.score() == pytest.approx(float(crab_plus.compute()["miou"]))


def test_terms_bootstrap_equals_the_recomputing_bootstrap_for_a_mean() -> None:
    single = [1, 0, 0, 1, 0, 1, 0, 0, 1, 1]
    multi = [1, 1, 0, 1, 1, 1, 0, 1, 0, 1]
    slow = paired_bootstrap_seeds([(single, multi)], mean_metric, n_resamples=300, seed=4)
    fast = paired_bootstrap_terms([(PrimaryTerms.per_sample(single), PrimaryTerms.per_sample(multi))], 300, seed=4)
    assert fast == pytest.approx(slow, abs=1e-12)


def test_whole_units_are_drawn() -> None:
    # two videos: on the first multi-task is right and single-task wrong (Δ 1), on the second both right (Δ 0).
    # A resample draws video 1 zero, one or two times of two: Δ is 0, 1/2 or 1 with probabilities 1/4, 1/2, 1/4.
    units = ((0, 1, 2), (3, 4))
    single = PrimaryTerms(np.array([0.0, 1.0]), np.ones(2), units)
    multi = PrimaryTerms(np.array([1.0, 1.0]), np.ones(2), units)
    delta, lo, hi = paired_bootstrap_terms([(single, multi)], n_resamples=4000, seed=0, alpha=0.2)
    assert (delta, lo, hi) == (0.5, 0.0, 1.0)
    assert paired_bootstrap_terms([(single, multi)], n_resamples=4000, seed=0, alpha=0.6) == (0.5, 0.5, 0.5)
    # lower-is-better flips the sign
    assert paired_bootstrap_terms([(single, multi)], 100, higher_is_better=False)[0] == -0.5


def test_pooled_ratio_weights_numerators_and_denominators_together() -> None:
    # one sample of 10 segments (all right) and one of 2 (all wrong): every resample's pooled accuracy is
    # 10 k / (10 k + 2 (2 - k)) for k draws of the first sample
    s = PrimaryTerms.per_sample([0.0, 0.0], [10.0, 2.0])
    m = PrimaryTerms.per_sample([10.0, 0.0], [10.0, 2.0])
    delta, lo, hi = paired_bootstrap_terms([(s, m)], n_resamples=2000, seed=1, alpha=0.2)
    assert delta == pytest.approx(10 / 12) and lo == 0.0 and hi == 1.0


def test_units_must_match_across_runs() -> None:
    a = PrimaryTerms.per_sample([1.0, 0.0])
    b = PrimaryTerms(np.array([1.0]), np.ones(1), ((0, 1),))
    with pytest.raises(CrabzooError, match="units differ"):
        paired_bootstrap_terms([(a, b)])
    with pytest.raises(CrabzooError, match="empty"):
        paired_bootstrap_terms([(PrimaryTerms.per_sample([]), PrimaryTerms.per_sample([]))])
    with pytest.raises(CrabzooError, match="no \\(single, multi\\)"):
        paired_bootstrap_terms([])


def test_states_on_a_device_tensor_round_trip() -> None:
    metric = get_task("ave").make_metric()
    metric.update([{"events": [["dog", 0, 4]]}], [{"events": [["dog", 0, 4]]}])
    fresh = get_task("ave").make_metric()
    fresh.load_sample_states(metric_samples(metric) * 3)
    assert int(fresh.n_total) == 3 and float(fresh.compute()["accuracy"]) == 1.0
    assert fresh._all_rows().dtype == torch.float64
