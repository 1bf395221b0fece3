"""Sequence packing: several spliced samples in one row, each attending only to itself.

Packing happens after media splicing, because only then is each sample's length known (its media become a
number of embeddings that depends on the encoders and connectors). The data module marks training batches with
:class:`PackingCollate`; the paradigm splices every sample on its own, then :func:`pack_rows` lays the samples
of one batch out in rows of at most ``pack_length`` embeddings (:func:`pack_plan`):

* position ids restart at 0 for every sample;
* ``segments`` holds, per token, the index of its sample in the batch (``-1`` for the padding at a row's end);
  :func:`block_causal_mask` turns it into a block-diagonal causal 4D mask, so no token sees another sample;
* the label at each sample's first token is ignored (in an unpacked row nothing predicts the first token), so
  the per-sample losses equal the unpacked ones.

Only teacher-forced training passes are packed; generation and evaluation keep one left-padded row per sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from crabzoo.backbones.loss import IGNORE_INDEX
from crabzoo.errors import CrabzooError

PACKING_KEY = "packing"
"""Batch key under which :class:`PackingCollate` stores the packing options (``{"pack_length": int | None}``)."""


def pack_plan(lengths: Sequence[int], pack_length: int | None = None) -> list[list[int]]:
    """Group samples into as few rows of at most ``pack_length`` tokens as first-fit decreasing finds, balanced.

    First-fit decreasing gives the number of rows; the samples are then dealt, longest first, to the row with
    the fewest tokens so far, and that balanced plan is kept when its longest row is not longer than
    first-fit's (every row is padded to the longest one, so balanced rows carry less padding).

    Args:
        lengths: Length of every sample (after splicing).
        pack_length: Row capacity; ``None`` takes the longest sample, so rows never exceed the unpacked batch's
            length. A sample longer than the capacity gets a row of its own (nothing is cut).

    Returns:
        Sample indices per row, samples inside a row in order of placement.
    """
    if pack_length is not None and pack_length < 1:
        raise CrabzooError(f"pack_length must be >= 1 (or null for the batch's longest sample), got {pack_length}")
    capacity = max(lengths, default=0) if pack_length is None else pack_length
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    balanced: list[list[int]] = [[] for _ in rows]
    load = [0] * len(rows)
    for i in order:
        r = min(range(len(rows)), key=lambda r: (load[r], r))
        balanced[r].append(i)
        load[r] += lengths[i]
    first_fit_longest = max((sum(lengths[i] for i in row) for row in rows), default=0)
    return balanced if max(load, default=0) <= first_fit_longest else rows


@dataclass
class PackedRows:
    """The samples of one batch packed into rows.

    Attributes:
        inputs: Embeddings ``(R, L, D)``, right-padded with zeros.
        positions: Position ids ``(R, L)``, restarting at 0 per sample (0 on padding).
        labels: Labels ``(R, L)``; ``IGNORE_INDEX`` on prompts, media, padding and every sample's first token.
        segments: Sample index of every token ``(R, L)``; ``-1`` on padding.
        plan: Sample indices per row (:func:`pack_plan`).
    """

    inputs: Tensor
    positions: Tensor
    labels: Tensor
    segments: Tensor
    plan: list[list[int]]

    @property
    def num_samples(self) -> int:
        """Number of packed samples."""
        return sum(len(row) for row in self.plan)

    def real_tokens(self) -> Tensor:
        """``(R, L)`` bool, true on sample tokens (false on padding)."""
        return self.segments >= 0


def pack_rows(rows: Sequence[Tensor], labels: Sequence[Tensor], pack_length: int | None = None) -> PackedRows:
    """Lay spliced samples out in packed rows (see the module docstring).

    Args:
        rows: Per sample, its spliced embeddings ``(n_i, D)``.
        labels: Per sample, its labels ``(n_i,)`` aligned with ``rows``.
        pack_length: Row capacity (see :func:`pack_plan`).
    """
    lengths = [int(r.shape[0]) for r in rows]
    plan = pack_plan(lengths, pack_length)
    length = max(sum(lengths[i] for i in row) for row in plan)
    first = rows[0]
    inputs = first.new_zeros(len(plan), length, first.shape[-1])
    positions = torch.zeros(len(plan), length, dtype=torch.long, device=first.device)
    out_labels = torch.full((len(plan), length), IGNORE_INDEX, dtype=torch.long, device=first.device)
    segments = torch.full((len(plan), length), -1, dtype=torch.long, device=first.device)
    for r, row in enumerate(plan):
        start = 0
        for i in row:
            n = lengths[i]
            inputs[r, start : start + n] = rows[i]
            positions[r, start : start + n] = torch.arange(n, device=first.device)
            out_labels[r, start : start + n] = labels[i]
            out_labels[r, start] = IGNORE_INDEX
            segments[r, start : start + n] = i
            start += n
    return PackedRows(inputs, positions, out_labels, segments, plan)


def block_causal_mask(segments: Tensor, dtype: torch.dtype) -> Tensor:
    """Additive 4D attention mask ``(R, 1, L, L)``: 0 where query and key share a segment and the key is not later.

    Padding (segment ``-1``) attends to earlier padding of its row, so no query row is fully masked (a fully
    masked row would give NaN in SDPA); no sample token ever sees padding or another sample. The float form
    works with the ``sdpa`` and ``eager`` attention of ``transformers`` models, which pass a 4D mask through.

    Args:
        segments: Sample index per token ``(R, L)`` (:attr:`PackedRows.segments`).
        dtype: dtype of the attention scores (the embeddings' dtype).
    """
    length = segments.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segments.device).tril()
    same = segments.unsqueeze(-1) == segments.unsqueeze(-2)
    allowed = (same & causal).unsqueeze(1)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segments.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)


@dataclass
class PackingCollate:
    """A collate function that marks its batches for packing (picklable, for data workers).

    Args:
        collate: The processor's collate function.
        pack_length: Row capacity in embeddings after splicing (``None``: the batch's longest sample).
    """

    collate: Callable[[list[Any]], dict[str, Any]]
    pack_length: int | None = None

    def __call__(self, items: list[Any]) -> dict[str, Any]:
        batch = self.collate(items)
        batch[PACKING_KEY] = {"pack_length": self.pack_length}
        return batch
