"""Trainable-parameter count of I-LoRA on a model, without allocating it.

Per adapted linear ``W0 (d_out × d_in)``, I-LoRA with ``N`` heads and rank ``r`` trains a shared down-projection
``A`` (``r·d_in``), ``N`` up-projections ``B_i`` (``N·d_out·r``) and a router (``N·d_in``). A configuration is
built on PyTorch's ``meta`` device (shapes only, no memory), so the full Qwen2.5-Omni-7B thinker is counted in a
second: with ``N = 3``, ``r = 128`` on the LLM's seven projections, the audio encoder's q/k/v and the vision
encoder's gate/up/down it gives 870,480,512 (LLM 682,350,592; vision 124,846,720; audio 63,283,200), Crab+'s
870.5 M.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crabzoo.backbones.hf_causal_lm import PROJECTIONS
from crabzoo.backbones.qwen_omni import AUDIO_TARGETS, VISION_TARGETS

CONFIG_DIR = Path(__file__).parent / "configs"
"""Shipped model configurations (``qwen2_5_omni_7b_thinker.json``: the published Qwen2.5-Omni-7B thinker)."""

CRAB_PLUS_PLACEMENT: dict[str, tuple[str, ...]] = {
    "llm": PROJECTIONS,
    "audio_encoder": AUDIO_TARGETS,
    "visual_encoder": VISION_TARGETS,
}
"""Crab+'s I-LoRA placement inside the Qwen2.5-Omni thinker."""


def ilora_linear_parameters(d_in: int, d_out: int, n_heads: int, rank: int) -> int:
    """Trainable parameters of one I-LoRA linear: ``r·d_in + N·d_out·r + N·d_in``."""
    return rank * d_in + n_heads * d_out * rank + n_heads * d_in


def build_meta_model(config: str | Path | Mapping[str, Any]) -> nn.Module:
    """Instantiate a ``transformers`` model from a config (dict or JSON path) on the meta device.

    ``model_type: qwen2_5_omni_thinker`` builds the Omni thinker; other types build ``AutoModelForCausalLM``.
    """
    if not isinstance(config, Mapping):
        config = json.loads(Path(config).read_text())
    values = dict(config)
    model_type = values.pop("model_type")
    with torch.device("meta"):
        if model_type == "qwen2_5_omni_thinker":
            from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

            return Qwen2_5OmniThinkerForConditionalGeneration(Qwen2_5OmniThinkerConfig(**values))
        from transformers import AutoConfig, AutoModelForCausalLM

        return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **values))


def module_groups_of(model: nn.Module) -> dict[str, nn.Module]:
    """Module groups of a backbone (its ``module_groups()``), an Omni thinker (three towers) or a plain LM."""
    if hasattr(model, "module_groups"):
        return dict(model.module_groups())
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "audio_tower") and hasattr(inner, "visual"):
        return {"llm": inner.language_model, "audio_encoder": inner.audio_tower, "visual_encoder": inner.visual}
    return {"llm": model}


def count_ilora_parameters(
    model_or_config: nn.Module | str | Path | Mapping[str, Any],
    groups_and_suffixes: Mapping[str, Sequence[str]] | None = None,
    n_heads: int = 3,
    rank: int = 128,
) -> dict[str, int]:
    """I-LoRA trainable parameters per module group, and their ``total``.

    Args:
        model_or_config: A model/backbone, or a config (dict or JSON path) built on the meta device.
        groups_and_suffixes: Group -> linear-name suffixes to adapt (default :data:`CRAB_PLUS_PLACEMENT`).
        n_heads: Number of up-projection heads ``N``.
        rank: Rank ``r``.

    Returns:
        ``{group: count, ..., "total": sum}`` and, per group, ``"<group>/linears"``: how many linears matched.
    """
    model = model_or_config if isinstance(model_or_config, nn.Module) else build_meta_model(model_or_config)
    placement = dict(groups_and_suffixes or CRAB_PLUS_PLACEMENT)
    groups = module_groups_of(model)
    counts: dict[str, int] = {}
    for group, suffixes in placement.items():
        if group not in groups:
            raise KeyError(f"module group {group!r} not in the model (groups: {sorted(groups)})")
        total, n_linears = 0, 0
        for name, module in groups[group].named_modules():
            if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in suffixes:
                total += ilora_linear_parameters(module.in_features, module.out_features, n_heads, rank)
                n_linears += 1
        counts[group] = total
        counts[f"{group}/linears"] = n_linears
    counts["total"] = sum(counts[g] for g in placement)
    return counts
