"""On real AVSynth data: targets parse back to the truth, the oracle scores 100%, the trivial baseline its chance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crabzoo.tasks import ParseFailure, get_task
from crabzoo.tasks.masks import read_mask

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def avsynth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from crabzoo.data.avsynth import synthesize

    out = tmp_path_factory.mktemp("avsynth")
    synthesize(out, clips=40, seed=3)
    return out / "AVUIE_2"


def samples(root: Path, name: str, split: str) -> list:
    task = get_task(name)
    folder = root / name
    records = json.loads((folder / f"{split}.json").read_text())
    return [task.sample_from_record(r, i, split, folder) for i, r in enumerate(records)]


def folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def test_every_task_folder_is_known(avsynth: Path) -> None:
    names = folders(avsynth)
    assert "emotion" in names and "s4" in names and len(names) >= 15
    for name in names:
        get_task(name)


def test_training_targets_parse_to_the_truth(avsynth: Path) -> None:
    for name in folders(avsynth):
        task = get_task(name)
        for s in samples(avsynth, name, "train"):
            parsed = task.parse(s.target)
            assert not isinstance(parsed, ParseFailure), (name, s.target)
            assert task.answer_part(parsed) == task.answer_part(s.truth), (name, s.target)


def test_oracle_scores_full_marks(avsynth: Path) -> None:
    for name in folders(avsynth):
        task = get_task(name)
        test = samples(avsynth, name, "test")
        if task.group == "spatial" and name != "arig":
            preds = [{"mask": read_mask(s.truth["mask_path"]), "exists": s.truth.get("exists", True), "category":
                      s.truth.get("category")} if s.truth.get("mask_path") else task.parse(task.format_target(s.truth))
                     for s in test]
        else:
            preds = [task.parse(task.format_target(s.truth)) for s in test]
        metric = task.make_metric()
        metric.update(preds, [s.truth for s in test])
        out = {k: float(v) for k, v in metric.compute().items()}
        assert out["n_total"] == out["n_parsed"] == len(test), name
        if name == "avcap":
            assert out["bleu_4"] == pytest.approx(1.0, abs=1e-6) and out["rouge_l"] == pytest.approx(1.0), name
        else:
            assert out[task.primary] == pytest.approx(1.0, abs=1e-6), (name, out)


def test_trivial_baseline_scores_chance(avsynth: Path) -> None:
    for name in ("ks", "ucf", "emotion", "a2v", "v2a", "avqa_thu"):
        task = get_task(name)
        truths = [s.truth for s in samples(avsynth, name, "test")]
        labels = task.label_set(truths)
        metric = task.make_metric()
        metric.update([task.baseline(t, labels) for t in truths], truths)
        out = {k: float(v) for k, v in metric.compute().items()}
        chance = task.chance(truths)
        key = "uar" if name != "avqa_thu" else "accuracy"
        if name == "avqa_thu":  # the first option is right as often as the correct option comes first
            expected = sum(t["options"][0] == t["answer"] for t in truths) / len(truths)
            assert out["accuracy"] == pytest.approx(expected)
        else:  # a constant guess has recall 1 on its own class and 0 elsewhere: UAR = 1/|classes|
            guess = task.baseline(truths[0], labels)["answer"]
            present = {t["answer"] for t in truths}
            classes = getattr(metric, "classes", None) or present  # a declared class list counts absent classes
            expected = (guess in present) / len(classes)
            assert out[key] == pytest.approx(expected), (name, out, chance)
            if present == set(classes):  # every class occurs: that is the documented chance level
                assert out[key] == pytest.approx(chance[key]), (name, out, chance)
