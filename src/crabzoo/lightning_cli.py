"""``crabzoo fit|validate|test|predict``: Lightning's CLI with crabzoo's defaults.

Model and data are given in subclass mode (``class_path`` + ``init_args``), so any paradigm or data module,
including a user's own class on ``PYTHONPATH``, is selected from YAML without editing crabzoo.
"""

from __future__ import annotations

import sys
from typing import Any

from lightning.pytorch.cli import LightningCLI

from crabzoo.data.datamodule import AVUIEDataModule
from crabzoo.errors import CrabzooError
from crabzoo.paradigms.base import AVLLM
from crabzoo.report import ReportCallback


class CrabzooCLI(LightningCLI):
    """LightningCLI for crabzoo paradigms; adds the per-task report callback to every run."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_lightning_class_args(ReportCallback, "report")


def _check_config_paths(argv: list[str]) -> None:
    from pathlib import Path

    for flag, value in zip(argv, argv[1:]):
        if flag == "--config" and not Path(value).is_file():
            raise CrabzooError(f"config file {value} not found (paths are relative to {Path.cwd()})")


def run_lightning_cli(argv: list[str]) -> None:
    """Run a Lightning subcommand; configuration errors exit with status 2 and one message."""
    _check_config_paths(argv)
    try:
        CrabzooCLI(
            AVLLM,
            AVUIEDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=argv,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"error_handler": None} if _legacy_error_handler() else {"exit_on_error": False},
        )
    except CrabzooError:
        raise
    except Exception as err:  # jsonargparse reports config mistakes as ArgumentError
        if type(err).__name__ in ("ArgumentError", "ParserError"):
            raise CrabzooError(_one_line(str(err))) from None
        raise
    return None


def _legacy_error_handler() -> bool:
    import inspect

    from jsonargparse import ArgumentParser

    return "error_handler" in inspect.signature(ArgumentParser.__init__).parameters


def _one_line(message: str) -> str:
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    head = lines[0] if lines else message
    detail = next((ln for ln in lines[1:] if "does not accept" in ln or "not" in ln.lower()), "")
    text = f"{head} {detail}".strip()
    return text if len(text) < 600 else text[:600] + " ..."


if __name__ == "__main__":
    run_lightning_cli(sys.argv[1:])
