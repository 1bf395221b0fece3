from __future__ import annotations

import pytest
import torch
from torch import nn

from crabzoo.adapters import ILoRA, ILoRALinear
from crabzoo.adapters.routing import cv_squared_loss, switch_loss, topk_gates
from crabzoo.errors import CrabzooError

from adapters_helpers import LLM_TARGETS, loop_ilora

MODES = {
    "soft": {},
    "topk": {"routing": "topk", "top_k": 2},
    "task": {"routing": "task", "n_tasks": 3},
    "task_top1": {"routing": "task", "n_tasks": 3, "top_k": 1},
    "independent_a": {"independent_a": True},
}


def make_layer(dtype=torch.float64, d_in=16, d_out=24, **kw) -> ILoRALinear:
    torch.manual_seed(1)
    layer = ILoRALinear(nn.Linear(d_in, d_out).to(dtype), n_heads=3, rank=4, alpha=8.0, **kw)
    with torch.no_grad():
        layer.lora_B.normal_()
    layer.task_ids = torch.tensor([0, 2])
    return layer


@pytest.mark.parametrize("mode", list(MODES))
def test_fused_equals_loop_in_float64(mode):
    layer = make_layer(**MODES[mode])
    x = torch.randn(2, 5, 16, dtype=torch.float64, requires_grad=True)
    y, ref = layer(x), loop_ilora(layer, x)
    assert ((y - ref).norm() / ref.norm()).item() <= 1e-6
    params = [x, *layer.lora_parameters().values()]
    dy = torch.randn_like(y)
    for got, want in zip(torch.autograd.grad(y, params, dy), torch.autograd.grad(ref, params, dy)):
        assert (got - want).norm().item() <= 1e-6 * want.norm().item() + 1e-12  # top-1 task gates: exact zero


@pytest.mark.parametrize("mode", ["soft", "independent_a"])
def test_fused_backward_passes_gradcheck(mode):
    layer = make_layer(**MODES[mode])
    x = torch.randn(2, 3, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


def test_single_head_equals_peft_lora():
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(2)
    base = nn.Sequential(nn.Linear(16, 24)).double()
    peft_model = nn.Sequential(nn.Linear(16, 24)).double()
    peft_model.load_state_dict(base.state_dict())
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=8, target_modules=["0"]), peft_model)
    lora = peft_model[0]
    with torch.no_grad():
        lora.lora_B["default"].weight.normal_()
    layer = ILoRALinear(base[0], n_heads=1, rank=4, alpha=8.0)
    with torch.no_grad():
        layer.lora_A.copy_(lora.lora_A["default"].weight)
        layer.lora_B.copy_(lora.lora_B["default"].weight)
    x = torch.randn(3, 7, 16, dtype=torch.float64)
    torch.testing.assert_close(layer(x), peft_model(x), rtol=1e-12, atol=1e-12)


def test_zero_initialised_heads_give_the_base_output():
    base = nn.Linear(16, 24)
    layer = ILoRALinear(base, n_heads=3, rank=4, alpha=8.0, dropout=0.1).eval()
    assert torch.count_nonzero(layer.lora_B) == 0
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(layer(x), base(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", list(MODES))
def test_gradients_reach_every_adapter_parameter(mode):
    layer = make_layer(**MODES[mode])
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    layer(x).pow(2).sum().backward()
    for name, p in layer.lora_parameters().items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert layer.weight.grad is None and not layer.weight.requires_grad


def test_topk_keeps_the_largest_gates_and_renormalises():
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    gates = topk_gates(probs, 2)
    torch.testing.assert_close(gates, torch.tensor([[0.0, 0.6 / 0.9, 0.3 / 0.9], [0.5 / 0.8, 0.0, 0.3 / 0.8]]))
    top1 = topk_gates(probs, 1)
    torch.testing.assert_close(top1, torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))


def test_topk_layer_zeroes_the_smallest_gates():
    layer = make_layer(routing="topk", top_k=1)
    x = torch.randn(4, 16, dtype=torch.float64)
    probs, gates = layer.gates(x)
    assert torch.equal(gates.argmax(-1), probs.argmax(-1))
    assert torch.equal((gates > 0).sum(-1), torch.ones(4, dtype=torch.long))


def test_task_routing_broadcasts_one_gate_per_sample():
    layer = make_layer(routing="task", n_tasks=3)
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    _, gates = layer.gates(x)
    want = torch.softmax(layer.lora_task.detach()[torch.tensor([0, 2])], -1)
    torch.testing.assert_close(gates, want[:, None, :].expand(2, 5, 3))


def test_task_routing_without_ids_is_a_user_error():
    layer = make_layer(routing="task", n_tasks=3)
    layer.task_ids = None
    with pytest.raises(CrabzooError, match="set_task_ids"):
        layer(torch.randn(2, 5, 16, dtype=torch.float64))


def test_balance_losses_by_hand():
    balanced = torch.full((4, 2), 0.5)
    assert cv_squared_loss(balanced).item() == pytest.approx(0.0)
    skewed = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # importance (2, 0): var 2, mean 1
    assert cv_squared_loss(skewed).item() == pytest.approx(2.0)
    assert switch_loss(balanced, torch.tensor([[0.6, 0.4], [0.4, 0.6]] * 2)).item() == pytest.approx(1.0)
    assert switch_loss(skewed, skewed).item() == pytest.approx(2.0)  # N * f_0 * P_0 = 2 * 1 * 1


@pytest.mark.parametrize("kind", ["cv2", "switch"])
def test_aux_loss_is_differentiable_and_collected_by_the_adapter(tiny_llama, kind):
    adapter = ILoRA(n_heads=3, rank=4, balance_loss=kind, balance_weight=0.5, dropout=0.0)
    adapter.apply({"llm": tiny_llama}, LLM_TARGETS)
    tiny_llama.train()
    assert adapter.aux_loss() is None
    tiny_llama(torch.randint(0, 128, (2, 6)))
    loss = adapter.aux_loss()
    assert loss is not None and loss.requires_grad and loss.item() > 0
    loss.backward()
    routers = [layer.lora_route.grad for layer in adapter.layers.values()]
    assert all(g is not None for g in routers) and sum(g.abs().sum() for g in routers) > 0
    assert adapter.aux_loss() is None  # collected once


def test_no_aux_loss_without_balance_or_in_eval(tiny_llama):
    adapter = ILoRA(n_heads=3, rank=4, balance_loss="cv2", balance_weight=1.0)
    adapter.apply({"llm": tiny_llama}, LLM_TARGETS)
    tiny_llama.eval()
    tiny_llama(torch.randint(0, 128, (2, 6)))
    assert adapter.aux_loss() is None


def test_apply_places_by_suffix_and_freezes_base(tiny_llama):
    adapter = ILoRA(targets=["q_proj", "down_proj"], n_heads=3, rank=4)
    names = adapter.apply({"llm": tiny_llama}, LLM_TARGETS)
    assert names == [
        "llm.model.layers.0.self_attn.q_proj",
        "llm.model.layers.0.mlp.down_proj",
        "llm.model.layers.1.self_attn.q_proj",
        "llm.model.layers.1.mlp.down_proj",
    ]
    q = tiny_llama.model.layers[0].self_attn.q_proj
    assert isinstance(q, ILoRALinear) and not q.weight.requires_grad
    assert "model.layers.0.self_attn.q_proj.weight" in tiny_llama.state_dict()  # base keys unchanged
    n = sum(p.numel() for p in adapter.trainable_parameters())
    # q: A 4x64 + B 64x12 + route 3x64; down: A 4x96 + B 64x12 + route 3x96; two layers
    assert n == 2 * ((4 * 64 + 64 * 12 + 3 * 64) + (4 * 96 + 64 * 12 + 3 * 96))


def test_default_targets_cover_all_projections(tiny_llama):
    adapter = ILoRA(n_heads=2, rank=2)
    assert len(adapter.apply({"llm": tiny_llama}, LLM_TARGETS)) == 14
    assert adapter.config()["init_args"]["targets"] == {"llm": list(LLM_TARGETS["llm"])}


def test_placement_errors_name_the_group_and_suffix(tiny_llama):
    with pytest.raises(CrabzooError, match=r"'audio_encoder'.*available groups: \['llm'\]"):
        ILoRA(groups=("audio_encoder",), targets=["q_proj"]).apply({"llm": tiny_llama}, LLM_TARGETS)
    with pytest.raises(CrabzooError, match=r"'qkv'.*'llm'.*q_proj"):
        ILoRA(targets=["q_proj", "qkv"]).apply({"llm": tiny_llama}, LLM_TARGETS)
    with pytest.raises(CrabzooError, match="already applied"):
        adapter = ILoRA(targets=["q_proj"])
        adapter.apply({"llm": tiny_llama}, LLM_TARGETS)
        adapter.apply({"llm": tiny_llama}, LLM_TARGETS)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"routing": "dense"}, "unknown I-LoRA routing"),
        ({"routing": "topk"}, "needs top_k"),
        ({"routing": "topk", "top_k": 4}, "top_k must be"),
        ({"routing": "task"}, "needs n_tasks"),
        ({"balance_loss": "entropy"}, "unknown balance_loss"),
        ({"n_heads": 0}, "n_heads >= 1"),
    ],
)
def test_bad_switches_are_user_errors(kwargs, message):
    with pytest.raises(CrabzooError, match=message):
        ILoRA(**kwargs)


def test_merge_is_refused_with_an_explanation(tiny_llama):
    adapter = ILoRA(targets=["q_proj"])
    adapter.apply({"llm": tiny_llama}, LLM_TARGETS)
    with pytest.raises(CrabzooError, match="router gates"):
        adapter.merge()


def test_task_ids_reach_every_layer(tiny_llama):
    adapter = ILoRA(n_heads=3, rank=4, routing="task", n_tasks=2)
    adapter.apply({"llm": tiny_llama}, LLM_TARGETS)
    ids = torch.randint(0, 128, (2, 6))
    adapter.set_task_ids(torch.tensor([0, 1]))
    for layer in adapter.layers.values():
        with torch.no_grad():
            layer.lora_B.normal_(std=0.2)
    a = tiny_llama(ids).logits
    adapter.set_task_ids(torch.tensor([1, 1]))
    b = tiny_llama(ids).logits
    assert torch.allclose(a[1], b[1]) and not torch.allclose(a[0], b[0])


def test_bf16_autocast_and_bf16_weights_run():
    layer = make_layer(dtype=torch.float32)
    x = torch.randn(2, 5, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert layer.lora_A.grad.dtype == torch.float32 and x.grad is not None
    low = make_layer(dtype=torch.bfloat16)
    x16 = torch.randn(2, 5, 16, dtype=torch.bfloat16)
    out = low(x16)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, loop_ilora(low, x16), rtol=0.05, atol=0.1)


def saved_bytes(fn, weights) -> int:
    """Bytes of activations autograd keeps for backward (weights, their views and repeated storages excluded)."""
    weight_storages = {w.untyped_storage().data_ptr() for w in weights}
    seen, total = set(), 0

    def pack(t):
        nonlocal total
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key[0] not in weight_storages and key not in seen:
            seen.add(key)
            total += key[1]
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def test_fused_saves_far_less_than_the_loop_for_backward():
    layer = ILoRALinear(nn.Linear(64, 512), n_heads=3, rank=4, alpha=8.0)
    x = torch.randn(256, 64, requires_grad=True)
    weights = list(layer.parameters())
    fused = saved_bytes(lambda: layer(x), weights)
    loop = saved_bytes(lambda: loop_ilora(layer, x), weights)
    assert fused <= loop / 10
    # exactly x (256x64), A x (256x4) and the gates (256x3, the router softmax output), fp32
    assert fused == 4 * 256 * (64 + 4 + 3)
    # the loop keeps a full-width (256x512) head output per head
    assert loop >= 3 * 4 * 256 * 512


def test_a_single_string_target_is_one_suffix(tiny_llama):
    adapter = ILoRA(targets="q_proj", n_heads=2, rank=2)
    assert adapter.apply({"llm": tiny_llama}, LLM_TARGETS) == [
        "llm.model.layers.0.self_attn.q_proj",
        "llm.model.layers.1.self_attn.q_proj",
    ]
    assert ILoRA(targets={"llm": "v_proj"}).targets == {"llm": ("v_proj",)}
