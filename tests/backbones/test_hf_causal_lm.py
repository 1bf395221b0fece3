"""HFCausalLM specifics: dtype, gradient checkpointing, seeded init, user errors."""

from __future__ import annotations

import pytest
import torch
from backbones_helpers import TINY_TEXT, tiny_llama

from crabzoo.backbones.hf_causal_lm import HFCausalLM, resolve_dtype
from crabzoo.errors import CrabzooError


def test_resolve_dtype():
    assert resolve_dtype("bfloat16") is torch.bfloat16
    assert resolve_dtype("bf16") is torch.bfloat16
    assert resolve_dtype(None) is None and resolve_dtype("auto") is None
    with pytest.raises(CrabzooError, match="torch_dtype"):
        resolve_dtype("bfloat17")


def test_bf16_seeded_and_gradient_checkpointing(corpus_dir):
    a = tiny_llama(corpus_dir, torch_dtype="bfloat16", seed=3)
    b = tiny_llama(corpus_dir, torch_dtype="bfloat16", seed=3)
    c = tiny_llama(corpus_dir, torch_dtype="bfloat16", seed=4)
    assert all(p.dtype == torch.bfloat16 for p in a.parameters())
    wa, wb, wc = (m.model.get_input_embeddings().weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)

    model = tiny_llama(corpus_dir, gradient_checkpointing=True).train()
    assert model.model.is_activation_checkpointing
    ids = torch.tensor([[5, 6, 7, 8]])
    logits = model(model.embed(ids), torch.ones_like(ids))
    logits.float().sum().backward()
    assert model.model.get_input_embeddings().weight.grad is not None
    model.gradient_checkpointing(False)
    assert not model.model.is_activation_checkpointing


def test_user_errors(corpus_dir, tmp_path):
    with pytest.raises(CrabzooError, match="exactly one"):
        HFCausalLM()
    with pytest.raises(CrabzooError, match="model_type"):
        HFCausalLM(config=dict(TINY_TEXT), tokenizer_corpus=str(corpus_dir))
    with pytest.raises(CrabzooError, match="tokenizer"):
        HFCausalLM(config={"model_type": "llama", **TINY_TEXT})
    with pytest.raises(CrabzooError, match="cannot load"):
        HFCausalLM(name_or_path=str(tmp_path / "nothing"), tokenizer_corpus=str(corpus_dir))
