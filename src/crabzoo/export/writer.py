"""Write a trained paradigm as an export folder (layout in :mod:`crabzoo.export.layout`).

LoRA is merged into the weights it adapts (``W0 + (alpha/r) B A``) and the adapted layers are written back
under their plain names, so ``llm/`` is an ordinary transformers model. I-LoRA cannot be merged (its update
depends on each token's router gates): ``llm/`` holds the base weights and the adapter goes beside them, in
crabzoo's adapter format and in the official Crab / Crab+ key layout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from crabzoo.errors import CrabzooError
from crabzoo.export import layout as L

ENCODERS = ("audio_encoder", "visual_encoder")
ENCODER_MODES = ("auto", "copy", "reference")


@dataclass
class ExportSummary:
    """What :func:`export_model` wrote.

    Attributes:
        out: The export folder.
        adapter: ``none``, ``lora-merged`` or ``ilora``.
        encoders: Encoder name -> ``copy`` or ``reference``.
        official: Layout of the official-format file (``crab`` / ``crab_plus``), or ``""`` when none was written.
        notes: Lines for the user (e.g. why no official file was written).
    """

    out: Path
    adapter: str
    encoders: dict[str, str] = field(default_factory=dict)
    official: str = ""
    notes: list[str] = field(default_factory=list)


def hf_model_attr(backbone: Any) -> str:
    """Name of the backbone attribute holding its transformers model (``model``, or ``thinker`` for omni)."""
    from transformers import PreTrainedModel

    for attr in ("model", "thinker"):
        if isinstance(getattr(backbone, attr, None), PreTrainedModel):
            return attr
    raise CrabzooError(
        f"{type(backbone).__name__} holds no transformers model (.model / .thinker): crabzoo export writes "
        "transformers backbones only"
    )


def adapter_kind(model: Any) -> str:
    """``none``, ``lora`` or ``ilora`` for the paradigm's adapter."""
    from crabzoo.adapters import ILoRA, LoRA

    adapter = model.adapter
    if adapter is None:
        return "none"
    if isinstance(adapter, LoRA):
        return "lora"
    if isinstance(adapter, ILoRA):
        return "ilora"
    raise CrabzooError(f"crabzoo export knows LoRA and I-LoRA adapters, not {type(adapter).__name__}")


def plain_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A state dict without adapter parameters, adapted layers under their plain names.

    peft's LoRA layer keeps the base linear as ``<name>.base_layer`` (``<name>.base_layer.weight`` becomes
    ``<name>.weight``); every key with a ``lora_*`` component (LoRA, I-LoRA) is left out.
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if any(p.startswith("lora_") for p in parts):
            continue
        out[".".join(p for p in parts if p != "base_layer")] = value
    return out


def encoder_modes(model: Any, requested: str, merged_groups: set[str]) -> dict[str, str]:
    """``copy`` or ``reference`` per encoder of the paradigm.

    ``auto`` references an encoder when the checkpoint itself left all of its weights out (``save_frozen:
    false``: it rebuilds from its own pretrained files) and copies it otherwise.

    Raises:
        CrabzooError: ``reference`` for an encoder whose weights trained or have LoRA merged into them.
    """
    if requested not in ENCODER_MODES:
        raise CrabzooError(f"--encoders {requested!r}: choose one of {list(ENCODER_MODES)}")
    report = getattr(model, "load_report", None)
    missing = set(report.missing_frozen) if report is not None else set()
    modes: dict[str, str] = {}
    for name in ENCODERS:
        encoder = getattr(model, name, None)
        if encoder is None:
            continue
        keys = {f"{name}.{k}" for k in plain_state(encoder.state_dict())}
        changed = name in merged_groups or name in getattr(model, "train_groups", ())
        if requested == "reference" and changed:
            raise CrabzooError(
                f"--encoders reference: the {name} weights were trained (or have LoRA merged into them), so its "
                "configuration alone does not rebuild them; use --encoders copy"
            )
        if requested == "auto":
            modes[name] = "reference" if keys and keys <= missing and not changed else "copy"
        else:
            modes[name] = requested
    return modes


def _save(path: Path, tensors: dict[str, Tensor]) -> None:
    """safetensors file; a tensor sharing memory with an earlier one (a weight two layers share) is copied."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    seen: set[int] = set()
    data: dict[str, Tensor] = {}
    for key, value in tensors.items():
        value = value.detach().cpu().contiguous()
        ptr = value.untyped_storage().data_ptr()
        data[key] = value.clone() if ptr in seen else value
        seen.add(ptr)
    save_file(data, str(path), metadata={"format": "pt"})


def export_model(
    model: Any,
    out: str | Path,
    tree: dict[str, Any],
    encoders: str = "auto",
    official: str = "auto",
    source: str = "",
) -> ExportSummary:
    """Write ``model`` (a trained paradigm) as an export folder, atomically.

    LoRA is merged into ``model`` in place (its forward does not change; use a fresh model for anything else).

    Args:
        model: The paradigm, e.g. from :func:`crabzoo.inference.loading.load_trained`.
        out: A new or empty directory.
        tree: The model's configuration ``{"class_path", "init_args"}`` (see :mod:`crabzoo.export.config`).
        encoders: ``auto``, ``copy`` (write the encoder weights) or ``reference`` (their configuration only).
        official: Layout of the official I-LoRA file: ``auto``, ``crab``, ``crab_plus`` or ``none``.
        source: The checkpoint (recorded in the manifest).

    Raises:
        CrabzooError: ``out`` not empty, a backbone or adapter export does not know, or an official layout
            requested for I-LoRA settings the official layer lacks (task routing, independent A, top-k).
    """
    from crabzoo.adapters.interop import export_official
    from crabzoo.adapters.io import save_adapter
    from crabzoo.backbones.hf_causal_lm import atomic_save_dir
    from crabzoo.export.config import exported_tree
    from crabzoo.export.official import official_layout, official_prefixes

    out = L.check_out_dir(out)
    attr = hf_model_attr(model.backbone)
    kind = adapter_kind(model)
    merged_groups: set[str] = set()
    if kind == "lora":
        model.adapter.merge()
        merged_groups = set(model.adapter.modules)
        kind = "lora-merged"
    modes = encoder_modes(model, encoders, merged_groups)
    summary = ExportSummary(out=out, adapter=kind, encoders=modes)

    state = plain_state(model.state_dict())
    llm_prefix = f"backbone.{attr}."
    llm_state = {k[len(llm_prefix) :]: v for k, v in state.items() if k.startswith(llm_prefix)}
    stray = sorted(k for k in state if k.startswith("backbone.") and not k.startswith(llm_prefix))
    if stray:
        raise CrabzooError(f"the backbone holds weights outside its transformers model ({stray[:3]}); export cannot place them")
    encoder_states = {
        name: {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(f"{name}.")} for name in modes
    }
    connectors = {
        k: v for k, v in state.items() if not k.startswith("backbone.") and k.split(".", 1)[0] not in modes
    }

    layout = "" if official == "none" or kind != "ilora" else official_layout(model, official)
    if layout:
        adapter = model.adapter
        unsupported = adapter.routing != "soft" or adapter.independent_a
        if unsupported and official != "auto":
            raise CrabzooError(
                f"--official {official}: the official I-LoRA layer has dense soft routing and one shared A; this "
                f"adapter has routing={adapter.routing!r}, independent_a={adapter.independent_a}; use --official none"
            )
        if unsupported:
            summary.notes.append(
                f"no official-format file: routing={adapter.routing!r}, independent_a={adapter.independent_a} have no "
                "counterpart in the official I-LoRA layer (soft routing, one shared A)"
            )
            layout = ""
    summary.official = layout

    manifest: dict[str, Any] = {
        "format": L.FORMAT,
        "source": source,
        "paradigm": f"{type(model).__module__}.{type(model).__qualname__}",
        "adapter": kind,
        "llm": {"dir": L.LLM_DIR, "class": type(getattr(model.backbone, attr)).__name__},
        "connectors": L.CONNECTORS if connectors else None,
        "encoders": {
            name: {"mode": mode, "file": f"{L.ENCODERS_DIR}/{name}.safetensors" if mode == "copy" else None}
            for name, mode in modes.items()
        },
        "adapter_dir": L.ADAPTER_DIR if kind == "ilora" else None,
        "official": None,
        "model": exported_tree(tree, model, kind),
    }

    def write(tmp: Path) -> None:
        from transformers.utils import logging as hf_logging

        hf = getattr(model.backbone, attr)
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # one file per component: a shard progress bar says nothing here
        try:
            hf.save_pretrained(str(tmp / L.LLM_DIR), state_dict=llm_state)
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        model.backbone.tokenizer.save_pretrained(str(tmp / L.LLM_DIR))
        if connectors:
            _save(tmp / L.CONNECTORS, connectors)
        for name, mode in modes.items():
            if mode == "copy":
                _save(tmp / L.ENCODERS_DIR / f"{name}.safetensors", encoder_states[name])
        if kind == "ilora":
            save_adapter(tmp / L.ADAPTER_DIR, model.adapter)
        if layout:
            adapter = model.adapter
            prefixes = official_prefixes(model, layout, list(adapter.groups))
            _save(tmp / L.OFFICIAL_DIR / L.OFFICIAL_WEIGHTS, export_official(adapter, prefixes))
            info = {
                "layout": layout,
                "prefixes": prefixes,
                "n_heads": adapter.n_heads,
                "rank": adapter.rank,
                "alpha": adapter.alpha,
                "dropout": adapter.dropout,
                "targets": {g: list(v) for g, v in adapter.resolved_targets.items()},
            }
            (tmp / L.OFFICIAL_DIR / L.OFFICIAL_CONFIG).write_text(json.dumps(info, indent=2) + "\n")
            manifest["official"] = {"dir": L.OFFICIAL_DIR, "layout": layout, "prefixes": prefixes}
        (tmp / L.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")

    atomic_save_dir(out, write)
    return summary
