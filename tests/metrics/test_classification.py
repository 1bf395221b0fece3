"""Classification and MUSIC-AVQA metrics against hand-computed values."""

from __future__ import annotations

import pytest

from crabzoo.errors import CrabzooError
from crabzoo.metrics import ClassificationMetric, MusicAVQAMetric, weighted_f1
from crabzoo.metrics.avqa import question_type
from crabzoo.tasks.base import ParseFailure

PREDS = ["a", " A ", None, "b", "c"]
TARGETS = ["a", "b", "b", "b", "c"]


def test_classification_hand_values():
    # normalised preds: a a <none> b c ; targets: a b b b c
    # accuracy: a=a, a!=b, none, b=b, c=c -> 3/5
    # F1 a: tp 1, predicted 2, support 1 -> 2/3 ; b: tp 1, predicted 1, support 3 -> 2/4 ; c: 1
    # weighted F1 = (2/3 * 1 + 1/2 * 3 + 1 * 1) / 5 = 19/30
    # UAR = (1/1 + 1/3 + 1/1) / 3 = 7/9 ; WAR = accuracy
    m = ClassificationMetric()
    m.update(PREDS, TARGETS)
    out = m.compute()
    assert out["accuracy"].item() == pytest.approx(3 / 5)
    assert out["weighted_f1"].item() == pytest.approx(19 / 30)
    assert out["uar"].item() == pytest.approx(7 / 9)
    assert out["war"].item() == pytest.approx(3 / 5)
    assert out["n_total"].item() == 5 and out["n_parsed"].item() == 4


def test_uar_over_fixed_classes_and_parse_failure_object():
    # class d never occurs in the truth: recall 0 -> (1 + 1/3 + 1 + 0) / 4 = 7/12
    m = ClassificationMetric(primary="uar", classes=["a", "b", "c", "D"])
    m.update([*PREDS[:2], ParseFailure("no tag"), *PREDS[3:]], TARGETS)
    out = m.compute()
    assert out["uar"].item() == pytest.approx(7 / 12)
    assert m.primary == "uar" and out["n_parsed"].item() == 4


def test_all_predictions_unparsed_and_dict_records():
    m = ClassificationMetric()
    m.update([None, {"answer": None}], [{"answer": "x"}, {"label": "y"}])
    out = m.compute()
    assert out["accuracy"].item() == 0.0 and out["weighted_f1"].item() == 0.0 and out["uar"].item() == 0.0
    assert out["n_total"].item() == 2 and out["n_parsed"].item() == 1  # a dict is parsed; its empty answer is wrong


def test_weighted_f1_predicted_only_label_has_no_weight():
    # truth all "a"; predictions a, z: F1(a) = 2*1/(1+2) = 2/3 with weight 2; z has support 0
    assert weighted_f1(["a", "z"], ["a", "a"]) == pytest.approx(2 / 3)


def test_verbatim_comparison_and_bad_primary():
    m = ClassificationMetric(normalize=None)
    m.update(["A"], ["a"])
    assert m.compute()["accuracy"].item() == 0.0
    with pytest.raises(CrabzooError):
        ClassificationMetric(primary="f1")


def test_music_avqa_groups_and_types():
    # A-Count 1/1, A-Comp 0/1 (unparsed), V-Loc 1/1, AV-Temp 0/1, AV-Exist 1/1
    # Audio pools A-Count + A-Comp = 1/2; Visual 1/1; AV 1/2; Avg 3/5
    preds = ["two", None, " Left ", "cello", "yes"]
    targets = [
        {"answer": "two", "type": '["Audio", "Counting"]'},
        {"answer": "yes", "type": '["Audio", "Comparative"]'},
        {"answer": "left", "type": ["Visual", "Location"]},
        {"answer": "piano", "type": '["Audio-Visual", "Temporal"]'},
        {"answer": "yes", "type": '["Audio-Visual", "Existential"]'},
    ]
    m = MusicAVQAMetric()
    m.update(preds, targets)
    out = m.compute()
    expected = {"Avg": 3 / 5, "Audio": 1 / 2, "Visual": 1.0, "AV": 1 / 2, "A-Count": 1.0, "A-Comp": 0.0,
                "V-Loc": 1.0, "AV-Temp": 0.0, "AV-Exist": 1.0}
    for key, value in expected.items():
        assert out[key].item() == pytest.approx(value), key
    assert "V-Count" not in out
    assert out["n_total"].item() == 5 and out["n_parsed"].item() == 4


def test_music_avqa_explicit_types_and_unknown_type():
    m = MusicAVQAMetric()
    m.update(["a", "b"], ["a", "a"], types=["AV-Count", '["Audio-Visual", "Counting"]'])
    assert m.compute()["AV-Count"].item() == pytest.approx(0.5)
    with pytest.raises(CrabzooError):
        question_type('["Audio", "Location"]')


def test_random_against_precision_recall_definitions():
    import random

    from crabzoo.metrics import unweighted_average_recall

    rng = random.Random(3)
    for _ in range(50):
        targets = [rng.choice("abcd") for _ in range(rng.randint(1, 30))]
        preds = [rng.choice(["a", "b", "c", "e", None]) for _ in targets]
        labels = set(targets)
        f1s, recalls = {}, {}
        for c in labels | {p for p in preds if p is not None}:
            tp = sum(1 for p, t in zip(preds, targets) if p == t == c)
            npred, ntrue = sum(p == c for p in preds), sum(t == c for t in targets)
            prec = tp / npred if npred else 0.0
            rec = tp / ntrue if ntrue else 0.0
            f1s[c] = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
            recalls[c] = rec
        expected_f1 = sum(f1s[c] * targets.count(c) for c in labels) / len(targets)
        assert weighted_f1(preds, targets) == pytest.approx(expected_f1)
        assert unweighted_average_recall(preds, targets) == pytest.approx(sum(recalls[c] for c in labels) / len(labels))


def test_metric_for_task_primary_keys():
    from crabzoo.metrics import TASK_METRICS, metric_for_task

    assert metric_for_task("meld").primary == "weighted_f1"
    assert metric_for_task("dfew").primary == "uar"
    assert metric_for_task("ref_avs_null").higher_is_better == {"s": False}
    for task in TASK_METRICS:
        metric = metric_for_task(task)
        assert metric.primary in metric.higher_is_better
    with pytest.raises(CrabzooError):
        metric_for_task("nope")
