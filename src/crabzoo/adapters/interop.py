"""Import and export I-LoRA weights in the key layout of the official Crab / Crab+ code.

The official layer (``peft_hyper/tuners/lora.py`` in GeWu-Lab/Crab and GeWu-Lab/Crab_Plus) subclasses
``nn.Linear`` and holds the adapter as bias-free ``nn.Linear`` children, so each adapted module ``P`` has::

    P.lora_A.weight       (r, d_in)
    P.lora_B0.weight ...  P.lora_B{N-1}.weight      (d_out, r) each
    P.lora_route.weight   (N, d_in)

The module paths carry the wrappers of the training script: ``base_model.model.`` (peft's ``PeftModel``
around the LLM) in Crab, e.g. ``base_model.model.model.layers.0.self_attn.q_proj``, and
``thinker.base_model.model.`` in Crab+, followed by the thinker's own paths (``model.layers.*``,
``audio_tower.layers.*.self_attn.{q,k,v}_proj``, ``visual.blocks.*.mlp.{gate,up,down}_proj``).

Mapping official paths to crabzoo's adapted modules: with ``prefixes`` (group -> official path prefix) the
official path is ``prefixes[group] + <name inside the group>``; without, each crabzoo module takes the
official path sharing the longest dotted suffix with its name, which must be unique.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from crabzoo.adapters.ilora import ILoRA
from crabzoo.errors import CrabzooError

CRAB_PREFIX = "base_model.model."
CRAB_PLUS_PREFIX = "thinker.base_model.model."


def load_official_state(path: str | Path) -> dict[str, Tensor]:
    """Read the ``lora_*`` tensors of an official checkpoint (``.safetensors``, or ``.bin``/``.pt`` read with
    ``weights_only=True``; a directory is searched for ``adapter_model.safetensors`` / ``adapter_model.bin``)."""
    path = Path(path)
    if path.is_dir():
        for name in ("adapter_model.safetensors", "adapter_model.bin", "pytorch_model.bin"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise CrabzooError(f"{path} holds no adapter_model.safetensors or adapter_model.bin")
    if not path.is_file():
        raise CrabzooError(f"official adapter checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    lora = {k: v for k, v in state.items() if ".lora_" in k}
    if not lora:
        raise CrabzooError(f"{path} holds no lora_* tensors (keys look like {sorted(state)[:3]})")
    return lora


def _official_modules(state: Mapping[str, Tensor]) -> dict[str, int]:
    """Official module path -> number of heads, from the ``lora_A`` keys and ``lora_B{i}`` keys."""
    modules: dict[str, int] = {}
    for key in state:
        if key.endswith(".lora_A.weight"):
            path = key[: -len(".lora_A.weight")]
            n = 0
            while f"{path}.lora_B{n}.weight" in state:
                n += 1
            modules[path] = n
    return modules


def _common_suffix(a: list[str], b: list[str]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def match_modules(
    adapter: ILoRA, official_paths: list[str], prefixes: Mapping[str, str] | None = None
) -> dict[str, str]:
    """crabzoo layer name (``group.name``) -> official module path.

    Raises:
        CrabzooError: A crabzoo module has no official counterpart, or several equally good ones.
    """
    mapping: dict[str, str] = {}
    available = set(official_paths)
    split = {p: p.split(".") for p in official_paths}
    for lname in adapter.layers:
        group, _, inner = lname.partition(".")
        if prefixes is not None and group in prefixes:
            path = prefixes[group] + inner
            if path not in available:
                raise CrabzooError(
                    f"official checkpoint has no module {path!r} for {lname} (prefix {prefixes[group]!r}); "
                    f"its modules look like {sorted(available)[:2]}"
                )
            mapping[lname] = path
            continue
        parts = inner.split(".")
        scores = {p: _common_suffix(parts, s) for p, s in split.items()}
        best = max(scores.values(), default=0)
        winners = [p for p, s in scores.items() if s == best]
        if best < min(2, len(parts)):
            raise CrabzooError(f"no module of the official checkpoint matches {lname}")
        if len(winners) > 1:
            raise CrabzooError(
                f"{lname} matches several official modules ({winners[:3]}): pass prefixes, e.g. "
                f"{{'{group}': '{CRAB_PLUS_PREFIX}...'}}"
            )
        mapping[lname] = winners[0]
    if len(set(mapping.values())) != len(mapping):
        raise CrabzooError("two crabzoo modules map to the same official module: pass explicit prefixes")
    return mapping


def import_official(
    adapter: ILoRA,
    state: Mapping[str, Tensor] | str | Path,
    prefixes: Mapping[str, str] | None = None,
    strict: bool = True,
) -> dict[str, str]:
    """Load official ``lora_A`` / ``lora_B{i}`` / ``lora_route`` weights into an applied :class:`ILoRA`.

    Args:
        adapter: An applied I-LoRA with soft or top-k routing and a shared ``A``.
        state: The official tensors, or a checkpoint path (see :func:`load_official_state`).
        prefixes: Optional group -> official path prefix.
        strict: Raise when the checkpoint holds modules that were not imported.

    Returns:
        The mapping crabzoo layer -> official module path that was used.
    """
    if adapter.routing == "task" or adapter.independent_a:
        raise CrabzooError("the official I-LoRA has a router and one shared A: task routing / independent_a differ")
    if not isinstance(state, Mapping):
        state = load_official_state(state)
    heads = _official_modules(state)
    mapping = match_modules(adapter, list(heads), prefixes)
    unused = sorted(set(heads) - set(mapping.values()))
    if strict and unused:
        raise CrabzooError(
            f"{len(unused)} official modules have no crabzoo counterpart (e.g. {unused[:2]}); adapt the same "
            "groups/targets or pass strict=False"
        )
    with torch.no_grad():
        for lname, path in mapping.items():
            layer = adapter.layers[lname]
            if heads[path] != layer.n_heads:
                raise CrabzooError(f"{path} has {heads[path]} heads, the adapter has n_heads={layer.n_heads}")
            a = state[f"{path}.lora_A.weight"]
            route = state[f"{path}.lora_route.weight"]
            b = torch.cat([state[f"{path}.lora_B{i}.weight"] for i in range(layer.n_heads)], dim=1)
            pairs = (("lora_A", a, layer.lora_A), ("lora_B", b, layer.lora_B), ("lora_route", route, layer.lora_route))
            for name, src, dst in pairs:
                if tuple(src.shape) != tuple(dst.shape):
                    raise CrabzooError(
                        f"{path}: {name} has shape {tuple(src.shape)}, crabzoo expects {tuple(dst.shape)} "
                        f"(rank={layer.rank}, n_heads={layer.n_heads})"
                    )
                dst.copy_(src)
    return mapping


def export_official(adapter: ILoRA, prefixes: Mapping[str, str] | None = None) -> dict[str, Tensor]:
    """The adapter's weights in the official key layout.

    Args:
        adapter: An applied :class:`ILoRA` (soft or top-k routing, shared ``A``).
        prefixes: Group -> official path prefix (default: ``""`` for every group).
    """
    if adapter.routing == "task" or adapter.independent_a:
        raise CrabzooError("task routing / independent_a have no counterpart in the official I-LoRA layout")
    out: dict[str, Tensor] = {}
    for lname, layer in adapter.layers.items():
        group, _, inner = lname.partition(".")
        path = (prefixes or {}).get(group, "") + inner
        out[f"{path}.lora_A.weight"] = layer.lora_A.detach().clone()
        for i in range(layer.n_heads):
            out[f"{path}.lora_B{i}.weight"] = layer.head(i).detach().clone().contiguous()
        out[f"{path}.lora_route.weight"] = layer.lora_route.detach().clone()
    return out


def save_official(path: str | Path, adapter: ILoRA, prefixes: Mapping[str, str] | None = None) -> Path:
    """Write :func:`export_official` as an ``adapter_model.safetensors``-style file (atomically)."""
    import os
    import tempfile

    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    save_file({k: v.cpu().contiguous() for k, v in export_official(adapter, prefixes).items()}, tmp)
    os.replace(tmp, path)
    return path
