"""Scaling a paradigm over many devices: the FSDP2 sharding plan, mixed precision and safe checkpoints.

Lightning's :class:`~lightning.pytorch.strategies.ModelParallelStrategy` hands the paradigm a device mesh and
calls its ``configure_model()`` hook once per process; the paradigm calls :func:`shard_model` there. The plan
puts every LLM decoder layer and every encoder block in its own FSDP unit (so only one layer's full weights live
on a device at a time), each connector in its own unit, and the rest (embeddings, LM head, encoder stems, final
norms) in the root unit.

Frozen and trainable parameters may share a unit: FSDP2 reduce-scatters gradients only for parameters that
require them. What FSDP2 does *not* accept is trainable parameters of different dtypes in one unit (one
reduce-scatter per unit); when that happens (e.g. fp32 adapter weights on a bf16 base) the adapted linears
(the modules that own ``lora_*`` parameters) become units of their own first.

The module also holds :class:`AtomicCheckpointIO` (``.ckpt`` files replaced atomically) and
:func:`export_adapter` (adapter-only weights of a sharded model).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from crabzoo.errors import CrabzooError

ADAPTER_PREFIX = "lora_"
"""Name prefix of adapter parameters (peft convention, used by every crabzoo adapter)."""

_PARAM_DTYPES: dict[str, tuple[torch.dtype, torch.dtype] | None] = {
    "bf16-mixed": (torch.bfloat16, torch.float32),
    "bf16": (torch.bfloat16, torch.float32),
    "16-mixed": (torch.float16, torch.float32),
    "16": (torch.float16, torch.float32),
    "32-true": None,
    "32": None,
    "64-true": None,
    "64": None,
    "bf16-true": None,
    "16-true": None,
}


def mixed_precision_policy(precision: str | None) -> Any:
    """The FSDP2 ``MixedPrecisionPolicy`` of a Lightning precision string.

    ``"bf16-mixed"`` gathers parameters in bf16 for compute and reduces gradients in fp32 (the sharded master
    weights stay in their own dtype). ``"*-true"`` precisions and ``None`` need no policy: the weights already
    have the compute dtype.

    Args:
        precision: A Lightning precision (``"bf16-mixed"``, ``"16-mixed"``, ``"32-true"``, ``"bf16-true"``...)
            or ``None``.

    Returns:
        A ``torch.distributed.fsdp.MixedPrecisionPolicy`` or ``None``.
    """
    if precision is None:
        return None
    key = str(precision)
    if key not in _PARAM_DTYPES:
        raise CrabzooError(f"unknown precision {precision!r} for FSDP2; use one of {sorted(_PARAM_DTYPES)}")
    dtypes = _PARAM_DTYPES[key]
    if dtypes is None:
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=dtypes[0], reduce_dtype=dtypes[1])


def block_classes(module: nn.Module) -> set[type[nn.Module]]:
    """Classes of the repeated blocks inside ``module``: LLM decoder layers and encoder blocks.

    Backbones expose ``decoder_layer_cls`` and encoders ``block_cls``; any submodule that exposes either
    contributes its class.
    """
    classes: set[type[nn.Module]] = set()
    for sub in module.modules():
        for attr in ("decoder_layer_cls", "block_cls"):
            try:
                cls = getattr(sub, attr, None)
            except CrabzooError:
                cls = None
            if isinstance(cls, type) and issubclass(cls, nn.Module):
                classes.add(cls)
    return classes


def _owns_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _is_adapted(module: nn.Module) -> bool:
    return any(name.startswith(ADAPTER_PREFIX) for name, _ in module.named_parameters(recurse=False))


def _group_units(module: nn.Module, blocks: set[type[nn.Module]]) -> list[nn.Module]:
    """Units from the paradigm's module groups: each connector, and each group without repeated blocks."""
    groups_fn = getattr(module, "module_groups", None)
    if not callable(groups_fn):
        return []
    units: list[nn.Module] = []
    for name, group in groups_fn().items():
        if group is module:
            continue
        has_blocks = any(type(m) in blocks for m in group.modules())
        if name == "connector" and isinstance(group, nn.ModuleList):
            units.extend(m for m in group if _owns_params(m))
        elif not has_blocks and _owns_params(group) and group is not getattr(module, "backbone", None):
            units.append(group)
    return units


def _trainable_dtypes(params: Iterable[nn.Parameter]) -> set[torch.dtype]:
    return {p.dtype for p in params if p.requires_grad}


def _direct_params(unit: nn.Module, inner: set[int]) -> list[nn.Parameter]:
    """Parameters of ``unit`` not owned by one of the ``inner`` units (by ``id``)."""
    seen: set[int] = set()
    out: list[nn.Parameter] = []

    def visit(m: nn.Module) -> None:
        for p in m.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        for child in m.children():
            if id(child) not in inner:
                visit(child)

    visit(unit)
    return out


FORWARD_METHODS = ("generate", "generate_multimodal", "loss_multimodal")
"""Methods besides ``forward`` that run a model's weights; :func:`shard_model` registers those a model has."""


def sharding_plan(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The submodules :func:`shard_model` turns into FSDP units, innermost first (the root comes last).

    Args:
        module: The model (a paradigm, or any module whose submodules expose ``decoder_layer_cls``/``block_cls``).

    Returns:
        ``(qualified name, module)`` pairs; the root is ``("", module)``.

    Raises:
        CrabzooError: If trainable parameters of different dtypes remain in one unit.
    """
    blocks = block_classes(module)
    names = {id(m): n for n, m in module.named_modules()}
    units = [m for m in module.modules() if type(m) in blocks and m is not module]
    units += [m for m in _group_units(module, blocks) if id(m) not in {id(u) for u in units}]
    units.append(module)
    adapted = [m for m in module.modules() if _is_adapted(m)]
    chosen = {id(u) for u in units}
    for unit in list(units):
        inner = chosen - {id(unit)}
        if len(_trainable_dtypes(_direct_params(unit, inner))) > 1:
            for m in adapted:
                if id(m) not in chosen and names[id(m)].startswith(names[id(unit)]):
                    units.append(m)
                    chosen.add(id(m))
    for unit in units:
        dtypes = _trainable_dtypes(_direct_params(unit, chosen - {id(unit)}))
        if len(dtypes) > 1:
            raise CrabzooError(
                f"FSDP2 unit {names[id(unit)] or '<root>'!r} has trainable parameters of several dtypes "
                f"{sorted(str(d) for d in dtypes)}; give the trainable modules one dtype (e.g. the backbone's "
                "torch_dtype) or keep them in separate modules"
            )
    ordered = sorted(units, key=lambda m: -names[id(m)].count(".") - (0 if m is module else 1))
    return [(names[id(m)], m) for m in ordered]


def is_sharded(module: nn.Module) -> bool:
    """Whether ``fully_shard`` was already applied to ``module``."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def data_parallel_mesh(device_mesh: Any) -> Any:
    """The 1-D mesh to shard over: every device of ``device_mesh``.

    Lightning's ``ModelParallelStrategy`` builds a 2-D mesh ``(data_parallel, tensor_parallel)`` with, by default,
    one data-parallel group per node and the node's devices on the tensor-parallel dimension. crabzoo applies no
    tensor parallelism, so sharding over the ``data_parallel`` dimension alone would leave each device of a node
    with its own unsynchronised replica; the dimensions are flattened into one FSDP dimension instead.
    """
    if getattr(device_mesh, "ndim", 1) == 1:
        return device_mesh
    names = tuple(getattr(device_mesh, "mesh_dim_names", None) or ())
    if all(device_mesh.size(i) == 1 for i in range(1, device_mesh.ndim)) and names:
        return device_mesh[names[0]]
    try:
        return device_mesh._flatten("crabzoo_fsdp")
    except (AttributeError, RuntimeError, ValueError, NotImplementedError):
        from torch.distributed.device_mesh import init_device_mesh

        return init_device_mesh(device_mesh.device_type, (device_mesh.size(),), mesh_dim_names=("crabzoo_fsdp",))


def shard_model(
    module: nn.Module,
    device_mesh: Any,
    mixed_precision: str | None = "bf16-mixed",
    activation_checkpointing: bool = False,
    reshard_after_forward: bool = True,
) -> nn.Module:
    """Apply FSDP2 (``fully_shard``) to a model following :func:`sharding_plan`; idempotent.

    Call it from ``LightningModule.configure_model()`` with ``self.device_mesh`` under
    ``ModelParallelStrategy``. Methods other than ``forward`` that run the model (:data:`FORWARD_METHODS`, e.g.
    ``generate`` or a sharded Omni thinker's ``loss_multimodal``) are registered with FSDP so that the root
    unit's parameters are gathered for them too.

    Args:
        module: The model to shard in place.
        device_mesh: The device mesh (``self.device_mesh``); all its devices form one FSDP dimension
            (see :func:`data_parallel_mesh`).
        mixed_precision: Lightning precision string (see :func:`mixed_precision_policy`).
        activation_checkpointing: Recompute each decoder layer's/encoder block's activations in the backward pass.
        reshard_after_forward: Free gathered weights after each unit's forward (ZeRO-3); ``False`` keeps them
            until the backward (ZeRO-2-like, more memory, less communication).

    Returns:
        ``module`` itself.
    """
    if is_sharded(module):
        return module
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    mesh = data_parallel_mesh(device_mesh)
    policy = mixed_precision_policy(mixed_precision)
    kwargs: dict[str, Any] = {"mesh": mesh, "reshard_after_forward": reshard_after_forward}
    if policy is not None:
        kwargs["mp_policy"] = policy
    plan = sharding_plan(module)
    if activation_checkpointing:
        from torch.distributed._composable import checkpoint

        blocks = block_classes(module)
        for _, unit in plan:
            if type(unit) in blocks:
                checkpoint(unit)
    for _, unit in plan:
        fully_shard(unit, **kwargs)
    for method in FORWARD_METHODS:
        if callable(getattr(module, method, None)):
            register_fsdp_forward_method(module, method)
    return module


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a sharded ``DTensor`` (a collective: call on every rank), or ``tensor`` itself."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


class _GatheredAdapter:
    """An applied adapter seen through gathered (unsharded) weights, for :func:`~crabzoo.adapters.io.save_adapter`."""

    def __init__(self, adapter: Any, state: dict[str, torch.Tensor]) -> None:
        self._adapter = adapter
        self._state = state

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        return self._state

    def config(self) -> dict:
        return self._adapter.config()


def export_adapter(module: nn.Module, directory: str | Path, extra: Callable[[str], bool] | None = None) -> Path | None:
    """Write the adapter-only checkpoint of a (possibly sharded) paradigm.

    Every rank must call it (gathering shards is collective); rank 0 writes ``directory`` with
    :func:`crabzoo.adapters.io.save_adapter`.

    Args:
        module: A paradigm with an applied ``adapter``.
        directory: Output directory.
        extra: Predicate on parameter names of other trainable weights to keep (e.g. connectors).

    Returns:
        The directory on rank 0, ``None`` on other ranks.
    """
    from crabzoo.adapters.io import save_adapter

    adapter = getattr(module, "adapter", None)
    if adapter is None:
        raise CrabzooError("export_adapter: the model has no adapter (set model.init_args.adapter)")
    state = {k: full_tensor(v).detach().cpu() for k, v in adapter.adapter_state_dict().items()}
    extras = {}
    if extra is not None:
        extras = {
            n: full_tensor(p).detach().cpu()
            for n, p in module.named_parameters()
            if p.requires_grad and ADAPTER_PREFIX not in n and extra(n)
        }
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    if rank != 0:
        return None
    return save_adapter(directory, _GatheredAdapter(adapter, state), extras or None)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that never leaves a truncated ``.ckpt`` in place.

    Lightning's own ``TorchCheckpointIO`` writes through an fsspec transaction whose temporary file lives in the
    system temp dir; the final ``shutil.move`` is a copy when that is another filesystem, so a crash mid-copy
    can leave a partial file under the real name. This IO writes a temporary file next to the target, fsyncs
    it and renames it over the target with ``os.replace`` (atomic on POSIX). Pass it as
    ``trainer.plugins: [crabzoo.distributed.AtomicCheckpointIO]``; sharded checkpoints (a directory per
    checkpoint) are written by ``torch.distributed.checkpoint`` instead, whose metadata file is written last.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint does not take storage_options")
        _atomic_torch_save(checkpoint, Path(path))


class RNGCheckpoint(L.Callback):
    """Keeps the random-number generators in checkpoints so that a resumed run draws what the original drew.

    Lightning restores weights, optimizer, scheduler and loop progress but not the RNG states (dropout, random
    routing, sampling). This callback stores Python's, NumPy's, torch's CPU and CUDA generator states with each
    checkpoint and puts them back just before the first training batch after a resume, i.e. after Lightning
    has rebuilt the data iterators (which draw a seed from the global generator).

    Ranks seeded alike (``seed_everything``) hold the same states; rank 0's are saved.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        import random

        import numpy as np

        state: dict[str, Any] = {
            "python": random.getstate(),
            "numpy": [(v.tolist() if isinstance(v, np.ndarray) else v) for v in np.random.get_state()],
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = dict(state_dict)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._pending is None:
            return
        import random

        import numpy as np

        state, self._pending = self._pending, None
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class LayerWrapPolicy(ModuleWrapPolicy):
    """FSDP1 auto-wrap policy from class import paths, so that YAML can name the layers to wrap.

    Example (``trainer.strategy.init_args.auto_wrap_policy``)::

        class_path: crabzoo.distributed.LayerWrapPolicy
        init_args:
          layers: [transformers.models.llama.modeling_llama.LlamaDecoderLayer]

    Args:
        layers: Import paths of the module classes that become FSDP units.
    """

    def __init__(self, layers: list[str]) -> None:
        import importlib

        classes = set()
        for path in layers:
            module_name, _, name = path.rpartition(".")
            try:
                classes.add(getattr(importlib.import_module(module_name), name))
            except (ImportError, AttributeError) as err:
                raise CrabzooError(f"LayerWrapPolicy: cannot import {path!r} ({err})") from None
        super().__init__(classes)
