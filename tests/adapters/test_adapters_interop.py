"""Round trip with checkpoints written in the key layout of the official Crab / Crab+ code."""

from __future__ import annotations

import pytest
import torch
from adapters_helpers import LLM_TARGETS
from safetensors.torch import save_file
from torch import nn

from crabzoo.adapters import ILoRA
from crabzoo.adapters.interop import (
    CRAB_PLUS_PREFIX,
    CRAB_PREFIX,
    export_official,
    import_official,
    load_official_state,
    save_official,
)
from crabzoo.errors import CrabzooError

N, R = 3, 4


def official_state(model: nn.Module, prefix: str, suffixes) -> dict[str, torch.Tensor]:
    """Random weights under the official names: <prefix><path>.lora_A.weight, .lora_B{i}.weight, .lora_route.weight."""
    g = torch.Generator().manual_seed(5)
    state = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in suffixes:
            path = prefix + name
            state[f"{path}.lora_route.weight"] = torch.randn(N, m.in_features, generator=g)
            state[f"{path}.lora_A.weight"] = torch.randn(R, m.in_features, generator=g)
            for i in range(N):
                state[f"{path}.lora_B{i}.weight"] = torch.randn(m.out_features, R, generator=g) * 0.05
    return state


def official_forward(base: nn.Linear, state, path: str, x: torch.Tensor, scale: float) -> torch.Tensor:
    """The official layer's maths, written from the key layout: W0 x + b + sum_i g_i B_i A x * scale."""
    g = torch.softmax(x @ state[f"{path}.lora_route.weight"].t(), dim=-1)
    h = x @ state[f"{path}.lora_A.weight"].t()
    y = base(x)
    for i in range(N):
        y = y + g[..., i : i + 1] * (h @ state[f"{path}.lora_B{i}.weight"].t()) * scale
    return y


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_crab_checkpoint_imports_computes_the_official_function_and_exports_back(tiny_llama, tmp_path, fmt):
    suffixes = LLM_TARGETS["llm"]
    state = official_state(tiny_llama, CRAB_PREFIX, suffixes)
    state["base_model.model.model.embed_tokens.weight"] = torch.zeros(1)  # non-lora keys are ignored
    file = tmp_path / f"adapter_model.{fmt}"
    if fmt == "safetensors":
        save_file(state, str(file))
    else:
        torch.save(state, file)
    q_base = tiny_llama.fresh().model.layers[1].self_attn.q_proj

    adapter = ILoRA(n_heads=N, rank=R, alpha=16.0, dropout=0.0)
    adapter.apply({"llm": tiny_llama}, LLM_TARGETS)
    mapping = import_official(adapter, tmp_path)  # directory: finds adapter_model.*
    assert mapping["llm.model.layers.1.self_attn.q_proj"] == "base_model.model.model.layers.1.self_attn.q_proj"
    assert len(mapping) == 14

    x = torch.randn(2, 5, 64)
    layer = tiny_llama.model.layers[1].self_attn.q_proj
    want = official_forward(q_base, state, "base_model.model.model.layers.1.self_attn.q_proj", x, 16.0 / R)
    torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-5)

    exported = export_official(adapter, {"llm": CRAB_PREFIX})
    lora_keys = {k for k in state if ".lora_" in k}
    assert set(exported) == lora_keys
    for k in lora_keys:
        assert torch.equal(exported[k], state[k]), k


def test_crab_plus_layout_with_colliding_groups_needs_prefixes(tiny_llama, tmp_path):
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj, self.k_proj, self.v_proj = nn.Linear(32, 32), nn.Linear(32, 32), nn.Linear(32, 32)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.self_attn = Attn()

    class AudioTower(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([Block(), Block()])

    class Thinker(nn.Module):
        def __init__(self, llm):
            super().__init__()
            self.model, self.audio_tower = llm.model, AudioTower()

    thinker = Thinker(tiny_llama)
    root = nn.Module()
    root.thinker = thinker
    state = official_state(thinker, CRAB_PLUS_PREFIX, LLM_TARGETS["llm"])
    save_official_file = tmp_path / "official.safetensors"
    save_file(state, str(save_official_file))
    groups = {"llm": thinker.model, "audio_encoder": thinker.audio_tower}
    targets = {"llm": LLM_TARGETS["llm"], "audio_encoder": ("q_proj", "k_proj", "v_proj")}

    adapter = ILoRA(groups=("llm", "audio_encoder"), targets=targets, n_heads=N, rank=R)
    adapter.apply(groups, {})
    with pytest.raises(CrabzooError, match="several official modules"):
        import_official(adapter, save_official_file)
    prefixes = {"llm": CRAB_PLUS_PREFIX + "model.", "audio_encoder": CRAB_PLUS_PREFIX + "audio_tower."}
    mapping = import_official(adapter, load_official_state(save_official_file), prefixes)
    want = "thinker.base_model.model.audio_tower.layers.0.self_attn.q_proj"
    assert mapping["audio_encoder.layers.0.self_attn.q_proj"] == want
    out = save_official(tmp_path / "back.safetensors", adapter, prefixes)
    back = load_official_state(out)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)


def test_shape_or_head_mismatch_is_a_user_error(tiny_llama):
    state = official_state(tiny_llama, CRAB_PREFIX, LLM_TARGETS["llm"])
    adapter = ILoRA(n_heads=2, rank=R)
    adapter.apply({"llm": tiny_llama}, LLM_TARGETS)
    with pytest.raises(CrabzooError, match="3 heads"):
        import_official(adapter, state)
    other = ILoRA(n_heads=N, rank=R, targets=["q_proj"])
    other.apply({"llm": tiny_llama.fresh()}, LLM_TARGETS)
    with pytest.raises(CrabzooError, match="no crabzoo counterpart"):
        import_official(other, state)
    assert len(import_official(other, state, strict=False)) == 2
