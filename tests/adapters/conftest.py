"""Shared fixtures: a tiny LLaMA built from a config (no download)."""

from __future__ import annotations

import pytest
import torch

# Tiny tensors: one thread avoids OpenMP spin-waits when the machine is shared.
torch.set_num_threads(1)

@pytest.fixture
def tiny_llama():
    """A 2-layer LlamaForCausalLM (hidden 64) in eval mode, with its initial state dict."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def fresh():
        m = LlamaForCausalLM(config).eval()
        m.load_state_dict(state)
        return m

    model.fresh = fresh
    return model
