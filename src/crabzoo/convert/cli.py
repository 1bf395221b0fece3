"""``crabzoo convert FORMAT SRC OUT``: turn a shipped checkpoint into a directory crabzoo's components load.

Each format is one module of :mod:`crabzoo.convert` with ``add_arguments(parser)`` and ``run(args)``; the
modules are imported only when their subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib

CONVERTERS: dict[str, tuple[str, str]] = {
    "whisper-ct2": ("crabzoo.convert.whisper_ct2", "CTranslate2 Whisper model.bin -> transformers WhisperModel directory"),
    "dinov2-onnx": ("crabzoo.convert.dinov2_onnx", "ONNX graph with a DINOv2 backbone -> transformers Dinov2Model directory"),
}
"""Subcommand -> (module, one-line help)."""


def build_parser() -> argparse.ArgumentParser:
    """The ``crabzoo convert`` parser with one subcommand per converter."""
    parser = argparse.ArgumentParser(prog="crabzoo convert", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    for name, (module, help_) in CONVERTERS.items():
        child = sub.add_parser(name, help=help_, description=help_)
        child.set_defaults(module=module)
        importlib.import_module(module).add_arguments(child)
    return parser


def main(argv: list[str]) -> None:
    """Entry point of ``crabzoo convert``."""
    args = build_parser().parse_args(argv)
    importlib.import_module(args.module).run(args)
