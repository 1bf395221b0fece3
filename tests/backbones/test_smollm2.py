"""SmolLM2-135M-Instruct, shipped as GGUF inside a wheel, through crabzoo's HFCausalLM backbone.

Behaviour, not shape: a factual chat answer, English far likelier than its shuffled tokens, the cache reused.
"""

from __future__ import annotations

import random

import pytest
import torch

from crabzoo import pretrained
from crabzoo.backbones.gguf import cached_gguf_dir, gguf_source
from crabzoo.backbones.hf_causal_lm import HFCausalLM
from crabzoo.errors import CrabzooError

NAME = "packaged:smollm2-135m-instruct"


@pytest.fixture(scope="module")
def smollm() -> HFCausalLM:
    return HFCausalLM(name_or_path=NAME)


def greedy(backbone: HFCausalLM, question: str, max_new_tokens: int = 16) -> str:
    text = backbone.render([{"role": "user", "content": question}], add_generation_prompt=True)
    ids = backbone.tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    new = backbone.generate(backbone.embed(ids), torch.ones_like(ids), max_new_tokens)
    return backbone.tokenizer.decode(new[0], skip_special_tokens=True)


def sentence_loss(backbone: HFCausalLM, ids: list[int]) -> float:
    """Mean next-token loss of ``ids`` (every position after the first supervised)."""
    input_ids = torch.tensor([ids])
    labels = input_ids.clone()
    labels[:, 0] = -100
    with torch.no_grad():
        loss, _ = backbone(backbone.embed(input_ids), torch.ones_like(input_ids), labels=labels)
    return float(loss)


def test_is_the_real_model(smollm):
    model = smollm.model
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.hidden_size == 576 and model.config.num_hidden_layers == 30
    # the shipped vocabulary (49,152) plus crabzoo's placeholder and wrapper tokens
    assert len(smollm.tokenizer) == 49152 + 9
    assert smollm.tokenizer.eos_token == "<|im_end|>"
    assert smollm.generation_prompt == "<|im_end|>\n<|im_start|>assistant\n"  # the file's own ChatML template


def test_answers_a_factual_question(smollm):
    assert greedy(smollm, "What is the capital of France?") == "The capital of France is Paris."


def test_english_is_far_likelier_than_its_shuffled_tokens(smollm):
    text = "Paris is the capital and largest city of France. It is known for the Eiffel Tower and its museums."
    ids = smollm.tokenizer(text, add_special_tokens=False).input_ids
    shuffled = ids[:]
    random.Random(0).shuffle(shuffled)
    english, noise = sentence_loss(smollm, ids), sentence_loss(smollm, shuffled)
    # measured: 2.25 vs 7.28 nats per token
    assert english < 3.0
    assert noise > english + 3.5


def test_conversion_is_cached_by_content(smollm):
    source = gguf_source(NAME, None)
    out = cached_gguf_dir(source, "smollm2-135m-instruct")
    weights = out / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert cached_gguf_dir(source, "smollm2-135m-instruct") == out
    assert weights.stat().st_mtime_ns == stamp  # not written again
    assert out.name.endswith(pretrained.sha256(source)[:16])


def test_bad_names_are_one_clear_error(tmp_path):
    with pytest.raises(CrabzooError, match="unknown packaged weight"):
        HFCausalLM(name_or_path="packaged:no-such-model")
    with pytest.raises(CrabzooError, match="not found"):
        HFCausalLM(name_or_path=str(tmp_path / "missing.gguf"))
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(CrabzooError, match="broken.gguf"):
        HFCausalLM(name_or_path=str(broken))
