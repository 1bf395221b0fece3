"""A Q-Former layer computes what a transformers BERT layer with cross-attention computes (tiny config)."""

from __future__ import annotations

import pytest
import torch

from crabzoo.connectors.qformer import _CRAB_LAYER_KEYS, QFormerLayer

HF_FFN = {"intermediate.dense": "ffn.0", "output.dense": "ffn.2", "output.LayerNorm": "ffn_norm"}


@pytest.mark.slow
def test_layer_matches_transformers_bert_layer() -> None:
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertLayer

    config = BertConfig(
        hidden_size=32,
        num_attention_heads=4,
        intermediate_size=64,
        add_cross_attention=True,
        is_decoder=True,  # transformers only builds cross-attention in decoder layers
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
    )
    config._attn_implementation = "eager"  # no causal mask is applied without an attention mask
    torch.manual_seed(0)
    reference = BertLayer(config).eval()
    ours = QFormerLayer(32, 32, num_heads=4, ffn_dim=64, dropout=0.0).eval()
    mapping = {**{k: v for k, v in _CRAB_LAYER_KEYS.items() if "query" not in k.split(".")[0]}, **HF_FFN}
    state = {}
    for key, value in reference.state_dict().items():
        module, param = key.rsplit(".", 1)
        state[f"{mapping[module]}.{param}"] = value
    ours.load_state_dict(state, strict=True)
    queries, memory = torch.randn(3, 5, 32), torch.randn(3, 7, 32)
    with torch.no_grad():
        expected = reference(queries, encoder_hidden_states=memory)
        expected = expected[0] if isinstance(expected, tuple) else expected
        torch.testing.assert_close(ours(queries, memory), expected, atol=1e-5, rtol=1e-5)
