"""The ``crabzoo`` command.

``fit``/``validate``/``test``/``predict`` go to Lightning's CLI (subclass mode for model and data); the other
subcommands are small argparse programs, imported only when called so that ``crabzoo --help`` and
``crabzoo list`` stay fast.
"""

from __future__ import annotations

import importlib
import sys

from crabzoo.errors import CrabzooError

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")

TOOLS: dict[str, tuple[str, str]] = {
    "list": ("crabzoo.components", "List every available component by role."),
    "data": ("crabzoo.data.cli", "Generate (synth), verify (check) and preview AV-UIE / AVSynth data."),
    "evaluate": ("crabzoo.tasks.evaluate", "Score a predictions JSONL against a task's annotations."),
    "transfer": ("crabzoo.transfer.cli", "Run or report a single- vs multi-task transfer study."),
    "plot": ("crabzoo.adapters.plot", "Draw router heat-maps of a run (plot routes RUN_DIR)."),
    "cache": ("crabzoo.data.cache", "Inspect or clear the feature cache (cache info / cache clear)."),
    "convert": ("crabzoo.convert.cli", "Convert a shipped checkpoint (CTranslate2 Whisper, ONNX DINOv2) for crabzoo."),
    "ask": ("crabzoo.inference.ask", "Ask a trained model about your own video / audio / image files."),
    "chat": ("crabzoo.inference.chat", "Talk to a trained model about one media file (streamed, multi-turn)."),
    "export": ("crabzoo.export", "Export a checkpoint: LoRA merged into a transformers model, or I-LoRA files."),
    "serve": ("crabzoo.serve", "Serve a trained model over an OpenAI-compatible HTTP API (LitServe)."),
}

USAGE = """usage: crabzoo <command> [options]

Training (Lightning CLI; see `crabzoo fit --help`):
  fit        Train a paradigm on a recipe:  crabzoo fit --config recipes/quickstart.yaml
  validate   Validate a checkpoint:         crabzoo validate --config ... --ckpt_path CKPT
  test       Test a checkpoint
  predict    Write <run dir>/predictions.jsonl (one line per sample): crabzoo predict --config ... --ckpt_path last

Tools:
{tools}
"""


def _usage() -> str:
    tools = "\n".join(f"  {name:<10} {help_}" for name, (_, help_) in TOOLS.items())
    return USAGE.format(tools=tools)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``crabzoo`` console script; returns None (the exit code comes from SystemExit)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return
    command = argv[0]
    try:
        if command in LIGHTNING_COMMANDS:
            from crabzoo.lightning_cli import run_lightning_cli

            run_lightning_cli(argv)
        elif command in TOOLS:
            module = importlib.import_module(TOOLS[command][0])
            module.main(argv[1:])
        else:
            raise CrabzooError(f"unknown command {command!r}; run `crabzoo --help` for the list of commands")
    except CrabzooError as err:
        print(f"crabzoo {command}: error: {err}", file=sys.stderr)
        raise SystemExit(err.exit_code) from None
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()


if __name__ == "__main__":
    main()
