"""`crabzoo evaluate --meteor` adds METEOR 1.5 to the avcap scores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from crabzoo.errors import CrabzooError
from crabzoo.tasks.evaluate import evaluate, main

from task_records import TRAIN


def avcap_files(tmp_path: Path) -> tuple[Path, Path]:
    captions = ["A man plays the guitar.", "A dog barks at a passing car."]
    records = [{**TRAIN["avcap"], "video_id": f"c{i}", "label_content": f"<answer>{c}</answer>"}
               for i, c in enumerate(captions)]
    ann = tmp_path / "avcap" / "train.json"
    ann.parent.mkdir(parents=True)
    ann.write_text(json.dumps(records))
    preds = tmp_path / "p.jsonl"
    lines = [{"predict": "I hear a guitar. <answer>a man plays the guitar</answer>"}]  # clip 2: no prediction
    preds.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return ann, preds


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs a Java runtime")
def test_cli_meteor_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ann, preds = avcap_files(tmp_path)
    out = tmp_path / "r.json"
    main(["--task", "avcap", "--predictions", str(preds), "--annotations", str(ann), "--out", str(out), "--meteor"])
    assert "meteor" in capsys.readouterr().out
    result = json.loads(out.read_text())
    # clip 1 is exact after tokenisation (METEOR 1.0), clip 2 has no prediction (the empty caption, 0.0); the
    # jar's corpus score pools both clips' statistics, so it is neither 1.0 nor the mean 0.5
    assert result["metrics"]["meteor"] == pytest.approx(0.46315789474, abs=1e-9)  # measured with the jar
    assert result["metrics"]["rouge_l"] == pytest.approx(0.5)
    assert (result["n_total"], result["n_parsed"]) == (2, 1)


def test_meteor_flag_is_for_captioning_only(tmp_path: Path) -> None:
    with pytest.raises(CrabzooError, match="not a captioning task"):
        evaluate("ks", tmp_path / "p.jsonl", tmp_path / "ks" / "test.json", meteor=True)


def test_without_meteor_flag_no_meteor_key(tmp_path: Path) -> None:
    ann, preds = avcap_files(tmp_path)
    result = evaluate("avcap", preds, ann)
    assert "meteor" not in result["metrics"] and result["metrics"]["rouge_l"] == pytest.approx(0.5)
