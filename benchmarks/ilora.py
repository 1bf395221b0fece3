"""Fused I-LoRA vs the official per-head loop vs peft LoRA of rank N·r: one adapted linear, fp32 on CPU.

Forward + backward (gradients for the input and every trainable parameter) of:

* ``fused``  crabzoo's :class:`~crabzoo.adapters.ILoRALinear` (gate inside the bottleneck, two GEMMs);
* ``loop``   the official computation: router softmax, ``h = A x``, then for each head a full-width
  ``B_i h`` weighted by its gate and added to the output;
* ``lora``   a peft LoRA layer of rank N·r (the cost the fused form aims for).

Each is measured for the whole adapted layer and for the adapter path alone (the frozen base product
excluded). Reported per variant: median wall time over interleaved repeats, peak memory of one
forward+backward above what was resident before it (the process's peak RSS, reset through
``/proc/self/clear_refs``, with glibc's mmap threshold pinned so that freed tensors leave the RSS), and the
activations autograd saves for backward (``saved_tensors_hooks``; parameters and repeated storages excluded).
Ratios are measured side by side in the same run; absolute times depend on the machine and its load.

Usage::

    python benchmarks/ilora.py            # full shapes (a few minutes on 2 idle cores)
    python benchmarks/ilora.py --quick    # small token counts, two repeats (a smoke run)
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crabzoo.adapters import ILoRALinear
from crabzoo.adapters.fused import fused_ilora

MB = 2**20


@dataclass
class Shape:
    """One benchmark configuration."""

    label: str
    d_in: int
    d_out: int
    rank: int
    heads: int
    tokens: int


FULL = {
    "a": Shape("a", 1024, 1024, 8, 4, 4096),
    "b3584": Shape("b", 3584, 3584, 128, 3, 2048),
    "b18944": Shape("b", 3584, 18944, 128, 3, 2048),
}


def quick(shapes: list[Shape]) -> list[Shape]:
    return [Shape(s.label, s.d_in, s.d_out, s.rank, s.heads, max(128, s.tokens // 8)) for s in shapes]


# --- memory ---------------------------------------------------------------------------------------------


def pin_malloc() -> None:
    """Make glibc serve every block of 64 KiB or more with mmap (returned to the OS when freed)."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 65536)  # M_MMAP_THRESHOLD
    except OSError:
        pass


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


def peak_bytes(step: Callable[[], object]) -> int:
    """Peak resident memory of ``step()`` above the resident memory before it."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status("VmRSS:")
    result = step()
    peak = _status("VmHWM:") - before
    del result
    return max(peak, 0)


def saved_bytes(forward: Callable[[], Tensor], weights: list[Tensor]) -> int:
    """Bytes of activations autograd keeps for backward.

    Tensors sharing storage with ``weights`` (parameters and their transposed views) are not activations;
    a storage saved by several operations counts once.
    """
    weight_storages = {w.untyped_storage().data_ptr() for w in weights}
    seen: set[tuple[int, int]] = set()
    total = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key[0] not in weight_storages:
            if key not in seen:
                seen.add(key)
                total += key[1]
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return total


# --- the three implementations --------------------------------------------------------------------------


def fused_adapter_path(layer: ILoRALinear, x: Tensor) -> Tensor:
    """The I-LoRA branch alone: router + fused two-GEMM product, no base product."""
    _, gates = layer.gates(x)
    x_drop = layer.lora_dropout(x)
    return fused_ilora(x, x_drop, None, None, layer.lora_A, layer.lora_B, gates.to(x.dtype), layer.scale, True)


class LoopILoRA(nn.Module):
    """The official computation: one full-width output per head, weighted by its gate and summed."""

    def __init__(self, layer: ILoRALinear) -> None:
        super().__init__()
        self.weight, self.bias = layer.weight, layer.bias
        self.lora_route, self.lora_A = layer.lora_route, layer.lora_A
        self.heads = nn.ParameterList([nn.Parameter(layer.head(i).detach().clone()) for i in range(layer.n_heads)])
        self.dropout, self.scale = layer.lora_dropout, layer.scale

    def adapter(self, x: Tensor, result: Tensor | None = None) -> Tensor:
        gates = torch.softmax(F.linear(x, self.lora_route), dim=-1, dtype=torch.float32).to(x.dtype)
        h = F.linear(self.dropout(x), self.lora_A)
        for i, head in enumerate(self.heads):
            term = gates[..., i].unsqueeze(-1) * F.linear(h, head) * self.scale
            result = term if result is None else result + term
        return result

    def forward(self, x: Tensor) -> Tensor:
        return self.adapter(x, F.linear(x, self.weight, self.bias))


def peft_lora(base: nn.Linear, rank: int, dropout: float) -> nn.Module:
    """A peft LoRA layer of the given rank around ``base`` (weights shared, not copied)."""
    from peft import LoraConfig, inject_adapter_in_model

    holder = nn.Module()
    holder.proj = nn.Linear(1, 1)
    holder.proj.in_features, holder.proj.out_features = base.in_features, base.out_features
    holder.proj.weight, holder.proj.bias = base.weight, base.bias
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=dropout, target_modules=["proj"])
    inject_adapter_in_model(config, holder)
    layer = holder.proj
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_(std=0.01)
    return layer


def peft_adapter_path(layer: nn.Module, x: Tensor) -> Tensor:
    return layer.lora_B["default"](layer.lora_A["default"](layer.lora_dropout["default"](x))) * layer.scaling["default"]


# --- measurement ----------------------------------------------------------------------------------------


@dataclass
class Variant:
    name: str
    part: str
    forward: Callable[[Tensor], Tensor]
    params: list[Tensor]
    times: list[float]
    peak: int = 0
    saved: int = 0


def run_shape(shape: Shape, repeats: int, dropout: float) -> list[Variant]:
    torch.manual_seed(0)
    base = nn.Linear(shape.d_in, shape.d_out)
    layer = ILoRALinear(base, n_heads=shape.heads, rank=shape.rank, alpha=2.0 * shape.rank, dropout=dropout)
    with torch.no_grad():
        layer.lora_B.normal_(std=0.01)
    loop = LoopILoRA(layer)
    lora = peft_lora(base, shape.heads * shape.rank, dropout)
    fused_params = list(layer.lora_parameters().values())
    loop_params = [loop.lora_A, loop.lora_route, *loop.heads]
    lora_params = [lora.lora_A["default"].weight, lora.lora_B["default"].weight]
    variants = [
        Variant("fused", "layer", layer, fused_params, []),
        Variant("loop", "layer", loop, loop_params, []),
        Variant(f"lora r={shape.heads * shape.rank}", "layer", lora, lora_params, []),
        Variant("fused", "adapter", lambda x: fused_adapter_path(layer, x), fused_params, []),
        Variant("loop", "adapter", loop.adapter, loop_params, []),
        Variant(f"lora r={shape.heads * shape.rank}", "adapter", lambda x: peft_adapter_path(lora, x), lora_params, []),
    ]
    weights = [base.weight, base.bias, *fused_params, *loop_params, *lora_params]
    x = torch.randn(shape.tokens, shape.d_in, requires_grad=True)
    dy = torch.randn(shape.tokens, shape.d_out)

    def step(v: Variant):
        y = v.forward(x)
        return torch.autograd.grad(y, [x, *v.params], dy)

    for v in variants:  # a forward as warm-up (counting saved activations), then one step for the peak
        v.saved = saved_bytes(lambda: v.forward(x), weights)
        v.peak = peak_bytes(lambda: step(v))
    for _ in range(repeats):  # interleaved, so that load changes hit every variant alike
        for v in variants:
            start = time.perf_counter()
            step(v)
            v.times.append(time.perf_counter() - start)
    return variants


def median_ms(v: Variant) -> float:
    return 1000 * statistics.median(v.times)


def report(shape: Shape, variants: list[Variant]) -> tuple[str, dict[str, float]]:
    """A Markdown table for one shape and the ratios the targets are about."""
    by = {(v.name.split()[0], v.part): v for v in variants}
    lines = [
        f"shape ({shape.label}): d_in={shape.d_in}, d_out={shape.d_out}, r={shape.rank}, N={shape.heads}, "
        f"tokens={shape.tokens}",
        "",
        "| part | variant | median ms | x LoRA(N·r) | loop / this | peak MB | saved for backward MB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for v in variants:
        lora, loop = by[("lora", v.part)], by[("loop", v.part)]
        lines.append(
            f"| {v.part} | {v.name} | {median_ms(v):.1f} | {median_ms(v) / median_ms(lora):.2f} | "
            f"{median_ms(loop) / median_ms(v):.2f} | {v.peak / MB:.1f} | {v.saved / MB:.1f} |"
        )
    ratios = {
        "layer fused/lora": median_ms(by[("fused", "layer")]) / median_ms(by[("lora", "layer")]),
        "adapter fused/lora": median_ms(by[("fused", "adapter")]) / median_ms(by[("lora", "adapter")]),
        "adapter loop/fused": median_ms(by[("loop", "adapter")]) / median_ms(by[("fused", "adapter")]),
        "layer loop/fused": median_ms(by[("loop", "layer")]) / median_ms(by[("fused", "layer")]),
        "saved fused/loop": by[("fused", "adapter")].saved / max(by[("loop", "adapter")].saved, 1),
    }
    return "\n".join(lines), ratios


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1/8 of the tokens and two repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per variant (default 3; 2 quick)")
    parser.add_argument("--shapes", nargs="+", choices=list(FULL), default=list(FULL), help="shapes to run")
    parser.add_argument("--dropout", type=float, default=0.0, help="adapter dropout in every variant")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pin_malloc()
    chosen = [FULL[name] for name in args.shapes]
    shapes = quick(chosen) if args.quick else chosen
    repeats = args.repeats or (2 if args.quick else 3)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 CPU, dropout {args.dropout}, "
          f"{repeats} repeats{' (quick)' if args.quick else ''}\n")
    checks = []
    for shape in shapes:
        table, ratios = report(shape, run_shape(shape, repeats, args.dropout))
        print(table, "\n", flush=True)
        checks.append(f"({shape.label}) d_out={shape.d_out}: whole layer fused/LoRA {ratios['layer fused/lora']:.2f} "
                      f"(target <= 1.10); adapter fused/LoRA {ratios['adapter fused/lora']:.2f} (<= 1.25); adapter "
                      f"loop/fused {ratios['adapter loop/fused']:.2f}{' (>= 3)' if shape.label == 'a' else ''}; "
                      f"whole layer loop/fused {ratios['layer loop/fused']:.2f}; saved for backward fused/loop "
                      f"{ratios['saved fused/loop']:.3f}{' (<= 0.10)' if shape.d_out == 18944 else ''}")
    print("Targets:")
    print("\n".join(f"- {c}" for c in checks))


if __name__ == "__main__":
    main()
