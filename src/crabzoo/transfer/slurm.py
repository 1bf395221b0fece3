"""A SLURM array script of a transfer study's run matrix.

Array index ``i`` runs exactly the ``i``-th run of :func:`crabzoo.transfer.study.build_runs` (the same command
line the local runner executes), writes ``DONE.json`` into the run directory when ``crabzoo fit`` succeeds and
``FAILED.json`` otherwise, and resumes from the run's last checkpoint when one exists. Once the array is done,
``crabzoo transfer --config STUDY.yaml --report-only`` collects the finished runs.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path

from crabzoo.transfer.study import DONE, FAILED, Run


def slurm_script(runs: Sequence[Run], study: str, directives: Sequence[str] = ()) -> str:
    """The ``sbatch`` script: ``#SBATCH --array=0-(N-1)`` and one ``case`` branch per run.

    Args:
        runs: The run matrix (in array-index order).
        study: Path of the study YAML (named in the script's comment and the report command).
        directives: Extra ``#SBATCH`` options, e.g. ``--gres=gpu:1`` or ``--time=04:00:00``.
    """
    lines = [
        "#!/bin/bash",
        "#SBATCH --job-name=crabzoo-transfer",
        f"#SBATCH --array=0-{len(runs) - 1}",
        "#SBATCH --output=slurm-%A_%a.out",
        *[f"#SBATCH {d}" for d in directives],
        f"# {len(runs)} runs of {study}; when all are done:",
        f"#   crabzoo transfer --config {shlex.quote(study)} --report-only",
        "set -uo pipefail",
        'case "${SLURM_ARRAY_TASK_ID:?run this script with sbatch --array}" in',
    ]
    for index, run in enumerate(runs):
        directory = shlex.quote(str(run.directory))
        done = shlex.quote(json.dumps({"label": run.label, "command": shlex.join(run.command), "returncode": 0}))
        lines += [
            f"  {index})  # {run.label}",
            f"    dir={directory}",
            f"    done={done}",
            f"    cmd=({shlex.join(run.command)})",
            "    ;;",
        ]
    lines += [
        '  *) echo "no run with array index ${SLURM_ARRAY_TASK_ID}" >&2; exit 2 ;;',
        "esac",
        f'if [ -f "$dir/{DONE}" ]; then echo "already done: $dir"; exit 0; fi',
        'mkdir -p "$dir"',
        f'rm -f "$dir/{FAILED}"',
        'last=$(ls -t "$dir"/version_*/checkpoints/last.ckpt 2>/dev/null | head -n 1)',
        'if [ -n "$last" ]; then cmd+=(--ckpt_path "$last"); fi',
        '"${cmd[@]}" 2>&1 | tee "$dir/stdout.log"',
        "rc=${PIPESTATUS[0]}",
        'if [ "$rc" -eq 0 ]; then',
        f'  printf "%s\\n" "$done" > "$dir/{DONE}.tmp" && mv "$dir/{DONE}.tmp" "$dir/{DONE}"',
        "else",
        f'  printf \'{{"returncode": %d}}\\n\' "$rc" > "$dir/{FAILED}.tmp" && mv "$dir/{FAILED}.tmp" "$dir/{FAILED}"',
        "fi",
        'exit "$rc"',
    ]
    return "\n".join(lines) + "\n"


def write_slurm_script(runs: Sequence[Run], study: str, out: Path, directives: Sequence[str] = ()) -> Path:
    """Write :func:`slurm_script` atomically to ``out`` (executable) and return its path."""
    from crabzoo.report import atomic_write_text

    atomic_write_text(out, slurm_script(runs, study, directives))
    out.chmod(0o755)
    return out
