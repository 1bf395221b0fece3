"""AVSynth targets parse back to their structured ground truth; the oracle and trivial baselines score as documented."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from crabzoo.data.avsynth import AVSYNTH_TASKS, synthesize
from crabzoo.data.avuie import read_split
from crabzoo.tasks import ParseFailure, get_task

SPATIAL = ("s4", "ms3", "ref_avs")


@pytest.mark.parametrize("task_name", AVSYNTH_TASKS)
def test_targets_parse_back_to_the_ground_truth(avsynth_root: Path, task_name: str) -> None:
    task = get_task(task_name)
    train = read_split(avsynth_root, task_name, "train", strict=True).samples
    assert train
    for sample in train:
        parsed = task.parse(sample.target)
        assert not isinstance(parsed, ParseFailure), (sample.id, sample.target)
        assert task.answer_part(parsed) == task.answer_part(sample.truth), sample.id
        extra = sample.record["avsynth"]
        if task_name in ("s4", "ms3", "ref_avs", "arig") and extra.get("box") is not None:
            assert parsed["box"] == extra["box"]
            if task_name != "arig":
                assert parsed["points"] == extra["points"]
        if task_name in ("ave", "unav"):
            assert sorted(map(tuple, parsed["events"])) == sorted(map(tuple, extra["events"]))
        if task_name == "avvp":
            for modality in ("audio", "visual"):
                assert sorted(map(tuple, parsed[modality])) == sorted(map(tuple, extra[modality]))


@pytest.mark.parametrize("task_name", AVSYNTH_TASKS)
def test_oracle_scores_full_marks(avsynth_root: Path, task_name: str) -> None:
    task = get_task(task_name)
    truths = [s.truth for s in read_split(avsynth_root, task_name, "test", strict=True).samples][:5]
    preds = [task.parse(task.format_target(t, "I hear it and I see it.")) for t in truths]
    metric = task.make_metric()
    metric.update(preds, truths)
    out = {k: float(v) for k, v in metric.compute().items()}
    assert out["n_parsed"] == out["n_total"] == len(truths)
    primary, _ = task.metric_info()
    if task_name == "avcap":
        assert out["bleu_4"] == pytest.approx(1.0, abs=1e-6)
    elif task_name not in SPATIAL:  # segmentation goes through the box-filling prompt stage
        assert out[primary] == pytest.approx(1.0), out


@pytest.mark.parametrize("task_name", AVSYNTH_TASKS)
def test_empty_prediction_scores_nothing(avsynth_root: Path, task_name: str) -> None:
    task = get_task(task_name)
    truths = [s.truth for s in read_split(avsynth_root, task_name, "test", strict=True).samples][:5]
    metric = task.make_metric()
    metric.update([task.parse("") for _ in truths], truths)
    out = {k: float(v) for k, v in metric.compute().items()}
    assert out["n_parsed"] == 0 and out["n_total"] == len(truths)


CHANCE = {"a2v": 0.5, "v2a": 0.5, "ks": 1 / 6, "ucf": 1 / 8, "emotion": 1 / 6, "avqa_thu": 0.25}
"""Documented chance accuracy of the classification-like AVSynth tasks (docs/avsynth.md)."""


@pytest.mark.slow
def test_majority_baseline_is_near_chance(tmp_path: Path) -> None:
    out = synthesize(tmp_path, 6 * 48, seed=11, tasks=tuple(CHANCE), soundtrack=False, test_fraction=0.5, size=32)
    for name, chance in CHANCE.items():
        task = get_task(name)
        train = [s.truth for s in read_split(out["root"], name, "train").samples]
        test = [s.truth for s in read_split(out["root"], name, "test").samples]
        if name == "avqa_thu":  # majority option position is meaningless; the first option is the trivial guess
            preds = [{"answer": t["options"][0]} for t in test]
        else:
            majority = Counter(str(t["answer"]) for t in train).most_common(1)[0][0]
            preds = [{"answer": majority} for _ in test]
        metric = task.make_metric()
        metric.update(preds, test)
        acc = float(metric.compute()["accuracy"])
        assert abs(acc - chance) < 0.2, (name, acc, chance)


def test_avqa_questions_use_music_avqa_types() -> None:
    from crabzoo.data.avsynth.tasks import _avqa_question, qa_scene
    from crabzoo.data.avsynth.world import Knobs
    from crabzoo.metrics.avqa import question_type

    import numpy as np

    seen = set()
    for seed in range(300):
        rng = np.random.default_rng(seed)
        scene = qa_scene(rng, Knobs(), 10, seed)
        qtype, question, answer, _ = _avqa_question(rng, scene)
        seen.add(question_type(__import__("json").dumps(qtype)))
        assert question.endswith("?") and answer
    assert seen == {"A-Count", "V-Count", "AV-Count", "A-Comp", "AV-Comp", "AV-Temp", "V-Loc", "AV-Loc", "AV-Exist"}
