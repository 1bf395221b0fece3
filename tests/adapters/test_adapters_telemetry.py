from __future__ import annotations

import json
import math

import pytest
import torch
from adapters_helpers import LLM_TARGETS
from torch import nn

from crabzoo.adapters import ILoRA, ILoRALinear, RouterTelemetry
from crabzoo.adapters.plot import gate_array, main


def two_head_layer(telemetry: RouterTelemetry) -> ILoRALinear:
    """Router logits (x_0, 0): gate of head 0 = sigmoid(x_0)."""
    layer = ILoRALinear(nn.Linear(2, 3), n_heads=2, rank=1, alpha=1.0).eval()
    with torch.no_grad():
        layer.lora_route.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    layer.layer_name, layer.telemetry = "llm.q", telemetry
    return layer


def tokens(*x0: float) -> torch.Tensor:
    return torch.tensor([[v, 0.0] for v in x0])


def test_mean_gate_per_task_layer_head_by_hand(tmp_path):
    tel = RouterTelemetry()
    layer = two_head_layer(tel)
    x = torch.stack([tokens(0.0, math.log(3)), tokens(math.log(3), 50.0), tokens(-math.log(3), 0.0)])  # (3, 2, 2)
    layer(x)  # disabled: nothing recorded
    tel.enable()
    tel.start(["a", "b", "a"], mask=torch.tensor([[1, 1], [1, 0], [1, 1]]))
    layer(x)
    tel.start(["b"])
    layer(tokens(0.0, 0.0).unsqueeze(0))
    layer(torch.zeros(4, 2))  # leading dim 4 != 1 sample: pooled under "(all)"
    summary = tel.summary()
    # task a: gates of head 0 = 0.5, 0.75, 0.25, 0.5 -> 0.5; task b: 0.75 (masked 50.0 dropped), 0.5, 0.5
    assert summary["tasks"] == ["a", "b", "(all)"]
    assert summary["mean_gate"]["a"]["llm.q"] == pytest.approx([0.5, 0.5])
    assert summary["mean_gate"]["b"]["llm.q"] == pytest.approx([(0.75 + 0.5 + 0.5) / 3, 1 - (0.75 + 0.5 + 0.5) / 3])
    assert summary["mean_gate"]["(all)"]["llm.q"] == pytest.approx([0.5, 0.5])
    assert summary["tokens"] == {"a": {"llm.q": 4}, "b": {"llm.q": 3}, "(all)": {"llm.q": 4}}
    path = tel.save(tmp_path / "router_telemetry" / "epoch=000.json")
    assert json.loads(path.read_text()) == summary
    tel.disable()
    layer(x)
    assert tel.summary() == summary
    tel.reset()
    assert tel.summary()["tasks"] == []


def test_plot_routes_draws_heat_maps_of_a_run(tiny_llama, tmp_path, capsys):
    adapter = ILoRA(n_heads=3, rank=4)
    adapter.apply({"llm": tiny_llama}, LLM_TARGETS)
    adapter.telemetry.enable()
    for tasks in (["ave", "avqa"], ["avqa", "ms3"]):
        adapter.telemetry.start(tasks, mask=torch.ones(2, 6, dtype=torch.bool))
        with torch.no_grad():
            tiny_llama(torch.randint(0, 128, (2, 6)))
    run = tmp_path / "run"
    adapter.telemetry.save(run / "router_telemetry" / "epoch=000.json")
    (run / "other.json").write_text('{"not": "telemetry"}')
    summary = adapter.telemetry.summary()
    tasks, layers, arr = gate_array(summary)
    assert tasks == ["ave", "avqa", "ms3"] and len(layers) == 14 and arr.shape == (3, 14, 3)
    assert arr.sum(-1) == pytest.approx(1.0)

    main(["routes", str(run)])
    printed = capsys.readouterr().out.split()
    pngs = [run / "router_telemetry" / "epoch=000.png", run / "router_telemetry" / "epoch=000_specialisation.png"]
    assert printed == [str(p) for p in pngs]
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_routes_without_telemetry_is_a_user_error(tmp_path):
    from crabzoo.errors import CrabzooError

    with pytest.raises(CrabzooError, match="no router telemetry"):
        main(["routes", str(tmp_path)])
