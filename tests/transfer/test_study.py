"""The study matrix, command lines, skipping of finished runs and reporting of crashed runs."""

import json
import sys

import pytest

from crabzoo.errors import CrabzooError
from crabzoo.transfer.study import DONE, FAILED, Run, StudyConfig, build_runs, execute, run_status


def study_file(tmp_path, **extra):
    body = {
        "out": str(tmp_path / "study"),
        "recipe": ["recipes/quickstart.yaml"],
        "paradigms": {"mod": ["paradigms/tiny/modular-qformer.yaml"], "stc": ["paradigms/tiny/stc.yaml"]},
        "regimes": {"single": {"multitask": False}, "lora": {"configs": ["lora.yaml"]}, "ilora": {"configs": ["ilora.yaml"]}},
        "tasks": ["ks", "ave", "a2v"],
        "seeds": [0, 1],
        **extra,
    }
    path = tmp_path / "study.yaml"
    import yaml

    path.write_text(yaml.safe_dump(body))
    return path


def test_matrix_size_and_commands(tmp_path):
    config = StudyConfig.from_yaml(study_file(tmp_path))
    runs = build_runs(config)
    # per paradigm: single 3 tasks x 2 seeds + 2 multi regimes x 2 seeds = 10
    assert len(runs) == 20
    single = [r for r in runs if r.regime == "single"]
    assert {r.tasks for r in single} == {("ks",), ("ave",), ("a2v",)}
    cmd = next(r.command for r in runs if r.label == "stc/ilora/all/seed1")
    assert cmd[:2] == ("crabzoo", "fit")
    assert cmd[cmd.index("--seed_everything") + 1] == "1"
    assert json.loads(cmd[cmd.index("--data.init_args.tasks") + 1]) == ["ks", "ave", "a2v"]
    assert "ilora.yaml" in cmd and "--trainer.max_epochs" in cmd  # equal-epochs budget by default


def test_equal_steps_budget(tmp_path):
    runs = build_runs(StudyConfig.from_yaml(study_file(tmp_path, budget="steps", steps=7)))
    cmd = runs[0].command
    assert cmd[cmd.index("--trainer.max_steps") + 1] == "7"
    # validated once, after the last step, whatever the epoch length
    assert cmd[cmd.index("--trainer.val_check_interval") + 1] == "7"
    assert cmd[cmd.index("--trainer.check_val_every_n_epoch") + 1] == "null"


@pytest.mark.parametrize(
    "extra, message",
    [({"budget": "hours"}, "budget must be"), ({"colour": 1}, "unknown key"), ({"regimes": {"a": {}, "b": {}}}, "exactly one regime")],
)
def test_bad_study_files(tmp_path, extra, message):
    with pytest.raises(CrabzooError, match=message):
        StudyConfig.from_yaml(study_file(tmp_path, **extra))


def test_finished_runs_are_skipped_and_crashes_reported(tmp_path):
    ok = Run("p", "single", ("ks",), 0, tmp_path / "ok", (sys.executable, "-c", "print('fine')"))
    done = Run("p", "single", ("ave",), 0, tmp_path / "done", (sys.executable, "-c", "raise SystemExit(3)"))
    bad = Run("p", "lora", ("ks", "ave"), 0, tmp_path / "bad", (sys.executable, "-c", "raise SystemExit(3)"))
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / DONE).write_text("{}")
    statuses = execute([ok, done, bad], echo=False)
    assert statuses == {ok.label: "done", done.label: "done", bad.label: "failed"}
    assert json.loads((tmp_path / "bad" / FAILED).read_text())["returncode"] == 3
    assert run_status(bad) == "failed"
    # a failed run is not retried unless asked
    assert execute([bad], echo=False) == {bad.label: "failed"}


def test_runs_share_the_feature_cache_and_validate_once(tmp_path):
    runs = build_runs(StudyConfig.from_yaml(study_file(tmp_path, feature_cache="cache/features", epochs=3)))
    for run in runs:
        cmd = run.command
        assert cmd[cmd.index("--model.init_args.feature_cache") + 1] == "cache/features"
        assert cmd[cmd.index("--trainer.check_val_every_n_epoch") + 1] == "3"
    plain = build_runs(StudyConfig.from_yaml(study_file(tmp_path)))
    assert all("--model.init_args.feature_cache" not in r.command for r in plain)


def test_parallel_jobs_run_together_and_report_each(tmp_path):
    # each run announces itself, then waits for the other's announcement: only concurrent runs both see it
    script = (
        "import sys,time,pathlib; me,other,code=pathlib.Path(sys.argv[1]),pathlib.Path(sys.argv[2]),int(sys.argv[3]); "
        "me.touch(); t=time.time()\n"
        "while not other.exists() and time.time()-t<120: time.sleep(0.05)\n"
        "sys.exit(code if other.exists() else 9)"
    )
    flags = {t: str(tmp_path / f"{t}.started") for t in ("ks", "ave")}
    runs = [
        Run("p", "single", (t,), 0, tmp_path / t, (sys.executable, "-c", script, flags[t], flags[o], code))
        for t, o, code in (("ks", "ave", "0"), ("ave", "ks", "4"))
    ]
    statuses = execute(runs, echo=False, jobs=2)
    assert statuses == {runs[0].label: "done", runs[1].label: "failed"}
    assert json.loads((tmp_path / "ave" / FAILED).read_text())["returncode"] == 4  # its own code, not the timeout's 9


def test_jobs_must_be_positive(tmp_path):
    with pytest.raises(CrabzooError, match="jobs must be at least 1"):
        StudyConfig.from_yaml(study_file(tmp_path, jobs=0))


def test_regime_steps_override_the_epochs_budget(tmp_path):
    regimes = {"single": {"multitask": False}, "lora": {}, "lora-steps": {"steps": 18}}
    runs = build_runs(StudyConfig.from_yaml(study_file(tmp_path, regimes=regimes, epochs=3)))
    equal_epochs = next(r.command for r in runs if r.label == "mod/lora/all/seed0")
    equal_steps = next(r.command for r in runs if r.label == "mod/lora-steps/all/seed0")
    assert equal_epochs[equal_epochs.index("--trainer.max_epochs") + 1] == "3"
    assert equal_steps[equal_steps.index("--trainer.max_steps") + 1] == "18"
    assert equal_steps[equal_steps.index("--trainer.val_check_interval") + 1] == "18"
    assert equal_steps[equal_steps.index("--trainer.max_epochs") + 1] == "-1"
    with pytest.raises(CrabzooError, match="steps must be a positive integer"):
        StudyConfig.from_yaml(study_file(tmp_path, regimes={**regimes, "bad": {"steps": 0}}))


def test_whole_seeds_come_first_and_runs_count_samples_seen(tmp_path):
    runs = build_runs(StudyConfig.from_yaml(study_file(tmp_path)))
    seeds = [r.seed for r in runs]
    assert seeds == sorted(seeds)  # a study stopped early holds whole seeds
    at = [i for i, r in enumerate(runs) if r.regime == "single"][:3]
    assert at == list(range(at[0], at[0] + 3))  # one paradigm's single-task runs of a seed are neighbours...
    assert [runs[i].tasks for i in at] == [("ks",), ("ave",), ("a2v",)]  # ...and encode different clips
    assert "--trainer.callbacks+=crabzoo.monitor.TaskCounter" in runs[0].command


def test_arguments_after_double_dash_reach_every_run(tmp_path, capsys):
    from crabzoo.transfer.cli import main

    main(["--config", str(study_file(tmp_path)), "--dry-run", "--", "--trainer.accelerator", "gpu"])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("crabzoo fit")]
    assert len(lines) == 20 and all(ln.endswith("--trainer.accelerator gpu") for ln in lines)
