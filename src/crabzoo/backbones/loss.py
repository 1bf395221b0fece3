"""Next-token cross-entropy computed only where labels supervise, in chunks.

Projecting every position onto a ~150k vocabulary and upcasting it to fp32 costs ``L x V x 4`` bytes (plus the
saved softmax) although usually only the assistant turns carry labels. :func:`supervised_loss` gathers the final
hidden states of supervised positions, runs the LM head and an fp32 cross-entropy on them ``chunk_size`` rows at a
time, and returns the same ``(loss, per_sample)`` as :func:`full_logits_loss`, the plain computation kept as the
reference (tests, ``benchmarks/loss_path.py``) and for models that only return logits.

Which positions are supervised is a data-dependent size, and reading a size from the accelerator stops the host
until the device catches up. The backbones therefore call :func:`supervised_index` on the labels *before* the
decoder runs (the device has little queued then) and hand the index to :func:`supervised_loss`, which then
needs no device-to-host synchronisation: the forward, the loss and the backward are queued in one go.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE_INDEX = -100
"""Label value of positions that carry no loss (prompt, media, padding)."""

CHUNK_SIZE = 1024
"""Supervised rows projected onto the vocabulary at a time."""


def supervised_index(labels: Tensor) -> Tensor:
    """Flat positions, in the ``(B, L - 1)`` grid of shifted labels, whose label supervises (int64, ascending).

    Position ``b * (L - 1) + t`` means: token ``t`` of row ``b`` predicts ``labels[b, t + 1]``.
    """
    return (labels[:, 1:] != IGNORE_INDEX).reshape(-1).nonzero().squeeze(1)


def supervised_loss(
    hidden: Tensor,
    labels: Tensor,
    head: nn.Module,
    chunk_size: int = CHUNK_SIZE,
    segments: Tensor | None = None,
    num_samples: int | None = None,
    index: Tensor | None = None,
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
        num_samples: Number of packed samples (default: the largest index in ``segments`` plus one, which reads
            a value from the device).
        index: :func:`supervised_index` of ``labels``, computed before the decoder ran; computed here when
            omitted (which waits for the device to finish the forward pass first).

    Returns:
        ``(mean over supervised tokens, mean per sample (B,))``; a sample without supervised tokens gets 0.
        With ``segments`` the per-sample means have one entry per packed sample, in sample order.
    """
    if index is None:
        index = supervised_index(labels)
    batch, length = labels.shape
    row_of = torch.div(index, length - 1, rounding_mode="floor")
    flat = index + row_of  # the same positions in the (B, L) grid: b * L + t
    rows = hidden.reshape(batch * length, hidden.shape[-1]).index_select(0, flat)
    targets = labels.reshape(-1).index_select(0, flat + 1)
    if segments is None:
        sample_of_row, n = row_of, batch
    else:  # the predicting token and its label share a sample: labels at a sample's first token are ignored
        sample_of_row = segments.reshape(-1).index_select(0, flat + 1)
        n = int(segments.max()) + 1 if num_samples is None else num_samples
    # at least one (possibly empty) chunk, so the head stays in the graph even without supervised tokens
    losses = [
        F.cross_entropy(head(rows[start : start + chunk_size]).float(), targets[start : start + chunk_size], reduction="none")
        for start in range(0, max(rows.shape[0], 1), chunk_size)
    ]
    token_loss = torch.cat(losses)
    counts = token_loss.new_zeros(n).index_add(0, sample_of_row, torch.ones_like(token_loss))
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
