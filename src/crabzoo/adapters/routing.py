"""Routing of I-LoRA heads: gates per token and load-balancing losses.

All gates are probabilities computed in fp32 (float64 for float64 inputs): ``(..., N)`` tensors whose last
axis sums to one.
"""

from __future__ import annotations

import torch
from torch import Tensor

ROUTINGS: tuple[str, ...] = ("soft", "topk", "task")
"""``soft``: dense softmax of the router (the paper); ``topk``: the same, keeping the k largest gates
(renormalised to sum to one); ``task``: a learned gate per task id, the same for every token of a sample."""

BALANCE_LOSSES: tuple[str, ...] = ("cv2", "switch")


def softmax32(logits: Tensor) -> Tensor:
    """Softmax over the last axis in fp32 (or float64 for float64 logits, for exact reference checks)."""
    return torch.softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))


def soft_gates(logits: Tensor) -> Tensor:
    """Dense per-token softmax in fp32."""
    return softmax32(logits)


def topk_gates(probs: Tensor, k: int) -> Tensor:
    """Keep the ``k`` largest gates of each token, zero the others, renormalise to sum to one.

    Args:
        probs: ``(..., N)`` probabilities.
        k: Heads kept per token (``1 <= k <= N``).
    """
    index = probs.topk(k, dim=-1).indices
    mask = torch.zeros_like(probs).scatter_(-1, index, 1.0)
    kept = probs * mask
    return kept / kept.sum(dim=-1, keepdim=True)


def task_gates(task_logits: Tensor, task_ids: Tensor, x_shape: torch.Size) -> Tensor:
    """Per-sample gates from a task table, broadcast over the sample's tokens.

    Args:
        task_logits: ``(n_tasks, N)`` learned logits.
        task_ids: ``(B,)`` task id of each sample, or ``(B, L)`` of each token (packed rows, whose samples may
            come from different tasks).
        x_shape: Shape of the layer input ``(B, ..., d_in)`` (``(B, L, d_in)`` for per-token ids).
    """
    if task_ids.dim() == 2:
        return softmax32(task_logits[task_ids])  # (B, L, N)
    probs = softmax32(task_logits[task_ids])  # (B, N)
    view = (probs.shape[0],) + (1,) * (len(x_shape) - 2) + (probs.shape[1],)
    return probs.view(view).expand(*x_shape[:-1], probs.shape[1])


def cv_squared_loss(probs: Tensor) -> Tensor:
    """Squared coefficient of variation of the heads' importance (sum of gates over tokens).

    Zero when every head gets the same total gate; ``0`` for a single head.
    """
    importance = probs.reshape(-1, probs.shape[-1]).sum(dim=0)
    if importance.numel() < 2:
        return importance.sum() * 0.0
    return importance.var() / (importance.mean() ** 2 + 1e-10)


def switch_loss(probs: Tensor, gates: Tensor) -> Tensor:
    """Switch-Transformer balance loss ``N * sum_i f_i * P_i``.

    ``f_i`` is the share of tokens whose largest used gate is head ``i`` (not differentiable); ``P_i`` is the
    mean router probability of head ``i`` (differentiable). Equals 1 for perfectly balanced routing.

    Args:
        probs: ``(..., N)`` router probabilities before any top-k.
        gates: ``(..., N)`` gates actually used (after top-k).
    """
    n = probs.shape[-1]
    flat_p = probs.reshape(-1, n)
    top1 = gates.reshape(-1, n).argmax(dim=-1)
    frac = torch.bincount(top1, minlength=n).to(flat_p.dtype) / top1.numel()
    return n * (frac * flat_p.mean(dim=0)).sum()


def balance_loss(kind: str, probs: Tensor, gates: Tensor) -> Tensor:
    """Dispatch to :func:`cv_squared_loss` or :func:`switch_loss`."""
    if kind == "cv2":
        return cv_squared_loss(gates)
    return switch_loss(probs, gates)
