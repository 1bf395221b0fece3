"""The fused I-LoRA product as one autograd function.

For tokens ``x`` (T, d_in), gates ``g`` (T, N), shared down-projection ``A`` (r, d_in) and stacked heads
``B = [B_1 ... B_N]`` (d_out, N·r)::

    h  = A x_d                      (T, r)        x_d = dropout(x)
    h' = s · (g ⊗ h)                (T, N·r)      s = alpha / r, block i holds g_i · h
    y  = W0 x + b + B h'            (T, d_out)

which equals ``W0 x + b + s · Σ_i g_i B_i A x_d`` (the per-head loop) at the cost of one LoRA of rank N·r
and without any ``N × d_out`` temporary. With independent down-projections (``A`` of shape (N·r, d_in)),
block i of ``h'`` is ``g_i · A_i x_d`` instead.

For backward only ``x_d``, ``h`` and ``g`` are kept (plus ``x`` when the base weight is trained); ``h'`` is
recomputed, so the saved activations per token are ``d_in + r + N`` numbers instead of the loop's
``N·d_out``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _gated(h: Tensor, gates: Tensor, scale: float, shared: bool) -> Tensor:
    """``h'``: (T, N·r) with block i = scale · g_i · h (shared A) or scale · g_i · h_i (independent A)."""
    t, n = gates.shape
    if shared:
        out = gates.unsqueeze(-1) * h.unsqueeze(1)
    else:
        out = h.view(t, n, -1) * gates.unsqueeze(-1)
    return out.mul_(scale).view(t, -1)


class FusedILoRA(torch.autograd.Function):
    """``y = W0 x + b + s · B (g ⊗ A x_d)`` with a hand-written backward (see the module docstring).

    ``weight`` may be ``None`` for the adapter path alone. ``x`` and ``x_drop`` may be the same tensor
    (no dropout); then both input gradients are summed in one buffer and returned for ``x``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        x: Tensor,
        x_drop: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        lora_a: Tensor,
        lora_b: Tensor,
        gates: Tensor,
        scale: float,
        shared: bool,
    ) -> Tensor:
        h = x_drop @ lora_a.t()
        hg = _gated(h, gates, scale, shared)
        if weight is not None:
            y = torch.addmm(bias, x, weight.t()) if bias is not None else x @ weight.t()
            y.addmm_(hg, lora_b.t())
        else:
            y = hg @ lora_b.t()
        keep_x = weight is not None and ctx.needs_input_grad[2]
        ctx.save_for_backward(x_drop, h, gates, lora_a, lora_b, weight, x if keep_x else None)
        ctx.scale, ctx.shared, ctx.has_bias = scale, shared, bias is not None
        ctx.same_input = x_drop is x  # no dropout: one input gradient, accumulated in place
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):  # type: ignore[override]
        x_drop, h, gates, lora_a, lora_b, weight, x = ctx.saved_tensors
        need = ctx.needs_input_grad
        scale, shared = ctx.scale, ctx.shared
        dy = dy.contiguous()
        t, n = gates.shape
        dx = dx_drop = dw = db = da = dlb = dg = None

        if weight is not None and need[0]:
            dx = dy @ weight
        if weight is not None and need[2]:
            dw = dy.t() @ x
        if ctx.has_bias and need[3]:
            db = dy.sum(dim=0)
        if need[5]:
            dlb = dy.t() @ _gated(h, gates, scale, shared)
        if need[1] or need[4] or need[6]:
            dhg = (dy @ lora_b).mul_(scale).view(t, n, -1)  # (T, N, r)
            if shared:
                if need[6]:
                    dg = (dhg * h.unsqueeze(1)).sum(dim=-1)
                dh = (dhg * gates.unsqueeze(-1)).sum(dim=1)  # (T, r)
            else:
                if need[6]:
                    dg = (dhg * h.view(t, n, -1)).sum(dim=-1)
                dh = (dhg * gates.unsqueeze(-1)).view(t, -1)  # (T, N·r)
            if need[4]:
                da = dh.t() @ x_drop
            if need[1]:
                if ctx.same_input and dx is not None:
                    dx.addmm_(dh, lora_a)
                else:
                    dx_drop = dh @ lora_a
        return dx, dx_drop, dw, db, da, dlb, dg, None, None


def fused_ilora(
    x: Tensor,
    x_drop: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    lora_a: Tensor,
    lora_b: Tensor,
    gates: Tensor,
    scale: float,
    shared: bool,
) -> Tensor:
    """Apply :class:`FusedILoRA` to 2-D inputs ``(T, d_in)``; gates ``(T, N)`` in the compute dtype."""
    return FusedILoRA.apply(x, x_drop, weight, bias, lora_a, lora_b, gates, scale, shared)
