"""``crabzoo fit|validate|test|predict``: Lightning's CLI with crabzoo's defaults.

Model and data are given in subclass mode (``class_path`` + ``init_args``), so any paradigm or data module,
including a user's own class on ``PYTHONPATH``, is selected from YAML without editing crabzoo.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import LightningCLI

from crabzoo.data.datamodule import AVUIEDataModule
from crabzoo.errors import CrabzooError
from crabzoo.paradigms.base import AVLLM
from crabzoo.report import ReportCallback


def next_version(root: str | Path) -> int:
    """The first ``N`` such that ``root/version_N`` does not exist."""
    root = Path(root)
    taken = [int(p.name.split("_", 1)[1]) for p in root.glob("version_*") if p.name.split("_", 1)[1].isdigit()]
    return max(taken, default=-1) + 1


def default_loggers(root: str | Path) -> list[Any]:
    """TensorBoard and CSV loggers sharing ``root/version_N`` (the run directory)."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    version = next_version(root)
    return [TensorBoardLogger(str(root), name="", version=version), CSVLogger(str(root), name="", version=version)]


class CrabzooCLI(LightningCLI):
    """LightningCLI for crabzoo paradigms.

    Adds the per-task report callback to every run and, unless the recipe sets ``trainer.logger``, logs with
    TensorBoard and CSV into ``<default_root_dir>/version_N/`` (with the resolved config, checkpoints and report).
    """

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_lightning_class_args(ReportCallback, "report")

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Any:
        if config.get("logger") in (None, True):
            config["logger"] = default_loggers(config.get("default_root_dir") or "runs")
        return super()._instantiate_trainer(config, callbacks)


def _check_config_paths(argv: list[str]) -> None:
    for flag, value in zip(argv, argv[1:]):
        if flag == "--config" and not Path(value).is_file():
            raise CrabzooError(f"config file {value} not found (paths are relative to {Path.cwd()})")


def run_lightning_cli(argv: list[str]) -> None:
    """Run a Lightning subcommand; configuration errors exit with status 2 and one message."""
    _check_config_paths(argv)
    sys.argv = sys.argv[:1]  # the arguments come from `argv` alone
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
    """Condense jsonargparse's nested error report into ``<key>: <problem> (<fix>)``."""
    import re

    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    keys = [m.group(1) for ln in lines for m in [re.match(r'Parser key "([^"]+)"', ln)] if m]
    details = []
    for prev, ln in zip([""] + lines, lines):
        if prev.startswith("- Problem with given class_path") and not ln.startswith(("Parser key", "- ")):
            details.append(f"{prev[2:].replace('Problem with given ', '').rstrip(':')}: {ln}")
        elif ln.startswith("- ") and "Expected a <class 'NoneType'>" not in ln and not ln.startswith("- Problem with given"):
            details.append(ln[2:])
    detail = details[-1] if details else (lines[0] if lines else message)
    detail = re.sub(r"^Type .*? expects a function or a callable class: ", "", detail)
    detail = re.sub(r"^Type .*? expects a class or a subclass of it: ", "", detail)
    detail = re.sub(r"\. Got value: .*$", "", detail)
    key = ".".join(keys)
    hint = ""
    if "has no attribute" in detail or "No module named" in detail or "Unable to import" in detail or "not a subclass" in detail:
        hint = " (check the class_path; `crabzoo list` shows the available components)"
    elif "is not accepted" in detail or "unrecognized arguments" in detail:
        hint = " (check the key's spelling; `crabzoo fit --config ... --print_config` shows every valid key)"
    text = f"{key}: {detail}{hint}" if key else f"{detail}{hint}"
    return text if len(text) < 600 else text[:600] + " ..."


if __name__ == "__main__":
    run_lightning_cli(sys.argv[1:])
