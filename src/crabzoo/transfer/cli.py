"""``crabzoo transfer``: run, resume or report a single- vs multi-task transfer study."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path


def main(argv: list[str]) -> None:
    """``crabzoo transfer --config STUDY.yaml [--dry-run | --emit slurm | --report-only] [--retry-failed] [-- FIT ARGS]``."""
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(
        prog="crabzoo transfer",
        description="Train single-task and multi-task models per paradigm and report the transfer.",
        epilog="Arguments after `--` are added to every run's `crabzoo fit` command, e.g. "
        "`crabzoo transfer --config STUDY.yaml -- --trainer.accelerator gpu` runs the same study on GPUs.",
    )
    parser.add_argument("--config", required=True, help="study YAML (see recipes/transfer/)")
    parser.add_argument("--dry-run", action="store_true", help="print the runs as `crabzoo fit` command lines and exit")
    parser.add_argument("--report-only", action="store_true", help="only (re)write the report from finished runs")
    parser.add_argument("--retry-failed", action="store_true", help="run again the runs that failed before")
    parser.add_argument("--only", help="run only the runs whose label contains this text (e.g. 'stc/' or '/seed1')")
    parser.add_argument("--jobs", type=int, default=None, help="runs executed at the same time (default: the study's `jobs`)")
    parser.add_argument("--rescore", metavar="TASK", help="validate TASK again from each finished run's checkpoint where its samples.json cannot rebuild that task's metric (runs recorded by an older version), then report")
    parser.add_argument("--emit", choices=["slurm"], help="write a scheduler script of the run matrix (one array index per run) and exit")
    parser.add_argument("--emit-to", help="path of the emitted script (default: <out>/transfer.slurm)")
    parser.add_argument("--sbatch", action="append", default=[], help="extra #SBATCH option for --emit slurm, e.g. --sbatch=--gres=gpu:1 (repeatable)")
    args = parser.parse_args(argv)

    from crabzoo.transfer.report import write_report
    from crabzoo.transfer.study import StudyConfig, build_runs, execute, run_status, save_plan

    config = StudyConfig.from_yaml(args.config)
    config.args = [*config.args, *extra]
    runs = build_runs(config)
    if args.only:
        runs = [r for r in runs if args.only in r.label]
    if args.dry_run:
        for run in runs:
            print(f"# {run.label} [{run_status(run)}]")
            print(shlex.join(run.command))
        return
    if args.emit == "slurm":
        from crabzoo.transfer.slurm import write_slurm_script

        target = Path(args.emit_to) if args.emit_to else Path(config.out) / "transfer.slurm"
        save_plan(config, runs)
        write_slurm_script(runs, args.config, target, args.sbatch)
        print(f"wrote {target} ({len(runs)} runs); submit it with: sbatch {target}")
        return
    save_plan(config, runs)
    if args.rescore:
        _rescore(runs, args.rescore, config.tasks)
    elif not args.report_only:
        execute(runs, retry_failed=args.retry_failed, jobs=args.jobs or config.jobs)
    out = Path(config.out)
    payload = write_report(build_runs(config), config.reference, out)
    print((out / "report.md").read_text())
    for plot in payload["plots"]:
        print(f"plot: {plot}")


def _rescore(runs: list, task: str, all_tasks: list[str]) -> None:
    from crabzoo.errors import CrabzooError
    from crabzoo.transfer.study import needs_rescore, rescore

    if task not in all_tasks:
        raise CrabzooError(f"--rescore {task!r}: the study's tasks are {all_tasks}")
    todo = [r for r in runs if needs_rescore(r, task)]
    print(f"{len(todo)} run(s) to score again on {task}")
    for i, run in enumerate(todo, 1):
        status = rescore(run, task, all_tasks)
        print(f"[{i}/{len(todo)}] {run.label}: {task} {status}", flush=True)
