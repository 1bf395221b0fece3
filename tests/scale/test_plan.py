"""Sharding plan (no processes), precision policies, atomic checkpoint writes, throughput arithmetic."""

from __future__ import annotations

import pytest
import torch
from tiny import TinyAV

from crabzoo.distributed import AtomicCheckpointIO, mixed_precision_policy, sharding_plan
from crabzoo.errors import CrabzooError
from crabzoo.monitor import ThroughputMonitor, batch_counts, count_parameters


@pytest.fixture(scope="module")
def model():
    return TinyAV()


def test_plan_units_innermost_first(model):
    plan = sharding_plan(model)
    names = [n for n, _ in plan]
    assert names == [
        "backbone.model.model.layers.0", "backbone.model.model.layers.1",
        "visual_encoder.blocks.0", "visual_encoder.blocks.1", "visual_connector", "",
    ]


def test_mixed_trainable_dtypes_get_adapter_units():
    m = TinyAV(adapter_dtype=torch.bfloat16)
    layer = m.backbone.model.model.layers[0]
    layer.input_layernorm.weight.requires_grad_(True)  # fp32 trainable beside bf16 adapters in one layer
    names = [n for n, _ in sharding_plan(m)]
    adapted = [n for n in names if n.endswith(("q_proj", "v_proj", "down_proj"))]
    assert len(adapted) == 3 and all(n.startswith("backbone.model.model.layers.0.") for n in adapted)
    assert names.index(adapted[0]) < names.index("backbone.model.model.layers.0")


def test_unsplittable_mixed_dtypes_raise():
    m = TinyAV()
    m.visual_connector[0].to(torch.bfloat16)
    with pytest.raises(CrabzooError, match="several dtypes"):
        sharding_plan(m)


def test_precision_policies():
    p = mixed_precision_policy("bf16-mixed")
    assert p.param_dtype == torch.bfloat16 and p.reduce_dtype == torch.float32
    assert mixed_precision_policy("16-mixed").param_dtype == torch.float16
    assert mixed_precision_policy("32-true") is None and mixed_precision_policy(None) is None
    with pytest.raises(CrabzooError, match="precision"):
        mixed_precision_policy("fp8")


def test_atomic_checkpoint_io_never_leaves_partial_files(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"w": torch.ones(3)}, path)

    def crash(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))  # old checkpoint intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_throughput_arithmetic(model):
    mon = ThroughputMonitor(window=4, flops_per_token=600.0, peak=1000.0)
    for _ in range(4):
        mon.history.append((0.5, 8, 100))  # 0.5 s, 8 samples, 100 tokens per step
    out = mon.compute(world_size=2)
    assert out["samples_per_s"] == pytest.approx(32.0)  # 2 ranks x 32 samples / 2 s
    assert out["tokens_per_s"] == pytest.approx(400.0)
    assert out["mfu"] == pytest.approx(600.0 * 400 / 2.0 / 1000.0)  # per device: 200 tokens/s x 600 / 1000
    n = count_parameters(model)
    assert n == sum(p.numel() for p in model.parameters()) - model.backbone.model.model.embed_tokens.weight.numel()
    assert batch_counts({"input_ids": [torch.ones(5), torch.ones(7)]}) == (2, 12)
