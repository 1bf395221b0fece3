from __future__ import annotations

import json

import pytest
import torch
from adapters_helpers import LLM_TARGETS
from safetensors.torch import load_file

from crabzoo.adapters import ILoRA, LoRA, load_adapter, save_adapter
from crabzoo.errors import CrabzooError


def randomise(adapter) -> None:
    torch.manual_seed(3)
    with torch.no_grad():
        for p in adapter.trainable_parameters():
            p.normal_(std=0.1)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ILoRA(n_heads=3, rank=4, alpha=8.0),
        lambda: ILoRA(targets=["q_proj", "v_proj"], n_heads=2, rank=2, routing="topk", top_k=1, independent_a=True),
        lambda: LoRA(targets=["q_proj", "v_proj"], rank=4, alpha=8.0),
    ],
    ids=["ilora", "ilora_topk_indepA", "lora"],
)
def test_adapter_only_checkpoint_reload_gives_identical_logits(tiny_llama, tmp_path, make):
    adapter = make()
    adapter.apply({"llm": tiny_llama}, LLM_TARGETS)
    randomise(adapter)
    ids = torch.randint(0, 128, (2, 9))
    want = tiny_llama(ids).logits
    extra = {"connector.proj.weight": torch.randn(4, 3)}
    save_adapter(tmp_path / "ckpt", adapter, extra)

    saved = load_file(str(tmp_path / "ckpt" / "adapter.safetensors"))
    assert all(".lora_" in k for k in saved) and set(saved) == set(adapter.adapter_state_dict())
    config = json.loads((tmp_path / "ckpt" / "adapter.json").read_text())
    assert config["class_path"].startswith("crabzoo.adapters.") and config["extra"] == ["connector.proj.weight"]
    assert not [p for p in (tmp_path / "ckpt").iterdir() if p.name.endswith(".tmp")]

    base = tiny_llama.fresh()
    reloaded, loaded_extra = load_adapter(tmp_path / "ckpt", base)
    assert type(reloaded) is type(adapter)
    assert torch.equal(base(ids).logits, want)
    assert torch.equal(loaded_extra["connector.proj.weight"], extra["connector.proj.weight"])


def test_lora_checkpoint_is_also_written_in_peft_format(tiny_llama, tmp_path):
    from peft import PeftModel

    adapter = LoRA(targets=["q_proj", "v_proj"], rank=4, alpha=8.0)
    adapter.apply({"llm": tiny_llama}, LLM_TARGETS)
    randomise(adapter)
    ids = torch.randint(0, 128, (2, 9))
    want = tiny_llama(ids).logits
    save_adapter(tmp_path, adapter)
    peft_dir = tmp_path / "peft" / "llm"
    assert json.loads((peft_dir / "adapter_config.json").read_text())["r"] == 4
    model = PeftModel.from_pretrained(tiny_llama.fresh(), peft_dir).eval()
    torch.testing.assert_close(model(input_ids=ids).logits, want, rtol=0, atol=1e-6)


def test_lora_merge_and_unmerge(tiny_llama):
    adapter = LoRA(rank=4, alpha=8.0, dropout=0.0)
    adapter.apply({"llm": tiny_llama}, LLM_TARGETS)
    randomise(adapter)
    ids = torch.randint(0, 128, (2, 9))
    want = tiny_llama(ids).logits
    base = tiny_llama.fresh()(ids).logits
    adapter.merge()
    torch.testing.assert_close(tiny_llama(ids).logits, want, rtol=1e-4, atol=1e-4)
    adapter.unmerge()
    torch.testing.assert_close(tiny_llama(ids).logits, want, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(want, base)


def test_lora_keeps_other_parameters_trainable_as_they_were(tiny_llama):
    tiny_llama.requires_grad_(False)
    tiny_llama.lm_head.weight.requires_grad_(True)
    adapter = LoRA(targets=["q_proj"], rank=2)
    adapter.apply({"llm": tiny_llama}, LLM_TARGETS)
    trainable = {n for n, p in tiny_llama.named_parameters() if p.requires_grad}
    assert "lm_head.weight" in trainable
    assert {n for n in trainable if "lora_" in n} == {n for n, _ in tiny_llama.named_parameters() if "lora_" in n}
    assert len(list(adapter.trainable_parameters())) == 4


def test_loading_into_a_different_adapter_shape_is_a_user_error(tiny_llama, tmp_path):
    adapter = ILoRA(n_heads=3, rank=4)
    adapter.apply({"llm": tiny_llama}, LLM_TARGETS)
    save_adapter(tmp_path, adapter)
    other = ILoRA(n_heads=2, rank=4)
    other.apply({"llm": tiny_llama.fresh()}, LLM_TARGETS)
    with pytest.raises(CrabzooError, match="shape"):
        other.load_adapter_state_dict(load_file(str(tmp_path / "adapter.safetensors")))
    with pytest.raises(CrabzooError, match="adapter.json is missing"):
        load_adapter(tmp_path / "nothing", tiny_llama.fresh())
