"""Rebuild a trained paradigm from its checkpoint (or a recipe) and load its weights, ready for inference.

A checkpoint written by ``crabzoo fit`` stores the model's YAML tree (``class_path`` / ``init_args``) in its
``hyper_parameters`` (see :func:`crabzoo.paradigms.base.save_config`): :func:`load_trained` instantiates that
tree the way Lightning's CLI does, then loads the state dict. A recipe (``config``) replaces the stored tree:
its ``model:`` section is instantiated (several files merge in order, as repeated ``--config`` flags of
``crabzoo fit`` do), and the checkpoint, when given too, only supplies the weights.

A checkpoint may leave out frozen pretrained weights (they come from their own public checkpoints, which the
configuration names): such missing parameters are accepted and listed in :attr:`LoadReport.missing_frozen`.
Missing trained parameters, unexpected keys or different shapes mean the checkpoint was written by another
paradigm or configuration, and raise :class:`~crabzoo.errors.CrabzooError` naming the file.

The task order of task-routed adapters (``task_names``) is not part of the constructor arguments a fit
records when it comes from the data module; it is read back from the run's ``config.yaml`` (next to the
``checkpoints/`` folder) or from the recipe's ``data.init_args.tasks``.
"""

from __future__ import annotations

import importlib
import logging
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crabzoo.errors import CrabzooError

if TYPE_CHECKING:
    from crabzoo.paradigms.base import AVLLM

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What :func:`load_trained` built and loaded (attached to the model as ``model.load_report``).

    Attributes:
        source: The checkpoint (or the recipe when no checkpoint is given).
        class_path: The paradigm class that was built.
        missing_frozen: Frozen parameters (and buffers) the checkpoint lacks; they keep the weights the
            configuration loads (public pretrained checkpoints) or its initialisation.
        task_names: Task order of task-routed adapters.
        task_names_from: Where ``task_names`` came from (``hyper_parameters``, a ``config.yaml``, the recipe,
            or ``""`` when none was found).
    """

    source: str
    class_path: str
    missing_frozen: list[str] = field(default_factory=list)
    task_names: list[str] = field(default_factory=list)
    task_names_from: str = ""

    def summary(self) -> str:
        """One line for the user (empty when there is nothing to say)."""
        if not self.missing_frozen:
            return ""
        groups: dict[str, int] = {}
        for name in self.missing_frozen:
            top = name.split(".", 1)[0]
            groups[top] = groups.get(top, 0) + 1
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(groups.items()))
        return (
            f"{self.source} lacks {len(self.missing_frozen)} frozen weights ({parts}); they keep what the "
            "configuration loads (pretrained checkpoints or initialisation)"
        )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dictionary, read with ``torch.load(weights_only=True)`` on the CPU.

    A DeepSpeed checkpoint folder (ZeRO-1/2, see :mod:`crabzoo.deepspeed_checkpoint`) is read from its
    model-states file; DeepSpeed need not be installed.

    Raises:
        CrabzooError: missing file, a directory of another sharded checkpoint (FSDP), a ZeRO-3 folder, or a file
            that is not a readable Lightning checkpoint.
    """
    import torch

    from crabzoo.deepspeed_checkpoint import is_deepspeed_checkpoint, read_deepspeed_checkpoint

    path = Path(path)
    if is_deepspeed_checkpoint(path):
        return read_deepspeed_checkpoint(path)
    if path.is_dir():
        raise CrabzooError(
            f"{path} is a directory (a sharded checkpoint); consolidate it into one file first "
            "(lightning.pytorch.utilities.consolidate_checkpoint.convert) and pass that file"
        )
    if not path.is_file():
        raise CrabzooError(f"{path}: checkpoint file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CrabzooError(f"{path}: cannot read it as a checkpoint with weights_only=True ({reason})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CrabzooError(f"{path}: not a Lightning checkpoint (no state_dict); pass a .ckpt written by crabzoo fit")
    return ckpt


def _paradigm_class(class_path: str, source: str) -> type:
    from crabzoo.paradigms.base import AVLLM

    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        raise CrabzooError(
            f"{source}: its model class {class_path!r} cannot be imported; install the package that defines it"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, AVLLM)):
        raise CrabzooError(
            f"{source} was written by {class_path}, not a crabzoo paradigm (crabzoo.paradigms.base.AVLLM subclass); "
            "pass a checkpoint of `crabzoo fit`"
        )
    return cls


def _instantiate(config: dict[str, Any], source: str) -> AVLLM:
    """Build the paradigm from a ``{"class_path", "init_args"}`` tree as Lightning's CLI does."""
    from lightning.pytorch.cli import instantiate_module

    from crabzoo.paradigms.base import AVLLM

    _paradigm_class(config["_class_path"], source)
    try:
        return instantiate_module(AVLLM, config)
    except CrabzooError as err:
        raise CrabzooError(f"{source}: cannot rebuild the model: {err}") from None
    except Exception as err:  # jsonargparse reports bad trees as ArgumentError / ParserError
        if type(err).__name__ not in ("ArgumentError", "ParserError", "TypeError", "ValueError"):
            raise
        reason = " ".join(str(err).split())[:300]
        raise CrabzooError(f"{source}: cannot rebuild the model from its configuration ({reason})") from None


def _read_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise CrabzooError(f"config file {path} not found (paths are relative to {Path.cwd()})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise CrabzooError(f"config file {path}: not valid YAML ({' '.join(str(err).split())[:200]})") from None
    if not isinstance(data, dict):
        raise CrabzooError(f"config file {path}: expected a mapping with a `model:` section")
    return data


def model_from_configs(configs: Sequence[str | Path]) -> tuple[AVLLM, list[str]]:
    """Instantiate the ``model:`` sections of recipe files (merged in order) and read their task list.

    Returns:
        The model and ``data.init_args.tasks`` of the last file that names them (``[]`` if none).

    Raises:
        CrabzooError: a missing file, no ``model:`` section, or a configuration the paradigm rejects.
    """
    import yaml
    from jsonargparse import ArgumentParser

    from crabzoo.paradigms.base import AVLLM

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(AVLLM, "model", fail_untyped=False, required=True)
    args: list[str] = []
    tasks: list[str] = []
    for path in configs:
        data = _read_yaml(path)
        if isinstance(data.get("model"), dict):
            args += ["--model", yaml.safe_dump(data["model"])]
        data_args = (data.get("data") or {}).get("init_args") or {} if isinstance(data.get("data"), dict) else {}
        if data_args.get("tasks"):
            tasks = [str(t) for t in data_args["tasks"]]
    names = ", ".join(str(p) for p in configs)
    if not args:
        raise CrabzooError(f"{names}: no `model:` section; pass the paradigm/recipe files you trained with")
    try:
        cfg = parser.parse_args(args)
        model = parser.instantiate(cfg).model
    except CrabzooError as err:
        raise CrabzooError(f"{names}: cannot build the model: {err}") from None
    except Exception as err:
        if type(err).__name__ not in ("ArgumentError", "ParserError", "TypeError", "ValueError"):
            raise
        from crabzoo.lightning_cli import _one_line

        raise CrabzooError(f"{names}: {_one_line(str(err))}") from None
    return model, tasks


def run_task_names(ckpt_path: Path) -> list[str]:
    """``data.init_args.tasks`` of the run's ``config.yaml`` (``<run>/checkpoints/x.ckpt`` -> ``<run>/config.yaml``).

    When the run discovered its tasks from the data folder (``tasks: null``), they are discovered again the
    same way (sorted task folders), if that folder still exists. ``[]`` when nothing can be found.
    """
    for folder in (ckpt_path.parent.parent, ckpt_path.parent):
        config = folder / "config.yaml"
        if not config.is_file():
            continue
        try:
            data = _read_yaml(config)
        except CrabzooError:
            return []
        init = ((data.get("data") or {}).get("init_args") or {}) if isinstance(data.get("data"), dict) else {}
        if init.get("tasks"):
            return [str(t) for t in init["tasks"]]
        if init.get("root"):
            from crabzoo.tasks import TASKS

            root = Path(init["root"])
            base = root / "AVUIE_2" if (root / "AVUIE_2").is_dir() else root
            if base.is_dir():
                return sorted(p.name for p in base.iterdir() if p.is_dir() and p.name in TASKS)
        return []
    return []


def load_state(model: AVLLM, state: dict[str, Any], source: str) -> list[str]:
    """Load ``state`` into ``model``; returns the frozen names it lacked.

    Raises:
        CrabzooError: different shapes, keys the model does not have, or missing trained parameters.
    """
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise CrabzooError(
            f"{source}: its weights do not fit this model (another paradigm or configuration: {detail})"
        ) from None
    if unexpected:
        raise CrabzooError(
            f"{source} holds {len(unexpected)} weights this {type(model).__name__} lacks (e.g. {unexpected[:3]}): it "
            "was written by another paradigm or configuration; pass the checkpoint's own run, or its recipe with --config"
        )
    params = dict(model.named_parameters())
    trained = [k for k in missing if k in params and params[k].requires_grad]
    if trained:
        raise CrabzooError(
            f"{source} lacks {len(trained)} trained weights of this {type(model).__name__} (e.g. {trained[:3]}): it was "
            "written by another paradigm or configuration"
        )
    return list(missing)


def load_trained(
    ckpt_path: str | None = None,
    config: str | Sequence[str] | None = None,
    map_location: str = "cpu",
    task_names: Sequence[str] | None = None,
) -> AVLLM:
    """A trained paradigm in eval mode, with its weights, on ``map_location``.

    Args:
        ckpt_path: A checkpoint written by ``crabzoo fit`` (``.ckpt``). Without ``config`` the model is rebuilt
            from the checkpoint's ``hyper_parameters``.
        config: Recipe / paradigm YAML file(s) whose ``model:`` sections build the model instead (merged in
            order); with ``ckpt_path`` the checkpoint supplies the weights, without it the configuration's own
            weights are used (pretrained components, random initialisation elsewhere).
        map_location: Device the model is moved to (``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...).
        task_names: Task order of task-routed adapters (default: the checkpoint's, its run's ``config.yaml``,
            or the recipe's ``data.init_args.tasks``).

    Returns:
        The model; ``model.load_report`` is a :class:`LoadReport`.

    Raises:
        CrabzooError: missing or unreadable files, a checkpoint of another paradigm or configuration, or a
            configuration the paradigm rejects.
    """
    if ckpt_path is None and not config:
        raise CrabzooError("give a checkpoint (--ckpt_path) or the recipe to build the model from (--config)")
    configs = [config] if isinstance(config, (str, Path)) else list(config or [])
    ckpt = read_checkpoint(ckpt_path) if ckpt_path is not None else None
    recipe_tasks: list[str] = []
    names_from = ""
    if configs:
        model, recipe_tasks = model_from_configs(configs)
        source = str(ckpt_path) if ckpt_path is not None else ", ".join(map(str, configs))
    else:
        hparams = dict(ckpt.get("hyper_parameters") or {})
        source = str(ckpt_path)
        if "_class_path" not in hparams:
            raise CrabzooError(
                f"{source} holds no model configuration (hyper_parameters without class_path: the model was built in "
                "Python); pass the recipe it was trained with as --config"
            )
        hparams.pop("_instantiator", None)
        model = _instantiate(hparams, source)
    report = LoadReport(source=source, class_path=f"{type(model).__module__}.{type(model).__qualname__}")
    if ckpt is not None:
        report.missing_frozen = load_state(model, ckpt["state_dict"], source)
    if task_names:
        model.task_names, names_from = list(task_names), "argument"
    elif model.task_names:
        names_from = "hyper_parameters"
    elif recipe_tasks:
        model.task_names, names_from = recipe_tasks, "recipe"
    elif ckpt_path is not None:
        found = run_task_names(Path(ckpt_path))
        if found:
            model.task_names, names_from = found, str(Path(ckpt_path).parent.parent / "config.yaml")
    report.task_names, report.task_names_from = list(model.task_names), names_from
    if report.missing_frozen:
        log.info(report.summary())
    model.load_report = report
    model.to(map_location)
    model.eval()
    return model
