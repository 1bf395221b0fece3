"""``crabzoo predict`` on one process and on two (gloo) writes the same predictions.jsonl into the run
directory, one record per sample, which ``crabzoo evaluate`` scores."""

from __future__ import annotations

import json

import pytest
from ckpt_helpers import TASKS, common_args, fit_args, launch_cli, make_data, run_cli, versions

from crabzoo.paradigms.base import AVLLM
from crabzoo.tasks.evaluate import evaluate
from crabzoo.tasks.evaluate import main as evaluate_main

pytestmark = pytest.mark.slow

FIELDS = {"id", "task", "prompt", "generation", "answer", "parse_ok"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``(data root, runs folder)`` of a 4-step fit that left last.ckpt."""
    data = make_data(tmp_path_factory.mktemp("predict_data"))
    runs = tmp_path_factory.mktemp("predict_runs")
    run_cli(fit_args(data, runs, 4))
    return data, runs


@pytest.fixture(scope="module")
def one_process(trained):
    """Records written by a one-process ``crabzoo predict --ckpt_path last`` in the training's runs folder."""
    data, runs = trained
    run_cli(["predict", *common_args(data, runs), "--ckpt_path", "last"])
    path = versions(runs)[-1] / "predictions.jsonl"
    return path, [json.loads(line) for line in path.read_text().splitlines()]


def test_one_process_writes_one_record_per_sample(trained, one_process):
    data, _ = trained
    path, records = one_process
    expected = [f"{task}/test/{i}" for task in sorted(TASKS) for i in range(4)]
    assert [r["id"] for r in records] == expected  # every test sample once, sorted by task then index
    for r in records:
        assert FIELDS <= set(r) and r["task"] == r["id"].split("/")[0]
        assert "<video>" in r["prompt"] and "<audio>" in r["prompt"]  # the prompt as the model saw it
        assert isinstance(r["generation"], str)
        assert r["parse_ok"] == (r["answer"] is not None) and (r["parse_ok"] or r["parse_error"])
    # crabzoo evaluate reads the file: matched by id, all records of the task, the parse counts agree
    for task in TASKS:
        result = evaluate(task, path, data / "AVUIE_2" / task / "test.json")
        assert result["matched_by"] == "id" and result["n_total"] == 4
        assert result["n_parsed"] == sum(r["parse_ok"] for r in records if r["task"] == task)
    evaluate_main(["--task", "ks", "--predictions", str(path), "--annotations", str(data / "AVUIE_2" / "ks" / "test.json")])


def test_two_processes_write_the_same_records(trained, one_process, tmp_path):
    data, runs = trained
    ckpt = versions(runs)[0] / "checkpoints" / "last.ckpt"
    out = tmp_path / "runs"
    launch_cli(["predict", *common_args(data, out), "--ckpt_path", str(ckpt)], tmp_path)
    (version,) = versions(out)
    records = [json.loads(line) for line in (version / "predictions.jsonl").read_text().splitlines()]
    assert records == one_process[1]


def test_predict_step_of_a_batch_without_samples_generates_nothing():
    skipped = {"id": "ks/test/3", "task": "ks", "split": "test", "truth": {}, "file": "a.mp4", "reason": "bad header"}
    # no model is touched: the batch's only sample had unreadable media
    (record,) = AVLLM.predict_step(None, {"tasks": [], "skipped": [skipped]}, 0)
    assert record["id"] == "ks/test/3" and record["generation"] == "" and not record["parse_ok"]
    assert "a.mp4: bad header" in record["parse_error"]
    assert AVLLM.predict_step(None, {"tasks": [], "skipped": []}, 0) == []
