"""`crabzoo evaluate` scores JSONL predictions (crabzoo's and the official Crab+ inference's) and counts failures."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from crabzoo.errors import CrabzooError
from crabzoo.tasks.evaluate import evaluate, main

from task_records import TEST, write_png


def write_split(folder: Path, records: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "test.json"
    path.write_text(json.dumps(records))
    return path


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def ks_records() -> list[dict]:
    return [{**TEST["ks"], "action": a} for a in ("playing drums", "singing", "playing drums", "dancing")]


def test_cli_by_position_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ann = write_split(tmp_path / "ks", ks_records())
    preds = write_jsonl(tmp_path / "p.jsonl", [
        {"prediction": "I hear drums. <answer>playing drums</answer>"},
        {"output": "<answer>Singing</answer>"},
        {"text": "dancing"},  # no tag: a failure, still in the denominator
    ])  # the fourth record has no line: a failure too
    out = tmp_path / "res" / "r.json"
    main(["--task", "ks", "--predictions", str(preds), "--annotations", str(ann), "--out", str(out)])
    printed = capsys.readouterr().out
    assert "ks: 2/4 parsed (matched by position)" in printed and "accuracy" in printed
    result = json.loads(out.read_text())
    assert result["n_total"] == 4 and result["n_parsed"] == 2
    assert result["metrics"]["accuracy"] == 0.5 and result["primary"] == "accuracy"
    assert result["failures"] == {"no <answer> tag": 1, "no prediction for this record": 1}
    assert result["chance"]["accuracy"] == pytest.approx(1 / 3)
    assert not list(out.parent.glob(".*tmp"))


def test_crab_plus_metadata_lines(tmp_path: Path) -> None:
    """Official inference lines: the test metadata (with the reference in `output`) plus `predict`, any order."""
    records = [{**TEST["avqa"], "question_id": q, "answer": a} for q, a in ((1, "two"), (2, "yes"), (3, "cello"))]
    ann = write_split(tmp_path / "avqa", records)
    lines = [{"vid": r["video_id"], "qid": r["question_id"], "type": r["type"], "output": r["answer"],
              "predict": f"Reasoning. <answer>{r['answer'] if r['question_id'] != 2 else 'no'}</answer>"} for r in records]
    random.Random(0).shuffle(lines)
    result = evaluate("avqa", write_jsonl(tmp_path / "p.jsonl", lines), ann)
    assert result["matched_by"] == "metadata"
    assert result["metrics"]["Avg"] == pytest.approx(2 / 3) and result["n_parsed"] == 3


def test_ids_and_other_tasks(tmp_path: Path) -> None:
    ann = write_split(tmp_path / "ks", ks_records())
    lines = [
        {"id": "ks/test/3", "task": "ks", "prediction": "<answer>dancing</answer>"},
        {"id": "ave/test/0", "task": "ave", "prediction": "<event>x, (0 1)</event>"},  # another task: skipped
        {"id": 0, "task": "ks", "prediction": "<answer>playing drums</answer>"},
    ]
    result = evaluate("ks", write_jsonl(tmp_path / "p.jsonl", lines), ann)
    assert result["matched_by"] == "id" and result["n_parsed"] == 2 and result["metrics"]["accuracy"] == 0.5
    with pytest.raises(CrabzooError, match="id 'ks/test/9' matches no record"):
        evaluate("ks", write_jsonl(tmp_path / "q.jsonl", [{"id": "ks/test/9", "text": "x"}]), ann)


def test_segmentation_end_to_end(tmp_path: Path) -> None:
    records = [{**TEST["s4"], "visual_path": f"AVS/v1s/clip1/frames/{k}.jpg", "frame_idx": k} for k in range(2)]
    ann = write_split(tmp_path / "s4", records)
    for k in range(2):
        mask = np.zeros((224, 224), dtype=np.uint8)
        mask[10:50, 20:60] = 1
        write_png(tmp_path / f"s4/AVS/v1s/clip1/labels_rgb/{k}.png", mask)
    lines = [{"image_path": str(tmp_path / f"s4/AVS/v1s/clip1/frames/{k}.jpg"), "a_obj": "baby", "idx": 0, "tot": 5,
              "predict": "The object making the sound is baby. Its bounding box is [20,10,59,49] and three points on "
                         "it are [30,20], [40,30], [50,40].</s>"} for k in (1, 0)]
    result = evaluate("s4", write_jsonl(tmp_path / "p.jsonl", lines), ann)
    assert result["matched_by"] == "metadata"
    assert result["metrics"]["miou"] == pytest.approx(1.0) and result["metrics"]["category_accuracy"] == 1.0


def test_user_errors(tmp_path: Path) -> None:
    ann = write_split(tmp_path / "ks", ks_records())
    with pytest.raises(CrabzooError, match="unknown task 'nope'"):
        evaluate("nope", tmp_path / "p.jsonl", ann)
    with pytest.raises(CrabzooError, match="predictions file .* not found"):
        evaluate("ks", tmp_path / "missing.jsonl", ann)
    with pytest.raises(CrabzooError, match="annotation file .* not found"):
        evaluate("ks", tmp_path / "p.jsonl", tmp_path / "none.json")
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"foo": 1}])
    with pytest.raises(CrabzooError, match="none of the fields"):
        evaluate("ks", bad, ann)
    many = write_jsonl(tmp_path / "many.jsonl", [{"text": "x"}] * 5)
    with pytest.raises(CrabzooError, match="5 prediction lines but only 4 records"):
        evaluate("ks", many, ann)


def test_dispatcher_routes_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from crabzoo.cli import main as cli_main

    ann = write_split(tmp_path / "ks", ks_records())
    preds = write_jsonl(tmp_path / "p.jsonl", [{"predict": "<answer>playing drums</answer>"}] * 4)
    cli_main(["evaluate", "--task", "ks", "--predictions", str(preds), "--annotations", str(ann)])
    assert "ks: 4/4 parsed" in capsys.readouterr().out


def test_segmentation_mask_protocols(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Frame 0: the predicted box equals the 40 x 40 truth; frame 1: the same box on an empty truth.

    crab_plus (per frame): J = (1 + 0) / 2, F = (1 + 0) / 2. avsbench (one video): IoU = (1 + share of background
    predicted on frame 1) / 2 with that share 1 - 1600 / 224^2; F = 1 (frame 1, with empty truth, is skipped).
    """
    records = [{**TEST["s4"], "visual_path": f"AVS/v1s/clip1/frames/{k}.jpg", "frame_idx": k} for k in range(2)]
    ann = write_split(tmp_path / "s4", records)
    for k in range(2):
        mask = np.zeros((224, 224), dtype=np.uint8)
        if k == 0:
            mask[10:50, 20:60] = 1
        write_png(tmp_path / f"s4/AVS/v1s/clip1/labels_rgb/{k}.png", mask)
    lines = [{"image_path": str(tmp_path / f"s4/AVS/v1s/clip1/frames/{k}.jpg"), "a_obj": "baby", "idx": 0, "tot": 5,
              "predict": "The object making the sound is baby. Its bounding box is [20,10,59,49] and three points on "
                         "it are [30,20], [40,30], [50,40]."} for k in (0, 1)]
    predictions = write_jsonl(tmp_path / "p.jsonl", lines)
    plus = evaluate("s4", predictions, ann, mask_protocol="crab_plus")
    assert plus["mask_protocol"] == "crab_plus"
    assert plus["metrics"]["miou"] == pytest.approx(0.5) and plus["metrics"]["fscore"] == pytest.approx(0.5)
    bench = evaluate("s4", predictions, ann)
    assert bench["mask_protocol"] == "avsbench"
    assert bench["metrics"]["miou"] == pytest.approx((1 + 1 - 1600 / 224**2) / 2, abs=1e-6)
    assert bench["metrics"]["fscore"] == pytest.approx(1.0, abs=1e-6)
    main(["--task", "s4", "--predictions", str(predictions), "--annotations", str(ann), "--mask-protocol", "crab_plus"])
    assert "mask protocol crab_plus" in capsys.readouterr().out
