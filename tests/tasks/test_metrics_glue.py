"""Each task's metric takes parser outputs: oracles score 100%, trivial baselines their chance level, failures count."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from crabzoo.tasks import TASKS, ParseFailure, get_task

from task_records import TEST, write_png


def oracle(task, truths):
    return [task.parse(task.format_target(t, evidence="I hear it and I see it.")) for t in truths]


def scores(task, preds, truths):
    metric = task.make_metric()
    metric.update(preds, truths)
    return {k: float(v) for k, v in metric.compute().items()}


LABELS = ["angry", "calm", "happy", "sad"]


def balanced(name: str) -> list[dict]:
    group = TASKS[name].group
    if group == "matching":
        return [{"answer": a} for a in ["1", "2"] * 4]
    if group in ("action", "emotion"):
        return [{"answer": LABELS[i % 4]} for i in range(12)]
    if name == "avqa":
        return [{"answer": a, "type": t} for a in ("yes", "no", "two") for t in ('["Audio", "Counting"]', '["Visual", "Location"]')]
    if name == "avqa_thu":
        opts = ["a", "b", "c", "d"]
        return [{"answer": opts[i], "options": opts} for i in range(4)]
    if name == "ave":
        return [{"events": [["dog", 0, 4]]}, {"events": [["car", 2, 10]]}, {"events": [["dog", 5, 6]]}]
    if name == "unav":
        return [{"events": [["dog", 0, 4], ["car", 3, 10]]}, {"events": [["dog", 1, 2], ["dog", 5, 9]]}]
    if name == "avvp":
        return [{"audio": [["speech", 0, 10]], "visual": [["dog", 1, 3], ["dog", 5, 8]]},
                {"audio": [["dog", 2, 4]], "visual": []}]
    if name == "arig":
        return [{"category": "dog", "box": [10, 20, 100, 200]}, {"category": "cat", "box": [0, 0, 50, 60]}]
    if name == "avcap":
        caps = ["a man plays the guitar on a stage", "a dog barks loudly in the yard", "two cars race along a road"]
        return [{"caption": c, "captions": [c]} for c in caps]
    raise KeyError(name)


NON_SPATIAL = [n for n in TASKS if n not in ("s4", "ms3", "ref_avs")]


@pytest.mark.parametrize("name", NON_SPATIAL)
def test_oracle_scores_full_marks(name: str) -> None:
    task = get_task(name)
    truths = balanced(name)
    out = scores(task, oracle(task, truths), truths)
    assert out["n_total"] == out["n_parsed"] == len(truths)
    primary, directions = task.metric_info()
    assert primary in out and set(out) - {"n_total", "n_parsed"} <= set(directions)
    if name == "avcap":
        assert out["bleu_4"] == pytest.approx(1.0, abs=1e-6) and out["rouge_l"] == pytest.approx(1.0)
        assert out["cider_d"] > 1.0
    else:
        assert out[primary] == pytest.approx(1.0)


@pytest.mark.parametrize("name", [n for n in TASKS if TASKS[n].group in ("matching", "action", "emotion")] + ["avqa_thu"])
def test_trivial_baseline_scores_chance(name: str) -> None:
    task = get_task(name)
    truths = balanced(name)
    labels = task.label_set(truths)
    out = scores(task, [task.baseline(t, labels) for t in truths], truths)
    chance = task.chance(truths)
    assert chance and chance["accuracy"] == pytest.approx(out["accuracy"])
    expected = {"matching": 0.5, "action": 0.25, "emotion": 0.25, "qa": 0.25}[task.group]
    assert out["accuracy"] == pytest.approx(expected)
    if "uar" in chance:
        assert out["uar"] == pytest.approx(chance["uar"])


def test_chance_by_baseline_for_structured_tasks() -> None:
    # AVE: the whole clip labelled "car" (the first label): per-second accuracy over 30 seconds
    ave = get_task("ave")
    truths = balanced("ave")
    labels = ave.label_set(truths)
    out = scores(ave, [ave.baseline(t, labels) for t in truths], truths)
    assert out["accuracy"] == pytest.approx(8 / 30)  # only clip 2's seconds 2..9 are "car"
    assert ave.chance(truths) == {"accuracy": pytest.approx(1 / 3)}
    arig = get_task("arig")
    result = arig.chance(balanced("arig"))
    assert set(result) == {"ciou", "auc", "miou"} and result["ciou"] == 0.0  # a full-frame box never reaches IoU 0.5 here
    assert get_task("avvp").chance(balanced("avvp"))["seg_type"] < 1.0


def test_failures_count_as_wrong() -> None:
    ks = get_task("ks")
    truths = [{"answer": "a"}, {"answer": "b"}, {"answer": "c"}, {"answer": "d"}]
    texts = ["<answer>a</answer>", "<answer>b</answer>", "<answer>c</answer>", "the answer is d"]
    out = scores(ks, [ks.parse(t) for t in texts], truths)
    assert out["n_total"] == 4 and out["n_parsed"] == 3 and out["accuracy"] == 0.75
    ave = get_task("ave")
    out = scores(ave, [ParseFailure("x"), ave.parse("<event>dog, (0 10)</event>")], [{"events": [["dog", 0, 10]]}] * 2)
    assert out["accuracy"] == 0.5 and out["n_parsed"] == 1
    avqa = get_task("avqa")
    truths = [{"answer": "two", "type": '["Audio", "Counting"]'}] * 2
    out = scores(avqa, [avqa.parse("<answer>Two</answer>"), avqa.parse("two")], truths)
    assert out["Avg"] == 0.5 and out["n_parsed"] == 1


def _box_mask(x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    mask = np.zeros((224, 224, 3), dtype=np.uint8)
    mask[y1 : y2 + 1, x1 : x2 + 1] = 255
    return mask


def test_segmentation_through_the_prompt_stage(tmp_path: Path) -> None:
    s4 = get_task("s4")
    samples = []
    for k in range(3):
        record = {**TEST["s4"], "visual_path": f"AVS/v1s/clip1/frames/{k}.jpg", "frame_idx": k}
        samples.append(s4.sample_from_record(record, k, "test", tmp_path))
        write_png(Path(samples[-1].truth["mask_path"]), _box_mask(20, 10, 59, 49))  # 40 x 40 square
    texts = [
        "The object making the sound is baby. Its bounding box is [20,10,59,49] and three points on it are [30,20], [40,30], [50,40].",
        "The object making the sound is dog. Its bounding box is [20,10,99,49] and three points on it are [30,20], [40,30], [50,40].",
        "I cannot tell.",
    ]
    out = scores(s4, [s4.parse(t) for t in texts], [s.truth for s in samples])
    assert out["n_total"] == 3 and out["n_parsed"] == 2
    assert out["miou"] == pytest.approx((1.0 + 0.5 + 0.0) / 3, abs=1e-6)  # one video of three frames
    # F-score of the video: the frame-averaged F curve (beta^2 = 0.3) at its best threshold; frame 2 has P = 0.5, R = 1
    assert out["fscore"] == pytest.approx((1.0 + 1.3 * 0.5 / (0.3 * 0.5 + 1.0) + 0.0) / 3, abs=1e-4)
    assert out["category_accuracy"] == pytest.approx(1 / 3)
    # a Crab v1 mask-token prediction is scored directly
    gt = _box_mask(20, 10, 59, 49)[..., 0] > 0
    out = scores(s4, [{"mask": gt}], [samples[0].truth])
    assert out["miou"] == pytest.approx(1.0) and out["fscore"] == pytest.approx(1.0, abs=1e-4)


def test_ref_avs_splits(tmp_path: Path) -> None:
    ref = get_task("ref_avs")
    seen = ref.sample_from_record(TEST["ref_avs"], 0, "test", tmp_path)
    write_png(Path(seen.truth["mask_path"]), _box_mask(0, 0, 111, 223))
    null = ref.sample_from_record({**TEST["ref_avs"], "split": "test_n", "uid": "n1"}, 1, "test", tmp_path)
    null2 = ref.sample_from_record({**TEST["ref_avs"], "split": "test_n", "uid": "n2"}, 2, "test", tmp_path)
    preds = [
        ref.parse("<answer>true</answer> The object is guitar. Its bounding box is [0,0,111,223] and three points on it are [1,1], [2,2], [3,3]."),
        ref.parse("<answer>false</answer> The object is absent."),
        ref.parse("<answer>true</answer> The object is guitar. Its bounding box is [0,0,55,223] and three points on it are [1,1], [2,2], [3,3]."),
    ]
    out = scores(ref, preds, [seen.truth, null.truth, null2.truth])
    assert out["miou_seen"] == pytest.approx(1.0) and out["miou"] == pytest.approx(1.0)
    assert out["s_null"] == pytest.approx((0.0 + math.sqrt(56 * 224 / 224**2)) / 2)
    assert out["exists_accuracy"] == pytest.approx(2 / 3)
    primary, directions = ref.metric_info()
    assert primary == "miou" and directions["s_null"] is False


def test_an_unparsed_frame_scores_the_whole_frame_f_under_avsbench_and_zero_under_crab_plus() -> None:
    from crabzoo.tasks.seg_metric import SegmentationMetric

    gt = np.zeros((224, 224), dtype=bool)
    gt[:112, :112] = True  # a quarter of the frame
    whole_frame_f = 1.3 * 0.25 * 1.0 / (0.3 * 0.25 + 1.0)  # P = 1/4, R = 1 at threshold 0
    for pred in (None, {"mask": np.zeros_like(gt)}):  # unparsed, and an empty mask: the same scores
        for protocol, f in (("avsbench", whole_frame_f), ("crab_plus", 0.0)):
            metric = SegmentationMetric(protocol=protocol)
            metric.update([pred], [{"mask": gt, "video": "v", "split": "test"}])
            out = metric.compute()
            assert float(out["miou"]) == pytest.approx(0.0, abs=1e-6)
            assert float(out["fscore"]) == pytest.approx(f, abs=1e-4), (protocol, pred is None)
