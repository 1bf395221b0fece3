"""The run matrix of a transfer study and its execution.

A study YAML names paradigms (each a list of ``--config`` files), regimes (single-task, multi-task with LoRA,
multi-task with I-LoRA, or any adapter config), tasks, seeds and a budget rule. Every run is one ordinary
``crabzoo fit`` in its own directory under the study directory, so a study can also be handed to a cluster
scheduler as a list of command lines (``--dry-run``).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from crabzoo.errors import CrabzooError

DONE = "DONE.json"
"""Marker written into a run directory when its ``crabzoo fit`` exited with status 0."""

FAILED = "FAILED.json"
"""Marker written when a run failed (its exit code and the tail of its output)."""


@dataclass(frozen=True)
class Regime:
    """How a group of runs trains.

    Attributes:
        name: Short name used in directories and reports (``single``, ``lora``, ``ilora``).
        multitask: One run on all tasks (``True``) or one run per task (``False``).
        configs: Extra ``--config`` files (typically the adapter).
        args: Extra command-line arguments.
        steps: If set, this regime trains exactly this many optimizer steps whatever the study's budget (and is
            validated after the last one): e.g. a multi-task regime given the steps of one single-task run, the
            equal-steps control beside an equal-epochs study.
    """

    name: str
    multitask: bool
    configs: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    steps: int | None = None


@dataclass(frozen=True)
class Run:
    """One ``crabzoo fit`` of the matrix."""

    paradigm: str
    regime: str
    tasks: tuple[str, ...]
    seed: int
    directory: Path
    command: tuple[str, ...]

    @property
    def label(self) -> str:
        """``paradigm/regime/task-or-all/seedN``."""
        scope = self.tasks[0] if len(self.tasks) == 1 else "all"
        return f"{self.paradigm}/{self.regime}/{scope}/seed{self.seed}"


@dataclass
class StudyConfig:
    """A transfer study, as read from YAML.

    Attributes:
        out: Study directory.
        recipe: ``--config`` files shared by every run (data, optimisation, trainer).
        paradigms: Paradigm name -> its ``--config`` files.
        regimes: The regimes; exactly one must be single-task (the reference).
        tasks: Task folders.
        seeds: Seeds; each (paradigm, regime) is run once per seed.
        budget: ``epochs`` (equal epochs over each run's data, the paper's protocol) or ``steps`` (equal optimizer
            steps for every run).
        epochs: Epochs per run when ``budget`` is ``epochs``.
        steps: Optimizer steps per run when ``budget`` is ``steps``.
        args: Extra arguments for every run.
        feature_cache: Feature-cache directory shared by every run (``model.init_args.feature_cache``): the
            frozen encoders' outputs are computed once per seed and read by all the runs of that seed.
        jobs: Runs executed at the same time on this machine (each a ``crabzoo fit`` process).
    """

    out: str
    recipe: list[str]
    paradigms: dict[str, list[str]]
    regimes: list[Regime]
    tasks: list[str]
    seeds: list[int] = field(default_factory=lambda: [0])
    budget: str = "epochs"
    epochs: int = 1
    steps: int = 100
    args: list[str] = field(default_factory=list)
    feature_cache: str | None = None
    jobs: int = 1

    @classmethod
    def from_yaml(cls, path: str | Path) -> StudyConfig:
        """Read and validate a study file; mistakes raise CrabzooError naming the key."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise CrabzooError(f"study file {path} not found")
        raw = yaml.safe_load(path.read_text()) or {}
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise CrabzooError(f"{path}: unknown key(s) {unknown}; valid keys are {sorted(known)}")
        for key in ("out", "recipe", "paradigms", "regimes", "tasks"):
            if key not in raw:
                raise CrabzooError(f"{path}: missing key {key!r}")
        regimes = []
        for name, spec in dict(raw["regimes"]).items():
            spec = spec or {}
            bad = sorted(set(spec) - {"multitask", "configs", "args", "steps"})
            if bad:
                raise CrabzooError(f"{path}: regime {name!r} has unknown key(s) {bad}; use multitask, configs, args, steps")
            steps = spec.get("steps")
            if steps is not None and (not isinstance(steps, int) or steps < 1):
                raise CrabzooError(f"{path}: regime {name!r}: steps must be a positive integer, not {steps!r}")
            regimes.append(
                Regime(name, bool(spec.get("multitask", True)), tuple(spec.get("configs", ())), tuple(spec.get("args", ())), steps)
            )
        raw["regimes"] = regimes
        raw["recipe"] = list(raw["recipe"]) if isinstance(raw["recipe"], list) else [raw["recipe"]]
        config = cls(**raw)
        config.validate(str(path))
        return config

    def validate(self, where: str = "study") -> None:
        """Check the budget rule and that exactly one regime is the single-task reference."""
        if self.budget not in ("epochs", "steps"):
            raise CrabzooError(f"{where}: budget must be 'epochs' or 'steps', not {self.budget!r}")
        singles = [r.name for r in self.regimes if not r.multitask]
        if len(singles) != 1:
            raise CrabzooError(f"{where}: exactly one regime must have multitask: false (the single-task reference); found {singles}")
        if not self.tasks:
            raise CrabzooError(f"{where}: tasks is empty")
        if int(self.jobs) < 1:
            raise CrabzooError(f"{where}: jobs must be at least 1, not {self.jobs!r}")

    @property
    def reference(self) -> str:
        """Name of the single-task regime."""
        return next(r.name for r in self.regimes if not r.multitask)


def budget_args(budget: str, epochs: int, steps: int) -> list[str]:
    """Trainer arguments of one budget: ``E`` epochs validated at the end, or ``S`` steps validated after the last."""
    if budget == "epochs":
        return ["--trainer.max_epochs", str(epochs), "--trainer.max_steps", "-1", "--trainer.check_val_every_n_epoch", str(epochs)]
    return [
        "--trainer.max_steps", str(steps), "--trainer.max_epochs", "-1",
        "--trainer.check_val_every_n_epoch", "null", "--trainer.val_check_interval", str(steps),
    ]


def build_runs(config: StudyConfig, executable: str = "crabzoo") -> list[Run]:
    """The full matrix: seeds x paradigms x regimes x (tasks for single-task regimes).

    Seeds come first, so that a study stopped early holds whole seeds (every regime of every paradigm), and
    runs next to each other train on different tasks (no two of them encode the same clips for the cache).
    """
    out = Path(config.out)
    runs = []
    for seed in config.seeds:
        for paradigm, paradigm_configs in config.paradigms.items():
            for regime in config.regimes:
                scopes = [(t,) for t in config.tasks] if not regime.multitask else [tuple(config.tasks)]
                for tasks in scopes:
                    scope = tasks[0] if len(tasks) == 1 else "all"
                    directory = out / paradigm / regime.name / scope / f"seed{seed}"
                    cmd = [executable, "fit"]
                    for c in [*paradigm_configs, *config.recipe, *regime.configs]:
                        cmd += ["--config", c]
                    cmd += ["--data.init_args.tasks", json.dumps(list(tasks)), "--seed_everything", str(seed)]
                    cmd += ["--trainer.default_root_dir", str(directory)]
                    if regime.steps is not None:
                        cmd += budget_args("steps", config.epochs, regime.steps)
                    else:
                        cmd += budget_args(config.budget, config.epochs, config.steps)
                    if config.feature_cache:
                        cmd += ["--model.init_args.feature_cache", str(config.feature_cache)]
                    # per-sample records, samples seen per task, trainable parameters (crabzoo.transfer.samples)
                    cmd += ["--trainer.callbacks+=crabzoo.monitor.TaskCounter"]
                    cmd += ["--trainer.callbacks+=crabzoo.transfer.samples.SampleRecorder"]
                    cmd += [*regime.args, *config.args]
                    runs.append(Run(paradigm, regime.name, tasks, seed, directory, tuple(cmd)))
    return runs


def last_checkpoint(directory: Path) -> Path | None:
    """The newest ``version_*/checkpoints/last.ckpt`` of a run directory, if any."""
    found = sorted(directory.glob("version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def latest_samples(directory: Path) -> Path | None:
    """The newest ``version_*/samples.json`` (per-sample records) of a run directory, if any."""
    found = sorted(directory.glob("version_*/samples.json"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def latest_results(directory: Path) -> Path | None:
    """The newest ``version_*/results.json`` of a run directory, if any."""
    found = sorted(directory.glob("version_*/results.json"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def run_status(run: Run) -> str:
    """``done``, ``failed``, ``partial`` (a checkpoint exists: it will resume) or ``pending``."""
    if (run.directory / DONE).is_file():
        return "done"
    if (run.directory / FAILED).is_file():
        return "failed"
    if last_checkpoint(run.directory) is not None:
        return "partial"
    return "pending"


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    from crabzoo.report import atomic_write_text

    atomic_write_text(path, json.dumps(payload, indent=2, default=str))


def execute(runs: list[Run], retry_failed: bool = False, echo: bool = True, jobs: int = 1) -> dict[str, str]:
    """Run every unfinished run; return ``label -> status`` after execution.

    Finished runs are skipped; a run with a checkpoint resumes from it (``--ckpt_path last``); a crash is
    recorded in the run's ``FAILED.json`` and the study goes on. ``jobs`` runs execute at the same time, each
    with ``cpu_count // jobs`` CPU threads unless ``OMP_NUM_THREADS`` is set.
    """
    from concurrent.futures import ThreadPoolExecutor

    statuses: dict[str, str] = {}
    todo: list[tuple[int, Run, str]] = []
    for i, run in enumerate(runs, 1):
        status = run_status(run)
        if status == "done" or (status == "failed" and not retry_failed):
            statuses[run.label] = status
            if echo:
                print(f"[{i}/{len(runs)}] {run.label}: {status}, skipped")
        else:
            todo.append((i, run, status))

    def one(item: tuple[int, Run, str]) -> tuple[str, str]:
        i, run, status = item
        if echo:
            print(f"[{i}/{len(runs)}] {run.label}: {'resuming' if status == 'partial' else 'running'}", flush=True)
        result = _execute_one(run, status, threads)
        if echo and result == "failed":
            print(f"    {run.label} failed; see {run.directory / 'stdout.log'}", flush=True)
        return run.label, result

    threads = None if jobs <= 1 or "OMP_NUM_THREADS" in os.environ else max(1, (os.cpu_count() or 1) // jobs)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for label, result in pool.map(one, todo):
            statuses[label] = result
    return statuses


def _execute_one(run: Run, status: str, threads: int | None = None) -> str:
    """One ``crabzoo fit`` subprocess, its output in ``stdout.log``, its outcome in ``DONE.json``/``FAILED.json``."""
    run.directory.mkdir(parents=True, exist_ok=True)
    (run.directory / FAILED).unlink(missing_ok=True)
    cmd = list(run.command)
    if status == "partial":
        cmd += ["--ckpt_path", str(last_checkpoint(run.directory))]
    if cmd[0] == "crabzoo":
        cmd = [sys.executable, "-m", "crabzoo.cli", *cmd[1:]]
    start = time.time()
    log = run.directory / "stdout.log"
    with open(log, "w") as fh:
        env = None if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads)}
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own CPU time, whatever runs beside it
        proc.returncode = os.waitstatus_to_exitcode(status)
    record = {
        "label": run.label, "command": shlex.join(run.command), "seconds": round(time.time() - start, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1), "returncode": proc.returncode,
    }
    if proc.returncode == 0:
        _write_json(run.directory / DONE, record)
        return "done"
    record["output_tail"] = log.read_text()[-4000:]
    _write_json(run.directory / FAILED, record)
    return "failed"


def needs_rescore(run: Run, task: str) -> bool:
    """True when a finished run evaluated ``task`` but its ``samples.json`` cannot rebuild that task's metric.

    That is the case for runs recorded before the metric kept every state its bootstrap needs (segmentation
    masks, for one).
    """
    from crabzoo.tasks import get_task

    if task not in run.tasks or run_status(run) != "done":
        return False
    path = latest_samples(run.directory)
    entry = json.loads(path.read_text()).get("tasks", {}).get(task) if path else None
    if not entry:
        return True
    try:
        get_task(task).make_metric().load_sample_states(entry["samples"])
    except CrabzooError:
        return True
    return False


def rescore(run: Run, task: str, all_tasks: list[str], threads: int | None = None) -> str:
    """Validate ``task`` again from the run's last checkpoint and merge its per-sample states into ``samples.json``.

    The run's own command is reused with ``validate`` for ``fit``, the one task as data, the study's task order
    for task-routed adapters and its own folder ``rescore/<task>``; the run's scores are not touched.

    Returns:
        ``done`` or ``failed`` (the output is in ``rescore/<task>/stdout.log``).
    """
    checkpoint = last_checkpoint(run.directory)
    samples_path = latest_samples(run.directory)
    if checkpoint is None or samples_path is None:
        return "failed"
    folder = run.directory / "rescore" / task
    cmd = list(run.command)
    cmd[1] = "validate"
    cmd[cmd.index("--data.init_args.tasks") + 1] = json.dumps([task])
    cmd[cmd.index("--trainer.default_root_dir") + 1] = str(folder)
    cmd += ["--model.init_args.task_names", json.dumps(list(all_tasks)), "--ckpt_path", str(checkpoint)]
    if cmd[0] == "crabzoo":
        cmd = [sys.executable, "-m", "crabzoo.cli", *cmd[1:]]
    folder.mkdir(parents=True, exist_ok=True)
    env = None if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with open(folder / "stdout.log", "w") as fh:
        code = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    fresh = latest_samples(folder)
    if code != 0 or fresh is None:
        return "failed"
    entry = json.loads(fresh.read_text()).get("tasks", {}).get(task)
    if entry is None:
        return "failed"
    payload = json.loads(samples_path.read_text())
    payload.setdefault("tasks", {})[task] = entry
    payload.setdefault("rescored", {})[task] = str(checkpoint)
    _write_json(samples_path, payload)
    return "done"


def save_plan(config: StudyConfig, runs: list[Run]) -> None:
    """Write ``plan.json`` (the matrix and the command lines) into the study directory."""
    payload = {
        "config": {**asdict(config), "regimes": [asdict(r) for r in config.regimes]},
        "runs": [{"label": r.label, "directory": str(r.directory), "command": shlex.join(r.command)} for r in runs],
    }
    _write_json(Path(config.out) / "plan.json", payload)
