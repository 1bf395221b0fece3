"""``crabzoo plot routes RUN_DIR``: heat-maps of the router telemetry saved during validation.

For every telemetry JSON found (a file, or every ``*.json`` with the telemetry format under ``RUN_DIR``)
two PNGs are written next to it (or into ``--out``):

* ``<stem>.png``: one panel per task, mean gate per layer (rows) and head (columns), scale 0..1.
  A uniform router shows ``1/N`` everywhere.
* ``<stem>_specialisation.png``: one panel per head, tasks (rows) x layers (columns), the task's mean gate
  minus the mean over tasks (diverging scale centred on 0): red cells are heads a task uses more than the
  others do — what the router learned to tell tasks apart.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from crabzoo.adapters.telemetry import FORMAT
from crabzoo.errors import CrabzooError


def find_telemetry(run_dir: Path) -> list[Path]:
    """Telemetry JSON files: ``run_dir`` itself, or every ``*.json`` under it with the telemetry format."""
    if run_dir.is_file():
        return [run_dir]
    if not run_dir.is_dir():
        raise CrabzooError(f"{run_dir} does not exist; pass a run directory or a router telemetry JSON")
    found = []
    for path in sorted(run_dir.rglob("*.json")):
        try:
            if json.loads(path.read_text()).get("format") == FORMAT:
                found.append(path)
        except (OSError, ValueError, AttributeError):
            continue
    if not found:
        raise CrabzooError(
            f"no router telemetry JSON under {run_dir}: enable adapter.telemetry during validation "
            "(it is saved by RouterTelemetry.save)"
        )
    return found


def gate_array(summary: dict) -> tuple[list[str], list[str], np.ndarray]:
    """Tasks, layers and the mean gates as an array (tasks, layers, heads); missing cells are NaN."""
    tasks, layers = summary["tasks"], summary["layers"]
    heads = max((len(v) for t in tasks for v in summary["mean_gate"][t].values()), default=0)
    arr = np.full((len(tasks), len(layers), heads), np.nan)
    for i, task in enumerate(tasks):
        for j, layer in enumerate(layers):
            gates = summary["mean_gate"][task].get(layer)
            if gates is not None:
                arr[i, j, : len(gates)] = gates
    return tasks, layers, arr


def _short(layer: str) -> str:
    parts = layer.split(".")
    digits = [p for p in parts if p.isdigit()]
    return f"{parts[0]}.{'.'.join(digits)}.{parts[-1]}" if digits else f"{parts[0]}.{parts[-1]}"


def _label_rows(ax, labels: list[str], max_labels: int = 40) -> None:
    step = max(1, len(labels) // max_labels)
    ax.set_yticks(range(0, len(labels), step))
    ax.set_yticklabels([labels[i] for i in range(0, len(labels), step)], fontsize=6)


def plot_summary(summary: dict, out_stem: Path) -> list[Path]:
    """Draw the two heat-map PNGs of one telemetry summary; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks, layers, arr = gate_array(summary)
    if not tasks or not layers:
        raise CrabzooError(f"{out_stem}: the telemetry holds no gates (was validation run with telemetry enabled?)")
    n_tasks, n_layers, n_heads = arr.shape
    short = [_short(layer) for layer in layers]
    height = min(2 + 0.12 * n_layers, 30)

    fig, axes = plt.subplots(
        1, n_tasks, figsize=(2.5 + 1.2 * n_tasks + 0.3 * n_heads * n_tasks, height), squeeze=False, layout="constrained"
    )
    image = None
    for i, task in enumerate(tasks):
        ax = axes[0, i]
        image = ax.imshow(arr[i], aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(task, fontsize=8)
        ax.set_xticks(range(n_heads))
        ax.set_xticklabels([f"h{k}" for k in range(n_heads)], fontsize=7)
        if i == 0:
            _label_rows(ax, short)
        else:
            ax.set_yticks([])
    fig.colorbar(image, ax=axes[0, :].tolist(), shrink=0.6, label="mean gate")
    fig.suptitle("I-LoRA router: mean gate per task, layer (rows) and head (columns)", fontsize=9)
    first = out_stem.with_name(out_stem.name + ".png")
    fig.savefig(first, dpi=110)
    plt.close(fig)

    dev = arr - np.nanmean(arr, axis=0, keepdims=True)
    limit = float(np.nanmax(np.abs(dev))) if np.isfinite(dev).any() else 1.0
    limit = limit or 1e-6
    fig, axes = plt.subplots(
        n_heads,
        1,
        figsize=(min(5 + 0.1 * n_layers, 30), 1.5 + (1.2 + 0.25 * n_tasks) * n_heads),
        squeeze=False,
        layout="constrained",
    )
    for k in range(n_heads):
        ax = axes[k, 0]
        image = ax.imshow(dev[:, :, k], aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        ax.set_title(f"head {k}: task gate minus mean over tasks", fontsize=8)
        ax.set_yticks(range(n_tasks))
        ax.set_yticklabels(tasks, fontsize=7)
        step = max(1, n_layers // 30)
        ax.set_xticks(range(0, n_layers, step))
        ax.set_xticklabels([short[j] for j in range(0, n_layers, step)], fontsize=6, rotation=90)
    fig.colorbar(image, ax=axes[:, 0].tolist(), shrink=0.8, label="gate difference")
    second = out_stem.with_name(out_stem.name + "_specialisation.png")
    fig.savefig(second, dpi=110)
    plt.close(fig)
    return [first, second]


def main(argv: list[str]) -> None:
    """``crabzoo plot routes RUN_DIR [--out DIR]``."""
    parser = argparse.ArgumentParser(prog="crabzoo plot", description="Draw router heat-maps of a run.")
    sub = parser.add_subparsers(dest="what", required=True)
    routes = sub.add_parser("routes", help="heat-maps of the I-LoRA router telemetry (mean gate per task/layer/head)")
    routes.add_argument("run_dir", type=Path, help="run directory (searched for telemetry JSON) or one JSON file")
    routes.add_argument("--out", type=Path, default=None, help="folder for the PNGs (default: next to each JSON)")
    args = parser.parse_args(argv)
    for path in find_telemetry(args.run_dir):
        summary = json.loads(path.read_text())
        out_dir = args.out or path.parent
        out_dir.mkdir(parents=True, exist_ok=True)
        for png in plot_summary(summary, out_dir / path.stem):
            print(png)
