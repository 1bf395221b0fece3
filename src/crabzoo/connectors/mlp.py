"""Per-token linear or MLP projector (LLaVA-style), with optional token pooling to cut sequence length."""

from __future__ import annotations

import math
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from crabzoo.connectors.base import Connector
from crabzoo.encoders.base import MediaFeatures
from crabzoo.errors import CrabzooError


def build_mlp(in_dim: int, out_dim: int, depth: int = 2) -> nn.Sequential:
    """``Linear(in, out)`` followed by ``depth - 1`` blocks of ``GELU, Linear(out, out)``.

    ``depth=1`` is a linear projector; ``depth=2`` is the "mlp2x_gelu" projector used by LLaVA, VideoLLaMA2 and
    Crab after its Q-Formers.
    """
    if depth < 1:
        raise CrabzooError(f"MLP depth must be >= 1, got {depth}")
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
    for _ in range(depth - 1):
        layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
    return nn.Sequential(*layers)


def square_side(n: int, what: str) -> int:
    """Side of a square token grid of ``n`` tokens, or a :class:`CrabzooError` naming ``what`` needs it."""
    side = math.isqrt(n)
    if side * side != n:
        raise CrabzooError(
            f"{what} needs a square grid of tokens per time step, got N={n}; use an encoder that keeps the "
            "patch grid (no CLS token, e.g. CLIP patch tokens 16x16=256) or a connector without a grid"
        )
    return side


class MLPConnector(Connector):
    """Projects every token with a linear layer or a small MLP; optionally averages neighbouring tokens first.

    Shapes: ``(B, T, N, in_dim) -> (B, T, N', out_dim)`` with ``N' = ceil(N / pool)`` (``pool_mode="1d"``) or
    ``N' = ceil(sqrt(N) / pool)^2`` (``pool_mode="2d"``, square grids). Timestamps and mask are unchanged.

    Args:
        in_dim: Encoder width.
        out_dim: LLM width.
        depth: 1 = linear, 2 = Linear-GELU-Linear (default), ...
        pool: Average groups of ``pool`` neighbouring tokens (1 = no pooling). Partial groups at the end are
            averaged over the tokens they hold.
        pool_mode: ``"1d"`` pools consecutive tokens; ``"2d"`` pools ``pool x pool`` patches of a square grid.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        depth: int = 2,
        pool: int = 1,
        pool_mode: Literal["1d", "2d"] = "1d",
    ) -> None:
        super().__init__(in_dim, out_dim)
        if pool < 1:
            raise CrabzooError(f"MLPConnector pool must be >= 1, got {pool}")
        if pool_mode not in ("1d", "2d"):
            raise CrabzooError(f"MLPConnector pool_mode must be '1d' or '2d', got {pool_mode!r}")
        self.pool, self.pool_mode = pool, pool_mode
        self.proj = build_mlp(in_dim, out_dim, depth)

    def _pool(self, x: Tensor) -> Tensor:
        if self.pool == 1:
            return x
        b, t, n, d = x.shape
        flat = x.reshape(b * t, n, d).transpose(1, 2)  # (BT, D, N)
        if self.pool_mode == "1d":
            out = F.avg_pool1d(flat, self.pool, ceil_mode=True)
        else:
            side = square_side(n, "MLPConnector(pool_mode='2d')")
            grid = flat.reshape(b * t, d, side, side)
            out = F.avg_pool2d(grid, self.pool, ceil_mode=True).flatten(2)
        return out.transpose(1, 2).reshape(b, t, -1, d)

    def forward(self, features: MediaFeatures) -> MediaFeatures:
        return features.replace(self.proj(self._pool(features.tokens)))
