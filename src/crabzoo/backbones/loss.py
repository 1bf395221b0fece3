"""Next-token cross-entropy computed only where labels supervise, in chunks.

Projecting every position onto a ~150k vocabulary and upcasting it to fp32 costs ``L x V x 4`` bytes (plus the
saved softmax) although usually only the assistant turns carry labels. :func:`supervised_loss` gathers the final
hidden states of supervised positions, runs the LM head and an fp32 cross-entropy on them ``chunk_size`` rows at a
time, and returns the same ``(loss, per_sample)`` as :func:`full_logits_loss`, the plain computation kept as the
reference (tests, ``benchmarks/loss_path.py``) and for models that only return logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE_INDEX = -100
"""Label value of positions that carry no loss (prompt, media, padding)."""

CHUNK_SIZE = 1024
"""Supervised rows projected onto the vocabulary at a time."""


def supervised_loss(
    hidden: Tensor,
    labels: Tensor,
    head: nn.Module,
    chunk_size: int = CHUNK_SIZE,
    segments: Tensor | None = None,
    num_samples: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Next-token cross-entropy over supervised positions.

    Position ``t`` predicts ``labels[:, t + 1]``; positions whose shifted label is ``IGNORE_INDEX`` are skipped
    before the LM head runs.

    Args:
        hidden: Final hidden states ``(B, L, D)`` (after the decoder's final norm).
        labels: Token labels ``(B, L)`` aligned with ``hidden`` (not shifted), ``IGNORE_INDEX`` where unsupervised.
        head: The LM head (``D -> V``).
        chunk_size: Rows per LM-head call; each chunk's logits are upcast to fp32 on their own.
        segments: For packed rows (:mod:`crabzoo.data.packing`), the sample index of every position ``(B, L)``
            (``-1`` on padding): per-sample means are then taken per sample, not per row.
        num_samples: Number of packed samples (default: the largest index in ``segments`` plus one).

    Returns:
        ``(mean over supervised tokens, mean per sample (B,))``; a sample without supervised tokens gets 0.
        With ``segments`` the per-sample means have one entry per packed sample, in sample order.
    """
    shift_labels = labels[:, 1:]
    mask = shift_labels != IGNORE_INDEX
    rows = hidden[:, :-1][mask]
    targets = shift_labels[mask]
    if segments is None:
        sample_of_row, n = mask.nonzero()[:, 0], labels.shape[0]
    else:  # the predicting token and its label share a sample: labels at a sample's first token are ignored
        sample_of_row = segments[:, 1:][mask]
        n = int(segments.max()) + 1 if num_samples is None else num_samples
    # at least one (possibly empty) chunk, so the head stays in the graph even without supervised tokens
    losses = [
        F.cross_entropy(head(rows[start : start + chunk_size]).float(), targets[start : start + chunk_size], reduction="none")
        for start in range(0, max(rows.shape[0], 1), chunk_size)
    ]
    token_loss = torch.cat(losses)
    counts = torch.bincount(sample_of_row, minlength=n).to(token_loss.dtype)
    sums = token_loss.new_zeros(n).index_add(0, sample_of_row, token_loss)
    per_sample = sums / counts.clamp(min=1)
    loss = token_loss.sum() / counts.sum().clamp(min=1)
    return loss, per_sample


def full_logits_loss(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Next-token cross-entropy from logits of every position (all upcast to fp32).

    Args:
        logits: ``(B, L, V)``.
        labels: ``(B, L)`` aligned with ``logits`` (not shifted), ``IGNORE_INDEX`` where unsupervised.

    Returns:
        ``(mean over supervised tokens, mean per sample (B,))``, as :func:`supervised_loss`.
    """
    shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:]
    token_loss = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view_as(shift_labels)
    valid = (shift_labels != IGNORE_INDEX).float()
    per_sample = (token_loss * valid).sum(-1) / valid.sum(-1).clamp(min=1)
    return (token_loss * valid).sum() / valid.sum().clamp(min=1), per_sample
