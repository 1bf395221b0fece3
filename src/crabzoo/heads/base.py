"""The contract of a mask head: mask-token hidden states of the LLM + visual feature grids -> mask logits.

:class:`~crabzoo.paradigms.modular.SegmentationAVLLM` builds its head from a factory ``(llm_dim, visual_dim)``
and talks to it only through this interface, so any head (crabzoo's :class:`~crabzoo.heads.mask_decoder.MaskDecoder`,
Crab's own :class:`~crabzoo.heads.crab_seg.CrabSegModule`, a user's subclass) is chosen by ``class_path``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

from torch import Tensor, nn

from crabzoo.errors import CrabzooError


class MaskHead(nn.Module, ABC):
    """Mask tokens + visual layers -> mask logits, with its own loss and threshold.

    Subclasses set, in ``__init__``:

    Attributes:
        num_scales: Visual layers the head reads (one per scale).
        tokens_per_scale: Mask tokens per scale.
        mask_size: ``(H, W)`` of the logits and of the masks :meth:`predict` returns.
        state_offset: Which hidden state stands for a mask token, relative to the token's position: ``0`` the
            state at the token itself, ``-1`` the state before it (the one that predicts the token).
    """

    num_scales: int
    tokens_per_scale: int
    mask_size: tuple[int, int]
    state_offset: int = 0

    @property
    def num_mask_tokens(self) -> int:
        """Mask tokens the LLM must emit (``num_scales * tokens_per_scale``)."""
        return self.num_scales * self.tokens_per_scale

    @abstractmethod
    def forward(self, mask_token_states: Tensor, visual_layers: Sequence[Tensor]) -> Tensor:
        """Mask logits from ``(B, num_mask_tokens, llm_dim)`` states (scale-major) and ``num_scales`` grids
        ``(B, N, visual_dim)`` (``N`` a square number of patches); the shape of the logits is the head's own."""

    @abstractmethod
    def predict(self, logits: Tensor) -> Tensor:
        """Boolean masks ``(B, H, W)`` at ``mask_size`` from :meth:`forward`'s logits."""

    @abstractmethod
    def loss(self, logits: Tensor, target_masks: Tensor) -> Tensor:
        """Scalar loss of :meth:`forward`'s logits against binary ``(B, H, W)`` targets."""


def square_grid(layer: Tensor, owner: str) -> Tensor:
    """``(B, N, D)`` patch tokens (row-major, CLS dropped) -> ``(B, D, s, s)`` with ``s * s = N``.

    Raises:
        CrabzooError: ``layer`` is not 3-D or ``N`` is not a square.
    """
    if layer.dim() != 3:
        raise CrabzooError(f"{owner} visual layers must be (B, N, D) token grids, got {tuple(layer.shape)}")
    b, n, d = layer.shape
    side = math.isqrt(n)
    if side * side != n:
        raise CrabzooError(f"{owner} needs square patch grids (CLS token dropped), got N={n} tokens")
    return layer.transpose(1, 2).reshape(b, d, side, side)
