"""A stage starts from an earlier stage's weights (Crab's stage 1 -> 2 hand-over) through init_checkpoint."""

import functools

import pytest
import torch
from safetensors.torch import save_file

from crabzoo.errors import CrabzooError


def build(avsynth_root, **kwargs):
    from crabzoo.backbones.hf_causal_lm import HFCausalLM
    from crabzoo.connectors import MLPConnector
    from crabzoo.encoders.beats import TINY, BEATsEncoder
    from crabzoo.paradigms.base import AVLLM

    torch.manual_seed(kwargs.pop("seed", 0))
    backbone = HFCausalLM(
        config={"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                "num_attention_heads": 2, "num_key_value_heads": 1},
        tokenizer="avsynth", tokenizer_corpus=str(avsynth_root / "AVUIE_2"), tokenizer_vocab_size=300,
    )
    return AVLLM(backbone, audio_encoder=BEATsEncoder(config=TINY), audio_connector=functools.partial(MLPConnector),
                 **kwargs)


def test_stage_two_starts_from_stage_one_connectors(avsynth_root, tmp_path):
    from crabzoo.adapters import ILoRA

    stage1 = build(avsynth_root, seed=1)
    weights = {k: v.contiguous() for k, v in stage1.state_dict().items() if k.startswith("audio_connector.")}
    save_file(weights, str(tmp_path / "weights.safetensors"))
    stage2 = build(avsynth_root, seed=2, adapter=ILoRA(rank=2, n_heads=2), init_checkpoint=str(tmp_path / "weights.safetensors"))
    for key, value in weights.items():
        assert torch.equal(stage2.state_dict()[key], value), key
    fresh = build(avsynth_root, seed=2)
    assert not torch.equal(fresh.state_dict()["audio_connector.proj.0.weight"], weights["audio_connector.proj.0.weight"])


def test_init_checkpoint_with_foreign_weights_is_refused(avsynth_root, tmp_path):
    save_file({"not_a_module.weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CrabzooError, match="has weights this model lacks"):
        build(avsynth_root, init_checkpoint=str(tmp_path / "other.safetensors"))
