"""The sharding plan of the real AVLLM paradigm: LLM decoder layers, BEATs and CLIP blocks, connectors, root."""

from __future__ import annotations

import functools

import pytest
import torch

pytestmark = pytest.mark.slow

TINY_LLAMA = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256}
TINY_BEATS = {"encoder_layers": 2, "embed_dim": 32, "encoder_embed_dim": 64, "encoder_ffn_embed_dim": 128,
              "encoder_attention_heads": 4, "conv_pos": 16, "conv_pos_groups": 4, "finetuned_model": False}
TINY_CLIP = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
             "image_size": 32, "patch_size": 16}


def test_avllm_plan(tmp_path):
    from crabzoo.adapters.ilora import ILoRA
    from crabzoo.backbones.hf_causal_lm import HFCausalLM
    from crabzoo.backbones.tokenizer import train_tokenizer
    from crabzoo.connectors import MLPConnector
    from crabzoo.distributed import sharding_plan
    from crabzoo.encoders.beats import BEATsEncoder
    from crabzoo.encoders.clip import HFClipEncoder
    from crabzoo.paradigms.base import AVLLM

    texts = ["the dog barks in the video", "a guitar plays while a man sings", "where is the sound coming from"] * 20
    train_tokenizer(texts, vocab_size=300).save_pretrained(str(tmp_path / "tok"))
    torch.manual_seed(0)
    model = AVLLM(
        HFCausalLM(config=TINY_LLAMA, tokenizer=str(tmp_path / "tok")),
        audio_encoder=BEATsEncoder(config=TINY_BEATS),
        visual_encoder=HFClipEncoder(config=TINY_CLIP),
        audio_connector=functools.partial(MLPConnector),
        visual_connector=functools.partial(MLPConnector),
        adapter=ILoRA(groups=("llm", "visual_encoder"), n_heads=2, rank=4),
    )
    plan = sharding_plan(model)
    kinds = [type(m).__name__ for _, m in plan]
    assert kinds.count("LlamaDecoderLayer") == 2
    assert kinds.count("BEATsLayer") == 2
    assert kinds.count("CLIPEncoderLayer") == 2
    assert kinds.count("MLPConnector") == 2
    assert plan[-1] == ("", model)
    # every adapted linear lives inside a unit (decoder layer or encoder block), none is left to the root
    units = [n for n, _ in plan if n]
    for name, _ in model.named_modules():
        if name.endswith(("q_proj", "v_proj")) and "lora" not in name:
            assert any(name.startswith(u + ".") for u in units), name
