"""``crabzoo export``: write a checkpoint as a transformers LLM folder plus the files of the rest of the model.

    crabzoo export --ckpt_path runs/avsynth-multitask-lora/version_0/checkpoints/last.ckpt --out export/lora

With LoRA, ``<out>/llm`` is the merged LLM (``AutoModelForCausalLM.from_pretrained("<out>/llm")``); with I-LoRA
it is the base LLM, and the adapter is in ``<out>/adapter`` (crabzoo format) and ``<out>/official`` (the
official Crab / Crab+ key layout). ``crabzoo.export.load_exported("<out>")`` rebuilds the whole model.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from crabzoo.errors import CrabzooError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crabzoo export",
        description="Export a checkpoint: LoRA merged into a transformers model, or the base model plus I-LoRA files.",
        epilog="Reload the whole audio-visual model with crabzoo.export.load_exported(OUT); the LLM alone with "
        "transformers.AutoModelForCausalLM.from_pretrained(OUT/llm).",
    )
    parser.add_argument("--ckpt_path", help="checkpoint written by `crabzoo fit` (its model configuration is inside)")
    parser.add_argument(
        "--config", action="append", default=[],
        help="paradigm / recipe YAML whose model: section builds the model instead (repeatable, merged in order)",
    )
    parser.add_argument("--out", required=True, help="new or empty folder to write (written atomically)")
    parser.add_argument(
        "--encoders", default="auto", choices=("auto", "copy", "reference"),
        help="copy the encoder weights, or reference them by configuration (auto: reference only encoders the "
        "checkpoint itself left out, save_frozen: false)",
    )
    parser.add_argument(
        "--official", default="auto", choices=("auto", "crab", "crab_plus", "none"),
        help="key layout of the official-format I-LoRA file (auto: crab_plus for the omni thinker, crab otherwise)",
    )
    return parser


def model_tree(args: argparse.Namespace) -> dict[str, Any]:
    """The trained model's configuration tree, from the recipe files or the checkpoint."""
    from crabzoo.export.config import tree_from_checkpoint, tree_from_configs

    if args.config:
        return tree_from_configs(args.config)
    return tree_from_checkpoint(args.ckpt_path)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``crabzoo export``."""
    from crabzoo.export import layout as L

    args = build_parser().parse_args(argv)
    if args.ckpt_path is None and not args.config:
        raise CrabzooError("give the checkpoint to export (--ckpt_path CKPT) or the recipe that builds the model (--config YAML)")
    out = L.check_out_dir(args.out)
    from crabzoo.export.writer import export_model
    from crabzoo.inference.loading import load_trained

    model = load_trained(args.ckpt_path, config=args.config or None)
    note = model.load_report.summary()
    if note:
        print(f"crabzoo export: note: {note}", file=sys.stderr)
    source = str(args.ckpt_path) if args.ckpt_path else ", ".join(args.config)
    summary = export_model(model, out, model_tree(args), encoders=args.encoders, official=args.official, source=source)
    for line in summary.notes:
        print(f"crabzoo export: note: {line}", file=sys.stderr)
    adapter = {"lora-merged": "LoRA merged into the LLM", "ilora": "I-LoRA beside the base LLM", "none": "no adapter"}
    print(f"exported {source} ({type(model).__name__}, {adapter[summary.adapter]}) to {out}")
    files = L.listing(out)
    width = max(len(name) for name, _ in files)
    for name, size in files:
        print(f"  {name:<{width}}  {L.human_size(size):>10}")
    total = sum(size for _, size in files)
    print(f"  {'total':<{width}}  {L.human_size(total):>10}")
    encoders = ", ".join(f"{n}: {m}" for n, m in summary.encoders.items()) or "none"
    print(f"encoders: {encoders}" + (f"; official I-LoRA layout: {summary.official}" if summary.official else ""))
    print(f'reload: crabzoo.export.load_exported("{out}")  |  LLM only: AutoModelForCausalLM.from_pretrained("{out / L.LLM_DIR}")')
