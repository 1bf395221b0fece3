"""I-LoRA layers under FSDP2 ``fully_shard`` (CPU, gloo, one process): same loss and gradients as unsharded."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import os, sys, torch, torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1], RANK="0", WORLD_SIZE="1")
    dist.init_process_group("gloo")
    from torch.distributed.fsdp import fully_shard
    from transformers import LlamaConfig, LlamaForCausalLM
    from crabzoo.adapters import ILoRA
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    sharded, plain = LlamaForCausalLM(config), LlamaForCausalLM(config)
    plain.load_state_dict(sharded.state_dict())
    adapters = []
    for model in (sharded, plain):
        model.requires_grad_(False)
        adapter = ILoRA(n_heads=3, rank=4, dropout=0.0, balance_loss="cv2", balance_weight=0.1)
        adapter.apply({"llm": model}, {"llm": ["q_proj", "v_proj", "down_proj"]})
        adapters.append(adapter)
    for p in adapters[0].trainable_parameters():
        torch.nn.init.normal_(p, std=0.1)
    adapters[1].load_adapter_state_dict(adapters[0].adapter_state_dict())
    for layer in sharded.model.layers:
        fully_shard(layer)
    fully_shard(sharded)
    ids = torch.randint(0, 128, (2, 7))
    losses = []
    for model, adapter in zip((sharded, plain), adapters):
        loss = model(ids).logits.pow(2).mean() + adapter.aux_loss()
        loss.backward()
        losses.append(loss.item())
    grads = [{n: p.grad for n, p in a.named_trainable_parameters()} for a in adapters]
    full = lambda t: t.full_tensor() if hasattr(t, "full_tensor") else t
    diff = max((full(grads[0][n]) - grads[1][n]).abs().max().item() for n in grads[1])
    assert abs(losses[0] - losses[1]) < 1e-6, losses
    assert diff < 1e-6, diff
    dist.destroy_process_group()
    print("ok")
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ilora_under_fsdp2_matches_unsharded():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(free_port())], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
