"""Training-step throughput and MFU of a 0.5-1.5B-parameter paradigm: FSDP2 + bf16 + I-LoRA on one GPU.

The model is built offline from a config (random init): a Qwen2-0.5B-shaped (or ``--size 1.5b``) causal LM with
fused I-LoRA on every projection of every decoder layer (frozen base), an MLP connector fed with cached
encoder features (CLIP ViT-L/14 width, 256 tokens per sample, as with the feature cache on), sharded with
:func:`crabzoo.distributed.shard_model` (bf16 compute, fp32 gradient reduction), AdamW on the trainable
parameters. It times ``--steps`` steps after ``--warmup`` and prints a table with tokens/s and MFU.

Only the last ``--supervised`` share of each sample's text tokens carries labels (an AV-LLM's answer). The loss
runs on ``--loss supervised`` (crabzoo's path: the LM head and the fp32 cross-entropy on the supervised positions
only, :func:`crabzoo.backbones.loss.supervised_loss`) or ``--loss full`` (the LM head over every position, all
logits upcast to fp32, :func:`crabzoo.backbones.loss.full_logits_loss`). ``--json PATH`` also writes the table.

MFU uses the conventional ``6·N`` FLOPs per token plus causal attention (``6·L·d·S``), N = parameters without
embeddings, over the GPU's dense bf16 peak (H100 SXM / H200: 989 TFLOP/s). With a frozen base the backward
skips the base weight gradients, so the executed FLOPs are ~2/3 of this figure.

Usage (one command, about 2 minutes on an H100)::

    python benchmarks/gpu_step.py                 # 0.5B, batch 8 x 2048 tokens
    python benchmarks/gpu_step.py --size 1.5b --batch 4
    python benchmarks/gpu_step.py --loss full     # the same step with full fp32 logits
    python benchmarks/gpu_step.py --tiny          # CPU smoke run of the same code path (no MFU)
    python benchmarks/gpu_check.py                # every GPU check of the project in one table
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

import torch
from torch import nn

SIZES = {
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, vocab_size=151936),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2, vocab_size=151936),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=512),
}
MEDIA_DIM, MEDIA_TOKENS = 1024, 256


class Backbone(nn.Module):
    """The LM with the ``decoder_layer_cls`` hook the sharding plan reads."""

    def __init__(self, config: dict, attn: str) -> None:
        super().__init__()
        from transformers import Qwen2Config, Qwen2ForCausalLM

        cfg = Qwen2Config(**config, max_position_embeddings=32768, tie_word_embeddings=False)
        cfg._attn_implementation = attn
        self.model = Qwen2ForCausalLM(cfg)

    @property
    def decoder_layer_cls(self) -> type[nn.Module]:
        return type(self.model.model.layers[0])


class Paradigm(nn.Module):
    """Connector (cached media features -> LLM width) + LM + I-LoRA; returns the LM loss on the text."""

    def __init__(self, config: dict, attn: str, rank: int, heads: int) -> None:
        super().__init__()
        from crabzoo.adapters.ilora import ILoRA

        self.backbone = Backbone(config, attn)
        width = config["hidden_size"]
        self.connector = nn.Sequential(nn.Linear(MEDIA_DIM, width), nn.GELU(), nn.Linear(width, width))
        self.backbone.requires_grad_(False)
        self.adapter = ILoRA(groups=("llm",), n_heads=heads, rank=rank, alpha=2.0 * rank, dropout=0.0)
        targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
        self.adapter.apply({"llm": self.backbone}, {"llm": targets})

    def module_groups(self) -> dict[str, nn.Module]:
        return {"llm": self.backbone, "connector": nn.ModuleList([self.connector])}

    def forward(self, media: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor, loss: str = "supervised") -> torch.Tensor:
        from crabzoo.backbones.loss import full_logits_loss, supervised_index, supervised_loss

        index = supervised_index(labels) if loss != "full" else None  # before the decoder, as the backbones do
        lm = self.backbone.model
        embeds = torch.cat([self.connector(media), lm.get_input_embeddings()(ids)], dim=1)
        hidden = lm.model(inputs_embeds=embeds, use_cache=False).last_hidden_state[:, media.shape[1] :]
        if loss == "full":
            return full_logits_loss(lm.lm_head(hidden), labels)[0]
        return supervised_loss(hidden, labels, lm.lm_head, index=index)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["0.5b", "1.5b"], default="0.5b")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=2048, help="text tokens per sample (media tokens come on top)")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--loss", choices=["supervised", "full"], default="supervised", help="loss path (see above)")
    parser.add_argument("--supervised", type=float, default=0.05, help="share of text tokens with labels")
    parser.add_argument("--json", help="also write the table as JSON to this path")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run with a tiny config")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        print("gpu_step.py: no CUDA device found. This benchmark measures GPU tokens/s and MFU; run it on a machine "
              "with a GPU (python benchmarks/gpu_step.py), or check the code path on CPU with --tiny.")
        return
    if args.tiny:
        args.batch, args.seq, args.steps, args.warmup = 2, 32, 2, 1
    device = torch.device("cuda" if cuda else "cpu")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    torch.distributed.init_process_group("nccl" if cuda else "gloo", rank=0, world_size=1)
    from torch.distributed.device_mesh import init_device_mesh

    from crabzoo.distributed import shard_model
    from crabzoo.monitor import count_parameters, peak_flops

    config = SIZES["tiny" if args.tiny else args.size]
    torch.manual_seed(0)
    with torch.device(device):
        model = Paradigm(config, "sdpa", args.rank, args.heads)
    n_total = count_parameters(model)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    mesh = init_device_mesh(device.type, (1,))
    shard_model(model, mesh, mixed_precision="bf16-mixed", activation_checkpointing=args.activation_checkpointing)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=cuda)
    media = torch.randn(args.batch, MEDIA_TOKENS if not args.tiny else 4, MEDIA_DIM, device=device)
    ids = torch.randint(0, config["vocab_size"], (args.batch, args.seq), device=device)
    from crabzoo.backbones.loss import IGNORE_INDEX

    labels = ids.clone()
    labels[:, : args.seq - max(2, round(args.supervised * args.seq))] = IGNORE_INDEX  # the answer: the last tokens
    tokens_per_step = args.batch * (args.seq + media.shape[1])

    def step() -> float:
        loss = model(media, ids, labels, args.loss)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / args.steps
    seq = args.seq + media.shape[1]
    flops_token = 6 * n_total + 6 * config["num_hidden_layers"] * config["hidden_size"] * seq
    tps = tokens_per_step / seconds
    peak = peak_flops(device) if cuda else None
    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    rows = [
        ("device", name),
        ("model", f"{'tiny' if args.tiny else args.size} Qwen2-shaped, {n_total / 1e6:.0f}M params w/o embeddings"),
        ("trainable (I-LoRA + connector)", f"{n_train / 1e6:.1f}M"),
        ("batch x (media + text) tokens", f"{args.batch} x ({media.shape[1]} + {args.seq})"),
        ("loss path", f"{args.loss} ({args.supervised:.0%} of text tokens supervised)"),
        ("step time", f"{seconds * 1e3:.0f} ms"),
        ("tokens/s", f"{tps:,.0f}"),
        ("model TFLOP/s (6N + attention)", f"{flops_token * tps / 1e12:.1f}"),
        ("MFU", f"{flops_token * tps / peak:.1%} (target >= 40%)" if peak else "n/a (unknown peak)"),
        ("peak memory", f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if cuda else "n/a"),
        ("last loss", f"{loss:.3f}"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if args.json:
        numbers = {"tokens_per_s": tps, "step_s": seconds, "mfu": flops_token * tps / peak if peak else None,
                   "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, **numbers}, fh, indent=2)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
