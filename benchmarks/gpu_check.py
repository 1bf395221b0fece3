"""The project's GPU check in one call: training throughput and MFU, both loss paths, and the I-LoRA layer.

1. :mod:`gpu_step` (FSDP2 + bf16 + I-LoRA, random-init Qwen2-shaped LLM) for the 0.5B model with today's loss
   path (crabzoo's supervised positions) and the old one (full fp32 logits), and for the 1.5B model, each in its
   own process so that peak memory is its own;
2. one I-LoRA-adapted linear layer at Crab+'s shapes (d_in 3584, d_out 18944, r 128, N 3; 8 x 2048 tokens,
   bf16): crabzoo's fused layer against the official per-head loop and a LoRA of rank N·r, forward + backward,
   timed with CUDA events (median of 10 after 3 warm-ups), peak memory of one step.

It prints one Markdown table per part and writes them to ``--out`` (default ``gpu_check.md``). About 3-4 minutes
on one H100/H200::

    python benchmarks/gpu_check.py --out gpu_check.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
STEP_RUNS = [
    ("0.5B, supervised loss", ["--size", "0.5b", "--batch", "8", "--loss", "supervised"]),
    ("0.5B, full fp32 logits", ["--size", "0.5b", "--batch", "8", "--loss", "full"]),
    ("1.5B, supervised loss", ["--size", "1.5b", "--batch", "4", "--loss", "supervised"]),
    ("1.5B, full fp32 logits", ["--size", "1.5b", "--batch", "4", "--loss", "full"]),
]


def step_table(timeout: int) -> str:
    """Run :mod:`gpu_step` once per configuration; a Markdown table of tokens/s, MFU, peak memory."""
    lines = ["| run | step ms | tokens/s | MFU | peak GiB |", "|---|---:|---:|---:|---:|"]
    results = {}
    for label, extra in STEP_RUNS:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "step.json"
            cmd = [sys.executable, str(HERE / "gpu_step.py"), *extra, "--json", str(out)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                lines.append(f"| {label} | timed out after {timeout} s | | | |")
                continue
            if proc.returncode != 0 or not out.is_file():
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                lines.append(f"| {label} | failed: {tail[0][:120]} | | | |")
                continue
            r = json.loads(out.read_text())
        results[label] = r
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") is not None else "n/a"
        peak = f"{r['peak_gib']:.1f}" if r.get("peak_gib") is not None else "n/a"
        lines.append(f"| {label} | {r['step_s'] * 1e3:.0f} | {r['tokens_per_s']:,.0f} | {mfu} | {peak} |")
    for size in ("0.5B", "1.5B"):
        new, old = results.get(f"{size}, supervised loss"), results.get(f"{size}, full fp32 logits")
        if new and old:
            ratio = f"{size}: supervised / full tokens/s {new['tokens_per_s'] / old['tokens_per_s']:.2f}x"
            if new.get("peak_gib") and old.get("peak_gib"):
                ratio += f", peak memory full / supervised {old['peak_gib'] / new['peak_gib']:.2f}x"
            lines.append("")
            lines.append(ratio)
    return "\n".join(lines)


def _time(step, repeats: int = 10, warmup: int = 3) -> tuple[float, float]:
    """Median milliseconds of ``step()`` (CUDA events) and the peak GiB allocated by one step."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), peak


def ilora_table(d_in: int = 3584, d_out: int = 18944, rank: int = 128, heads: int = 3, tokens: int = 16384) -> str:
    """Fused I-LoRA vs the per-head loop vs LoRA of rank N·r, one adapted layer, bf16, forward + backward."""
    sys.path.insert(0, str(HERE))
    from ilora import LoopILoRA, peft_lora  # the CPU benchmark's reference implementations

    from crabzoo.adapters import ILoRALinear

    device = torch.device("cuda")
    torch.manual_seed(0)
    base = nn.Linear(d_in, d_out).to(device, torch.bfloat16)
    base.requires_grad_(False)
    layer = ILoRALinear(base, n_heads=heads, rank=rank, alpha=2.0 * rank, dropout=0.0).to(device, torch.bfloat16)
    with torch.no_grad():
        layer.lora_B.normal_(std=0.01)
    loop = LoopILoRA(layer).to(device, torch.bfloat16)
    lora = peft_lora(base, heads * rank, 0.0).to(device, torch.bfloat16)
    variants = {
        "crabzoo fused I-LoRA": (layer, list(layer.lora_parameters().values())),
        "official per-head loop": (loop, [loop.lora_A, loop.lora_route, *loop.heads]),
        f"LoRA r={heads * rank} (peft)": (lora, [lora.lora_A["default"].weight, lora.lora_B["default"].weight]),
    }
    x = torch.randn(tokens, d_in, device=device, dtype=torch.bfloat16, requires_grad=True)
    dy = torch.randn(tokens, d_out, device=device, dtype=torch.bfloat16)
    rows = {}
    for name, (module, params) in variants.items():
        rows[name] = _time(lambda m=module, p=params: torch.autograd.grad(m(x), [x, *p], dy))
    fused = rows["crabzoo fused I-LoRA"][0]
    lines = [
        f"I-LoRA layer: d_in {d_in}, d_out {d_out}, r {rank}, N {heads}, {tokens} tokens, bf16, forward + backward",
        "",
        "| variant | median ms | vs fused | peak GiB of one step |",
        "|---|---:|---:|---:|",
    ]
    for name, (ms, peak) in rows.items():
        lines.append(f"| {name} | {ms:.2f} | {ms / fused:.2f}x | {peak:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_check.md", help="Markdown file for the tables")
    parser.add_argument("--timeout", type=int, default=150, help="seconds per gpu_step run")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check.py: no CUDA device found; run it on a machine with a GPU.")
        return
    name = torch.cuda.get_device_name()
    parts = [f"GPU: {name}, torch {torch.__version__}", ""]
    parts += ["## Training step (FSDP2 + bf16 + I-LoRA, 5% of text tokens supervised)", "", step_table(args.timeout), ""]
    print("\n".join(parts), flush=True)
    layer = ilora_table()
    parts += ["## I-LoRA layer at Crab+ shapes", "", layer, ""]
    print(layer, flush=True)
    Path(args.out).write_text("\n".join(parts))


if __name__ == "__main__":
    main()
