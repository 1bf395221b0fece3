"""Sequence packing vs length-grouped batches on the AVSynth multi-task mix, side by side.

The tiny modular paradigm (``paradigms/tiny/mlp.yaml`` with the I-LoRA recipe ``recipes/avsynth/multitask-ilora.yaml``)
trains on the recipe's nine AVSynth tasks, generated into a temporary folder. Both modes read the same batches: the
data module's length-grouped training batches (``group_by_length: true``, one task per batch); packed, the same
batches also have ``packing: true``, so the paradigm lays each batch's spliced samples out in rows of at most
``--pack-lengths`` LLM positions (``longest``: the batch's longest sample). The batches are decoded once, outside
the timing; every timed step is a real training step (encoders, splicing, LLM forward and backward, AdamW step).
The modes take turns batch by batch, so machine noise hits all alike. It prints, per mode,

* **padding share**: padded LLM positions / all positions of the LLM input (rows x row length);
* **rows** per batch and the **row length** (mean);
* **tokens/s**: real (non-padding) LLM positions trained per second of training step, and its ratio to the
  length-grouped rate.

Usage::

    python benchmarks/packing.py                                # 270 clips, batch 8, pack lengths longest and 1024
    python benchmarks/packing.py --batch 32 --pack-lengths longest 1024 2048 --epochs 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
PARADIGM = ROOT / "paradigms" / "tiny" / "mlp.yaml"
RECIPE = ROOT / "recipes" / "avsynth" / "multitask-ilora.yaml"


def recipe_tasks() -> list[str]:
    """The task mix of the multi-task recipe."""
    import yaml

    return list(yaml.safe_load(RECIPE.read_text())["data"]["init_args"]["tasks"])


def build_model(corpus: Path, work: Path) -> Any:
    """The tiny MLP paradigm with the recipe's adapter, optimizer settings and target length."""
    import yaml

    from crabzoo.inference.loading import model_from_configs

    override = work / "override.yaml"
    override.write_text(yaml.safe_dump({"model": {"init_args": {
        "backbone": {"init_args": {"tokenizer_corpus": str(corpus)}},
    }}}))
    torch.manual_seed(0)
    model, _ = model_from_configs([PARADIGM, RECIPE, override])
    return model


def load_batches(
    model: Any, root: Path, tasks: list[str], batch: int, packing: bool, pack_length: int | None
) -> list[dict]:
    """One epoch of the data module's training batches (length-grouped), decoded and collated."""
    from crabzoo.data.datamodule import AVUIEDataModule

    dm = AVUIEDataModule(str(root), tasks=tasks, batch_size=batch, group_by_length=True, packing=packing,
                         pack_length=pack_length)
    dm.processor = model.make_processor()
    dm.setup("fit")
    return list(dm.train_dataloader())


def layout(model: Any, data: dict, pack_length: int | None, packed: bool) -> tuple[int, int, int]:
    """``(real positions, all positions, rows)`` of the LLM input of one batch."""
    from crabzoo.data.packing import pack_plan

    with torch.no_grad():
        rows, _ = model.splice_rows(data["input_ids"], data["labels"], model.media_embeddings(data))
    lengths = [int(r.shape[0]) for r in rows]
    if not packed:
        return sum(lengths), len(lengths) * max(lengths), len(lengths)
    plan = pack_plan(lengths, pack_length)
    width = max(sum(lengths[i] for i in row) for row in plan)
    return sum(lengths), len(plan) * width, len(plan)


def step(model: Any, optimizer: torch.optim.Optimizer, data: dict) -> float:
    """One training step; returns its seconds."""
    start = time.perf_counter()
    loss = model(data)["loss"]
    aux = model.adapter.aux_loss() if model.adapter is not None else None
    (loss if aux is None else loss + aux).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def pack_length_arg(value: str) -> int | None:
    """``longest`` (``None``: each batch's longest sample) or a positive number of LLM positions."""
    return None if value == "longest" else int(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=270, help="AVSynth clips over the nine tasks (default 270)")
    parser.add_argument("--batch", type=int, default=8, help="samples per batch (default 8)")
    parser.add_argument("--pack-lengths", type=pack_length_arg, nargs="+", default=[None, 1024],
                        help="row capacities, in LLM positions or 'longest' (default: longest 1024)")
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from crabzoo.data.avsynth import synthesize

    tasks = recipe_tasks()
    modes = {"length-grouped": (False, None)}
    modes.update({f"packed ({'longest' if n is None else n})": (True, n) for n in args.pack_lengths})
    with tempfile.TemporaryDirectory(prefix="packing_bench_") as tmp:
        work = Path(tmp)
        synthesize(work / "data", clips=args.clips, seed=0, tasks=tasks, workers=1, soundtrack=False)
        model = build_model(work / "data" / "AVUIE_2", work)
        batches = {name: load_batches(model, work / "data", tasks, args.batch, *mode) for name, mode in modes.items()}
        order = [b["ids"] for b in batches["length-grouped"]]
        assert all([b["ids"] for b in bs] == order for bs in batches.values())  # the same batches in every mode
        totals = {name: {"real": 0, "all": 0, "rows": 0, "seconds": 0.0} for name in modes}
        for name, (packed, pack_length) in modes.items():
            for data in batches[name]:
                real, positions, rows = layout(model, data, pack_length, packed)
                totals[name]["real"] += real
                totals[name]["all"] += positions
                totals[name]["rows"] += rows
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        for name in modes:  # warm-up of every path
            step(model, optimizer, batches[name][0])
        names = list(modes)
        for epoch in range(args.epochs):
            for i in range(len(order)):
                shift = (i + epoch) % len(names)  # rotate the order of the modes from batch to batch
                for name in names[shift:] + names[:shift]:
                    totals[name]["seconds"] += step(model, optimizer, batches[name][i])
    n = len(order)
    print(f"AVSynth mix of {len(tasks)} tasks ({', '.join(tasks)}): {n} length-grouped batches of {args.batch} "
          f"samples, {args.epochs} epoch(s), {args.threads} thread(s)")
    print(f"{'mode':<16} {'padding share':>14} {'rows/batch':>11} {'row length':>11} {'step s':>8} {'tokens/s':>10} "
          f"{'vs grouped':>11}")
    base = None
    for name, t in totals.items():
        rate = t["real"] * args.epochs / t["seconds"]
        base = base or rate
        print(f"{name:<16} {1 - t['real'] / t['all']:>13.1%} {t['rows'] / n:>11.2f} {t['all'] / t['rows']:>11.0f} "
              f"{t['seconds'] / n / args.epochs:>8.3f} {rate:>10.0f} {rate / base:>10.2f}x")


if __name__ == "__main__":
    main()
