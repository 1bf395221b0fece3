"""Adapter-only checkpoints: the adapter's weights (and other trainable weights) as safetensors + JSON config.

Layout of a directory written by :func:`save_adapter`::

    adapter.json                 {"format", "class_path", "init_args", "adapted", "extra"}
    adapter.safetensors          adapter weights, keys "<group>.<module name>.<param>"
    trainable.safetensors        other trainable weights (optional; e.g. connectors)
    peft/<group>/                LoRA only: each group also in peft's own format
                                 (adapter_config.json + adapter_model.safetensors)

Every file is written to a temporary name in the same directory and moved into place.
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from crabzoo.adapters.base import Adapter
from crabzoo.errors import CrabzooError

FORMAT = "crabzoo.adapter/1"
CONFIG_NAME = "adapter.json"
WEIGHTS_NAME = "adapter.safetensors"
EXTRA_NAME = "trainable.safetensors"


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _save_tensors(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    _atomic_write(path, lambda tmp: save_file(data, tmp, metadata=metadata))


def _save_json(path: Path, obj: dict) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)

    _atomic_write(path, write)


def save_adapter(path_dir: str | Path, adapter: Adapter, extra_trainable: dict[str, Tensor] | None = None) -> Path:
    """Write an adapter-only checkpoint.

    Args:
        path_dir: Directory to create or update.
        adapter: An applied adapter with a ``config()`` method (:class:`~crabzoo.adapters.ILoRA`,
            :class:`~crabzoo.adapters.LoRA`).
        extra_trainable: Other trainable weights to keep with it (name -> tensor), e.g. connector weights.

    Returns:
        The directory.
    """
    path = Path(path_dir)
    path.mkdir(parents=True, exist_ok=True)
    state = adapter.adapter_state_dict()
    if not state:
        raise CrabzooError("the adapter has no weights to save: call adapter.apply(...) on a model first")
    _save_tensors(path / WEIGHTS_NAME, state, {"format": FORMAT})
    extra = dict(extra_trainable or {})
    if extra:
        _save_tensors(path / EXTRA_NAME, extra, {"format": FORMAT})
    elif (path / EXTRA_NAME).exists():
        os.unlink(path / EXTRA_NAME)
    config = dict(adapter.config())
    config["format"] = FORMAT
    config["adapted"] = sorted({k.split(".lora_")[0] for k in state})
    config["extra"] = sorted(extra)
    if hasattr(adapter, "save_peft"):
        adapter.save_peft(path / "peft")
    _save_json(path / CONFIG_NAME, config)
    return path


def read_adapter_config(path_dir: str | Path) -> dict:
    """The ``adapter.json`` of a checkpoint directory."""
    file = Path(path_dir) / CONFIG_NAME
    if not file.is_file():
        raise CrabzooError(f"{path_dir} is not an adapter checkpoint: {CONFIG_NAME} is missing")
    config = json.loads(file.read_text())
    if config.get("format") != FORMAT:
        raise CrabzooError(f"{file}: unknown adapter format {config.get('format')!r}, expected {FORMAT!r}")
    return config


def build_adapter(config: dict) -> Adapter:
    """Instantiate the adapter class named in a config (``class_path`` + ``init_args``)."""
    module_name, _, cls_name = config["class_path"].rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as err:
        raise CrabzooError(f"adapter class {config['class_path']!r} cannot be imported: {err}") from None
    return cls(**config["init_args"])


def load_adapter(
    path_dir: str | Path, model_or_groups: nn.Module | dict[str, nn.Module]
) -> tuple[Adapter, dict[str, Tensor]]:
    """Rebuild an adapter from a checkpoint, apply it to a base model and load its weights.

    Args:
        path_dir: Directory written by :func:`save_adapter`.
        model_or_groups: Module groups (name -> module), or a module with ``module_groups()`` (a backbone or
            paradigm), or a plain module (used as the only group of the checkpoint).

    Returns:
        The applied adapter and the extra trainable tensors (empty when none were saved).
    """
    config = read_adapter_config(path_dir)
    if isinstance(model_or_groups, dict):
        groups = model_or_groups
    elif hasattr(model_or_groups, "module_groups"):
        groups = model_or_groups.module_groups()
    else:
        wanted = config["init_args"]["groups"]
        if len(wanted) != 1:
            raise CrabzooError(
                f"adapter checkpoint {path_dir} adapts groups {wanted}: pass a dict group -> module"
            )
        groups = {wanted[0]: model_or_groups}
    adapter = build_adapter(config)
    adapter.apply(groups, {})
    adapter.load_adapter_state_dict(load_file(str(Path(path_dir) / WEIGHTS_NAME)))
    extra_file = Path(path_dir) / EXTRA_NAME
    extra = load_file(str(extra_file)) if extra_file.is_file() else {}
    return adapter, extra
