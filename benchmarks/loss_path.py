"""Peak memory and time of the LM loss: full logits upcast to fp32 vs supervised rows in chunks.

Runs forward + backward of the loss part only (final hidden states -> LM head -> cross-entropy) for each path in
its own subprocess, so that peak memory (``torch.cuda.max_memory_allocated`` on a GPU, max RSS on a CPU) is not
shared between them, and prints both side by side with their ratios.

Usage: ``python benchmarks/loss_path.py [--hidden 3584] [--vocab 152064] [--tokens 2048] [--supervised 0.05]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from crabzoo.backbones.loss import IGNORE_INDEX, full_logits_loss, supervised_loss


def peak_bytes(device: torch.device) -> int:
    """Peak memory so far: CUDA allocator peak, or the process's max RSS on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(
    path: str, hidden_size: int, vocab: int, tokens: int, supervised: float, repeats: int, train_head: bool
) -> dict:
    """Run one path ``repeats`` times (after one warm-up) and return its peak memory and mean time."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16
    torch.manual_seed(0)
    head = torch.nn.Linear(hidden_size, vocab, bias=False, device=device, dtype=dtype)
    head.requires_grad_(train_head)  # frozen, as when adapters train the LLM
    hidden = torch.randn(1, tokens, hidden_size, device=device, dtype=dtype, requires_grad=True)
    labels = torch.full((1, tokens), IGNORE_INDEX, device=device)
    n = max(1, int(tokens * supervised))
    labels[0, -n:] = torch.randint(0, vocab, (n,), device=device)  # the answer at the end, as in chat data

    def step() -> None:
        if path == "full":
            loss, _ = full_logits_loss(head(hidden), labels)
        else:
            loss, _ = supervised_loss(hidden, labels, head)
        loss.backward()
        head.weight.grad = None
        hidden.grad = None

    base = peak_bytes(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / repeats
    return {"path": path, "device": device.type, "peak_bytes": peak_bytes(device) - base, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=3584)
    parser.add_argument("--vocab", type=int, default=152064)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--supervised", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-head", action="store_true", help="also train the LM head (its gradient counts)")
    parser.add_argument("--only", choices=("full", "supervised"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        print(json.dumps(measure(args.only, args.hidden, args.vocab, args.tokens, args.supervised, args.repeats, args.train_head)))
        return
    results = {}
    for path in ("full", "supervised"):
        cmd = [sys.executable, __file__, "--only", path] + [
            f"--{k}={getattr(args, k)}" for k in ("hidden", "vocab", "tokens", "supervised", "repeats")
        ] + (["--train-head"] if args.train_head else [])
        results[path] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    full, sup = results["full"], results["supervised"]
    kind = "CUDA allocator peak" if full["device"] == "cuda" else "max RSS increase"
    print(f"hidden {args.hidden}, vocab {args.vocab}, {args.tokens} tokens, {args.supervised:.0%} supervised, "
          f"bf16, LM head {'trained' if args.train_head else 'frozen'}, {full['device']}; memory = {kind}")
    print(f"{'path':<28}{'peak MiB':>12}{'time ms':>12}")
    print(f"{'full logits, fp32 cast':<28}{full['peak_bytes'] / 2**20:>12.1f}{full['seconds'] * 1e3:>12.1f}")
    print(f"{'supervised rows, chunked':<28}{sup['peak_bytes'] / 2**20:>12.1f}{sup['seconds'] * 1e3:>12.1f}")
    print(f"ratio full / supervised: memory {full['peak_bytes'] / max(sup['peak_bytes'], 1):.1f}x, "
          f"time {full['seconds'] / sup['seconds']:.1f}x")


if __name__ == "__main__":
    main()
