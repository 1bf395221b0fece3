"""``crabzoo fit|validate|test|predict``: Lightning's CLI with crabzoo's defaults.

Model and data are given in subclass mode (``class_path`` + ``init_args``), so any paradigm or data module,
including a user's own class on ``PYTHONPATH``, is selected from YAML without editing crabzoo.

Every run gets crabzoo's callbacks: the per-task report (``report.*``), ``last.ckpt`` kept up to date during
``fit`` (``last_checkpoint.*``, :class:`~crabzoo.checkpoints.LastCheckpoint`), ``predictions.jsonl`` written by
``predict`` (``predictions.*``, :class:`~crabzoo.predict.PredictionWriter`) and the random-number generator
states stored in checkpoints (:class:`~crabzoo.distributed.RNGCheckpoint`, unless the recipe adds it).
Checkpoint files are replaced atomically (:class:`~crabzoo.distributed.AtomicCheckpointIO`, unless the recipe
sets ``trainer.plugins``), and ``trainer.use_distributed_sampler`` defaults to ``false`` (crabzoo's batch
samplers split batches across ranks themselves). ``--ckpt_path last`` names the newest ``last.ckpt`` under
``trainer.default_root_dir``. A DeepSpeed checkpoint folder given to ``validate`` / ``test`` / ``predict`` on
another strategy is read without DeepSpeed (:func:`load_deepspeed_weights`).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import LightningCLI

from crabzoo.checkpoints import LastCheckpoint, find_last_checkpoint
from crabzoo.data.datamodule import AVUIEDataModule
from crabzoo.errors import CrabzooError
from crabzoo.paradigms.base import AVLLM
from crabzoo.predict import PredictionWriter
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

    Adds the per-task report, ``last.ckpt`` and predictions callbacks to every run and, unless the recipe sets
    ``trainer.logger``, logs with TensorBoard and CSV into ``<default_root_dir>/version_N/`` (with the resolved
    config, checkpoints, report and predictions).
    """

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_lightning_class_args(ReportCallback, "report")
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.set_defaults({"trainer.use_distributed_sampler": False})

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Any:
        from crabzoo.distributed import AtomicCheckpointIO, RNGCheckpoint

        if config.get("logger") in (None, True):
            config["logger"] = default_loggers(config.get("default_root_dir") or "runs")
        if config.get("plugins") is None:
            config["plugins"] = [AtomicCheckpointIO()]
        given = config.get("callbacks") or []
        given = given if isinstance(given, list) else [given]
        if not any(isinstance(cb, RNGCheckpoint) for cb in [*given, *callbacks]):
            callbacks = [*callbacks, RNGCheckpoint()]
        require_deepspeed(config.get("strategy"))
        return super()._instantiate_trainer(config, callbacks)

    def _parse_ckpt_path(self) -> None:
        """Apply the stored model configuration of a DeepSpeed checkpoint folder, as Lightning does for a file."""
        super()._parse_ckpt_path()
        from crabzoo.deepspeed_checkpoint import is_deepspeed_checkpoint, read_deepspeed_checkpoint

        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or not is_deepspeed_checkpoint(ckpt_path):
            return
        hparams = dict(read_deepspeed_checkpoint(ckpt_path).get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        if "_class_path" not in hparams:  # built in Python: the command line's model stands
            return
        model = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        self.config = self.parser.parse_object({subcommand: {"model": model}}, self.config)

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if kwargs.get("ckpt_path") == "last":
            kwargs["ckpt_path"] = resolve_last(self.trainer.default_root_dir, subcommand)
        if subcommand != "fit":
            kwargs["ckpt_path"] = load_deepspeed_weights(self.trainer, self.model, kwargs.get("ckpt_path"))
        return kwargs


def load_deepspeed_weights(trainer: Any, model: Any, ckpt_path: str | None) -> str | None:
    """``validate`` / ``test`` / ``predict`` on a DeepSpeed checkpoint folder without the DeepSpeed strategy.

    Lightning's other strategies read a checkpoint as one file; the folder's weights are loaded into ``model``
    here instead (:func:`crabzoo.deepspeed_checkpoint.read_deepspeed_checkpoint`, no DeepSpeed needed) and the
    command runs without ``ckpt_path``. Any other path (or the DeepSpeed strategy itself) is left to Lightning.

    Returns:
        ``None`` when the weights were loaded here, else ``ckpt_path``.
    """
    from lightning.pytorch.strategies import DeepSpeedStrategy
    from lightning.pytorch.utilities import rank_zero_info

    from crabzoo.deepspeed_checkpoint import is_deepspeed_checkpoint, read_deepspeed_checkpoint
    from crabzoo.inference.loading import load_state

    if ckpt_path is None or isinstance(trainer.strategy, DeepSpeedStrategy) or not is_deepspeed_checkpoint(ckpt_path):
        return ckpt_path
    missing = load_state(model, read_deepspeed_checkpoint(ckpt_path)["state_dict"], str(ckpt_path))
    note = f"; {len(missing)} frozen weights not in it keep the configuration's" if missing else ""
    rank_zero_info(f"crabzoo: loaded the weights of the DeepSpeed checkpoint {ckpt_path}{note}")
    return None


def require_deepspeed(strategy: Any) -> None:
    """A DeepSpeed strategy name (``deepspeed_stage_2`` ...) needs the deepspeed package: one line, not a traceback.

    Raises:
        CrabzooError: ``strategy`` names a DeepSpeed strategy and deepspeed cannot be imported.
    """
    if not (isinstance(strategy, str) and strategy.startswith("deepspeed")):
        return
    from lightning.pytorch.strategies.deepspeed import _DEEPSPEED_AVAILABLE

    if not _DEEPSPEED_AVAILABLE:
        raise CrabzooError(deepspeed_missing(strategy))


def deepspeed_missing(strategy: str) -> str:
    """The one-line message for a DeepSpeed strategy without the deepspeed package."""
    return (
        f"trainer.strategy {strategy}: the deepspeed package is not installed; install it next to crabzoo on the "
        "GPU machines (pip install deepspeed) or use recipes/scale/fsdp2.yaml or recipes/scale/ddp.yaml"
    )


def resolve_last(root: str | Path, subcommand: str) -> str | None:
    """``--ckpt_path last``: the newest ``last.ckpt`` under ``root``.

    ``fit`` without one starts from scratch (so a requeued job can always pass ``last``); the other commands
    need a trained model.

    Raises:
        CrabzooError: no ``last.ckpt`` under ``root`` for ``validate`` / ``test`` / ``predict``.
    """
    from lightning.pytorch.utilities import rank_zero_info

    found = find_last_checkpoint(root)
    if found is not None:
        rank_zero_info(f"crabzoo {subcommand}: --ckpt_path last -> {found}")
        return str(found)
    where = f"{root}/version_*/checkpoints/last.ckpt"
    if subcommand == "fit":
        rank_zero_info(f"crabzoo fit: --ckpt_path last: no {where} yet; starting from scratch")
        return None
    raise CrabzooError(
        f"--ckpt_path last: no {where} found; train first (`crabzoo fit` keeps last.ckpt), pass a checkpoint file, "
        "or set --trainer.default_root_dir to the runs folder of the training"
    )


def _check_config_paths(argv: list[str]) -> None:
    for flag, value in zip(argv, argv[1:]):
        if flag == "--config" and not Path(value).is_file():
            raise CrabzooError(f"config file {value} not found (paths are relative to {Path.cwd()})")


def run_lightning_cli(argv: list[str]) -> None:
    """Run a Lightning subcommand; configuration errors exit with status 2 and one message."""
    _check_config_paths(argv)
    # the arguments come from `argv` alone; sys.argv mirrors them for Lightning's launcher, which starts the other
    # ranks of a one-machine multi-process run (`--trainer.devices 2`) by running this command again
    sys.argv = [sys.argv[0], *argv]
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within Python")
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
    except SystemExit as err:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(err, SIGTERMException):  # last.ckpt was written by LastCheckpoint.on_exception
            print("crabzoo: stopped by SIGTERM; resume with --ckpt_path last", file=sys.stderr)
            raise SystemExit(143) from None
        raise
    except Exception as err:  # jsonargparse reports config mistakes as ArgumentError
        if type(err).__name__ in ("ArgumentError", "ParserError"):
            raise CrabzooError(_one_line(str(err))) from None
        if "must have DeepSpeed installed" in str(err):  # the strategy given as a class (DeepSpeedStrategy)
            raise CrabzooError(deepspeed_missing("DeepSpeedStrategy")) from None
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
