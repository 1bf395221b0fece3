"""Budget arithmetic: equal epochs (every task seen E times in every regime) versus equal steps."""

from __future__ import annotations

import json

import pytest
import yaml

from crabzoo.data.datamodule import TaskBatchSampler
from crabzoo.errors import CrabzooError
from crabzoo.transfer.budget import run_budgets, steps_per_epoch
from crabzoo.transfer.study import StudyConfig, build_runs

SIZES = {"ks": 100, "ave": 30, "a2v": 7}  # batch 8: ceil -> 13, 4, 1 steps per epoch; floor -> 12, 3, 0


def test_equal_epochs_by_hand() -> None:
    b = run_budgets(SIZES, batch_size=8, budget="epochs", epochs=4)
    assert {s: b[s]["steps"] for s in b} == {"ks": 52, "ave": 16, "a2v": 4, "all": 72}  # 72 = (13 + 4 + 1) x 4
    for scope in b:  # every task sees its data 4 times in both regimes
        assert set(b[scope]["passes"].values()) == {4.0}


def test_equal_steps_by_hand() -> None:
    b = run_budgets(SIZES, batch_size=8, budget="steps", steps=72)
    assert {s: b[s]["steps"] for s in b} == {"ks": 72, "ave": 72, "a2v": 72, "all": 72}
    assert b["ks"]["passes"] == {"ks": pytest.approx(72 / 13)}
    assert b["ave"]["passes"] == {"ave": 18.0} and b["a2v"]["passes"] == {"a2v": 72.0}
    assert b["all"]["passes"] == {"ks": 4.0, "ave": 4.0, "a2v": 4.0}  # the multi-task run sees each task less often


def test_drop_last_and_too_small_tasks() -> None:
    assert [steps_per_epoch(n, 8, drop_last=True) for n in (100, 30, 16)] == [12, 3, 2]
    b = run_budgets({"ks": 100, "ave": 30}, batch_size=8, epochs=2, drop_last=True)
    assert b["all"]["steps"] == 30 and b["ks"]["steps"] == 24 and b["ave"]["steps"] == 6
    with pytest.raises(CrabzooError, match="a2v"):
        run_budgets(SIZES, batch_size=8, drop_last=True)
    with pytest.raises(CrabzooError, match="budget must be"):
        run_budgets(SIZES, batch_size=8, budget="hours")


@pytest.mark.parametrize("drop_last", [False, True])
def test_arithmetic_matches_the_task_batch_sampler(drop_last: bool) -> None:
    sizes = {"ks": 100, "ave": 30, "s4": 17}
    task_of = [t for t, n in sizes.items() for _ in range(n)]
    b = run_budgets(sizes, batch_size=8, epochs=1, drop_last=drop_last)
    assert len(TaskBatchSampler(task_of, 8, seed=0, drop_last=drop_last)) == b["all"]["steps"]
    for task, n in sizes.items():
        assert len(TaskBatchSampler([task] * n, 8, drop_last=drop_last)) == b[task]["steps"]


def test_epochs_budget_gives_every_run_the_same_epochs_and_no_step_cap(tmp_path) -> None:
    body = {
        "out": str(tmp_path / "s"), "recipe": ["r.yaml"], "paradigms": {"p": ["p.yaml"]},
        "regimes": {"single": {"multitask": False}, "lora": {}}, "tasks": list(SIZES), "budget": "epochs", "epochs": 4,
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(body))
    runs = build_runs(StudyConfig.from_yaml(tmp_path / "s.yaml"))
    assert len(runs) == 4
    for run in runs:
        cmd = run.command
        assert cmd[cmd.index("--trainer.max_epochs") + 1] == "4" and cmd[cmd.index("--trainer.max_steps") + 1] == "-1"
        assert json.loads(cmd[cmd.index("--data.init_args.tasks") + 1]) == list(run.tasks)
