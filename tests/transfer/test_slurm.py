"""The SLURM array script: valid bash, one array index per run, each index runs exactly its run's command."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import yaml

from crabzoo.transfer.cli import main
from crabzoo.transfer.slurm import slurm_script
from crabzoo.transfer.study import DONE, FAILED, StudyConfig, build_runs, run_status


def _study(tmp_path: Path) -> Path:
    body = {
        "out": str(tmp_path / "study"),
        "recipe": ["recipes/quickstart.yaml"],
        "paradigms": {"mod": ["paradigms/tiny/modular-qformer.yaml"], "stc": ["paradigms/tiny/stc.yaml"]},
        "regimes": {"single": {"multitask": False}, "lora": {"configs": ["lora.yaml"]}},
        "tasks": ["ks", "ave", "a2v"],
        "seeds": [0, 1],
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_script_parses_and_names_every_run_once(tmp_path: Path) -> None:
    study = _study(tmp_path)
    runs = build_runs(StudyConfig.from_yaml(study))
    assert len(runs) == 16  # per paradigm: 3 tasks x 2 seeds single + 2 seeds multi
    main(["--config", str(study), "--emit", "slurm", "--sbatch=--gres=gpu:1"])
    script = tmp_path / "study" / "transfer.slurm"
    text = script.read_text()
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    assert "#SBATCH --array=0-15\n" in text and "#SBATCH --gres=gpu:1\n" in text
    labels = re.findall(r"^  (\d+)\)  # (\S+)$", text, flags=re.M)
    assert [int(i) for i, _ in labels] == list(range(16))
    assert [label for _, label in labels] == [r.label for r in runs]
    for run in runs:  # each command line appears exactly once, verbatim
        assert text.count(f"cmd=({shlex.join(run.command)})\n") == 1
    assert "--report-only" in text


def _fake_crabzoo(tmp_path: Path, rc: int) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "crabzoo"
    fake.write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > "{tmp_path}/argv.txt"\nexit {rc}\n')
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_one_index_runs_exactly_its_command_and_marks_it_done(tmp_path: Path) -> None:
    runs = build_runs(StudyConfig.from_yaml(_study(tmp_path)))
    script = tmp_path / "job.sh"
    script.write_text(slurm_script(runs, "study.yaml"))
    env = {**_fake_crabzoo(tmp_path, 0), "SLURM_ARRAY_TASK_ID": "5"}
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "argv.txt").read_text().splitlines() == list(runs[5].command[1:])
    assert json.loads((runs[5].directory / DONE).read_text())["label"] == runs[5].label
    assert run_status(runs[5]) == "done" and run_status(runs[4]) == "pending"
    # a second submission of the same index skips the finished run
    (tmp_path / "argv.txt").unlink()
    assert subprocess.run(["bash", str(script)], env=env, capture_output=True).returncode == 0
    assert not (tmp_path / "argv.txt").exists()


def test_failed_run_is_marked_and_out_of_range_index_is_an_error(tmp_path: Path) -> None:
    runs = build_runs(StudyConfig.from_yaml(_study(tmp_path)))
    script = tmp_path / "job.sh"
    script.write_text(slurm_script(runs, "study.yaml"))
    env = _fake_crabzoo(tmp_path, 3)
    proc = subprocess.run(["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": "0"}, capture_output=True)
    assert proc.returncode == 3
    assert json.loads((runs[0].directory / FAILED).read_text()) == {"returncode": 3}
    proc = subprocess.run(["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": "99"}, capture_output=True)
    assert proc.returncode == 2
