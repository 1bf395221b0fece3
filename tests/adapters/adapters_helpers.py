"""Helpers shared by the adapter tests: default LLaMA targets and the loop form of I-LoRA."""

from __future__ import annotations

import torch
from torch import nn

LLM_TARGETS = {"llm": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")}


def loop_ilora(layer, x: torch.Tensor) -> torch.Tensor:
    """The per-head loop as the official code computes it: N full-width outputs, weighted and summed."""
    _, gates = layer.gates(x)
    gates = gates.to(x.dtype)
    y = nn.functional.linear(x, layer.weight, layer.bias)
    r = layer.rank
    for i in range(layer.n_heads):
        a = layer.lora_A[i * r : (i + 1) * r] if layer.independent_a else layer.lora_A
        head_out = nn.functional.linear(nn.functional.linear(x, a), layer.head(i))
        y = y + gates[..., i : i + 1] * head_out * layer.scale
    return y
