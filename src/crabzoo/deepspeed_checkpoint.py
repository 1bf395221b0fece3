"""Read the checkpoint folder Lightning's DeepSpeed strategy writes (ZeRO stage 1 or 2) without DeepSpeed.

``DeepSpeedStrategy.save_checkpoint`` hands Lightning's checkpoint (minus ``state_dict`` and
``optimizer_states``) to the DeepSpeed engine as its client state, with the tag ``checkpoint``:

.. code-block:: text

    last.ckpt/                                     # the "checkpoint file" is a folder
        latest                                     # the tag: "checkpoint"
        zero_to_fp32.py                            # DeepSpeed's consolidation script
        checkpoint/
            mp_rank_00_model_states.pt             # {"module": state dict, DeepSpeed's keys, Lightning's keys}
            [bf16_]zero_pp_rank_<r>_mp_rank_00_optim_states.pt   # one per GPU: fp32 master weights + Adam

The model-states file holds the whole module's state dict under ``module`` (in bf16 under ``bf16-mixed``:
DeepSpeed casts the module), DeepSpeed's bookkeeping (plain lists, dicts, ``torch.Size``, a ``set``) and
Lightning's keys (``hyper_parameters``, ``global_step``, ``loops``, ``callbacks``, ...): all of it loads with
``torch.load(weights_only=True)``. The optimizer shards pickle DeepSpeed's own classes and are not read.
:func:`read_deepspeed_checkpoint` returns the dictionary a single-file Lightning checkpoint would hold, so
``crabzoo export``, ``predict`` and ``ask`` take the folder as ``--ckpt_path``.

ZeRO stage 3 partitions the weights themselves (``zero_pp_rank_<r>_mp_rank_00_model_states.pt`` per GPU);
those folders are refused with the command that consolidates them.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from crabzoo.errors import CrabzooError

LATEST = "latest"
"""File of the checkpoint folder naming its tag (the sub-folder with the states)."""

LIGHTNING_TAG = "checkpoint"
"""The tag Lightning's ``DeepSpeedStrategy`` saves under."""

MODEL_STATES = "mp_rank_00_model_states.pt"
"""Model states of ZeRO stages 0-2 (no model parallelism): the whole module's state dict."""

DEEPSPEED_KEYS = (
    "module", "buffer_names", "optimizer", "param_shapes", "frozen_param_shapes", "shared_params",
    "frozen_param_fragments", "lr_scheduler", "data_sampler", "random_ltd", "sparse_tensor_module_names",
    "skipped_steps", "global_steps", "global_samples", "dp_world_size", "mp_world_size", "ds_config", "ds_version",
    "csr_tensor_module_names", "num_experts",
)
"""Keys the DeepSpeed engine adds to the model-states file (everything else is Lightning's client state)."""

WRAPPER_PREFIXES = ("_forward_module.", "module.")
"""Prefixes of wrapped modules: Lightning < 2.1 wrapped the LightningModule, a bare engine has ``module.``."""


def is_deepspeed_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a DeepSpeed checkpoint folder (a ``latest`` file, or a tag folder of model states)."""
    path = Path(path)
    if not path.is_dir():
        return False
    return (path / LATEST).is_file() or any(path.glob("*/*model_states.pt"))


def tag_dir(directory: Path) -> Path:
    """The folder holding the states: the tag named in ``latest``, else Lightning's ``checkpoint``."""
    latest = directory / LATEST
    tag = latest.read_text().strip() if latest.is_file() else LIGHTNING_TAG
    folder = directory / tag
    if not folder.is_dir():
        raise CrabzooError(
            f"{directory}: DeepSpeed checkpoint folder without its tag folder {tag!r} "
            f"({'named in ' + str(latest) if latest.is_file() else 'no latest file'}); the checkpoint is incomplete"
        )
    return folder


def model_states_file(directory: str | Path) -> Path:
    """``<directory>/<tag>/mp_rank_00_model_states.pt``.

    Raises:
        CrabzooError: a ZeRO-3 checkpoint (weights partitioned per GPU) or no model-states file.
    """
    directory = Path(directory)
    folder = tag_dir(directory)
    path = folder / MODEL_STATES
    if path.is_file():
        return path
    if any(folder.glob("zero_pp_rank_*_model_states.pt")):
        raise CrabzooError(
            f"{directory} is a ZeRO stage 3 checkpoint (each GPU holds part of the weights); consolidate it into "
            "one file with deepspeed installed (lightning.pytorch.utilities.deepspeed."
            "convert_zero_checkpoint_to_fp32_state_dict) and pass that file"
        )
    raise CrabzooError(f"{directory}: no {folder.name}/{MODEL_STATES}; not a DeepSpeed checkpoint of `crabzoo fit`")


def strip_wrapper_prefix(state: dict[str, Any]) -> dict[str, Any]:
    """The state dict with a wrapper prefix (see :data:`WRAPPER_PREFIXES`) removed when every key carries it."""
    for prefix in WRAPPER_PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            return {key[len(prefix) :]: value for key, value in state.items()}
    return dict(state)


def read_deepspeed_checkpoint(directory: str | Path) -> dict[str, Any]:
    """The Lightning checkpoint dictionary of a DeepSpeed checkpoint folder, read on the CPU.

    Args:
        directory: The folder ``DeepSpeedStrategy`` wrote (``<name>.ckpt``).

    Returns:
        Lightning's client state (``hyper_parameters``, ``global_step``, ...) plus ``state_dict``: the
        module's weights as saved (bf16 under ``bf16-mixed``), with the LightningModule's own names.

    Raises:
        CrabzooError: an incomplete or ZeRO-3 folder, or a file ``torch.load(weights_only=True)`` refuses.
    """
    import torch

    path = model_states_file(directory)
    try:
        states = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CrabzooError(f"{path}: cannot read it with torch.load(weights_only=True) ({reason})") from None
    if not isinstance(states, dict) or not isinstance(states.get("module"), dict):
        raise CrabzooError(f"{path}: no 'module' state dict; not a DeepSpeed checkpoint of `crabzoo fit`")
    ckpt = {key: value for key, value in states.items() if key not in DEEPSPEED_KEYS}
    ckpt["state_dict"] = strip_wrapper_prefix(states["module"])
    return ckpt
