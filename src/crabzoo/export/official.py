"""Which module path prefixes an exported I-LoRA file uses in the official Crab / Crab+ key layout.

crabzoo names an adapted layer ``<group>.<name inside the group>``; the official code names it by its path
inside the model the training script wrapped (see :mod:`crabzoo.adapters.interop`):

* Crab (a LLaMA / Qwen2 LLM wrapped by peft): ``base_model.model.model.layers.0.self_attn.q_proj``. The
  ``llm`` group of :class:`~crabzoo.backbones.hf_causal_lm.HFCausalLM` is the backbone, whose inner names start
  with ``model.`` (the ``*ForCausalLM``), so the prefix is ``base_model.``.
* Crab+ (the Qwen2.5-Omni thinker): ``thinker.base_model.model.`` then the thinker's own paths
  (``model.layers.*``, ``audio_tower.*``, ``visual.*``).

Groups the official code never adapted (e.g. a crabzoo encoder of a modular paradigm) keep their group name
as the prefix (``audio_encoder.<name>``), so the file still re-imports with the same prefixes.
"""

from __future__ import annotations

from typing import Any

from crabzoo.adapters.interop import CRAB_PLUS_PREFIX
from crabzoo.errors import CrabzooError

LAYOUTS = ("crab", "crab_plus")


def is_omni(model: Any) -> bool:
    """Whether the paradigm's backbone is the Qwen2.5-Omni thinker (the Crab+ model)."""
    from crabzoo.backbones.qwen_omni import QwenOmniThinker

    return isinstance(model.backbone, QwenOmniThinker)


def official_layout(model: Any, requested: str) -> str:
    """``crab`` or ``crab_plus``: ``auto`` picks Crab+ for the omni thinker and Crab otherwise."""
    if requested == "auto":
        return "crab_plus" if is_omni(model) else "crab"
    if requested not in LAYOUTS:
        raise CrabzooError(f"--official {requested!r}: choose auto, crab, crab_plus or none")
    return requested


def official_prefixes(model: Any, layout: str, groups: list[str]) -> dict[str, str]:
    """Group -> prefix of the official module paths (see the module docstring)."""
    omni = is_omni(model)
    prefixes: dict[str, str] = {}
    for group in groups:
        if omni:
            tower = {"llm": "", "audio_encoder": "audio_tower.", "visual_encoder": "visual."}.get(group, f"{group}.")
            base = CRAB_PLUS_PREFIX if layout == "crab_plus" else "base_model.model."
            prefixes[group] = base + tower
        elif group == "llm":
            prefixes[group] = "thinker.base_model." if layout == "crab_plus" else "base_model."
        else:
            prefixes[group] = f"{group}."
    return prefixes
