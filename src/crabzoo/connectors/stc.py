"""Spatio-temporal convolution connector (VideoLLaMA2's STC design).

Per frame, a RegNet stage (``depth`` bottleneck blocks, SiLU, LayerNorm2d) mixes the patch grid and widens it to
``hidden_dim``; a 3D convolution with kernel = stride = ``downsample`` (2, 2, 2) halves time, height and width;
a second RegNet stage mixes the downsampled grid; a 2-layer MLP reads out each token in the LLM width. The
RegNet stages are timm's ``RegStage``, the building block VideoLLaMA2 uses.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crabzoo.connectors.base import Connector
from crabzoo.connectors.mlp import build_mlp, square_side
from crabzoo.encoders.base import MediaFeatures
from crabzoo.errors import CrabzooError


def _out_len(n: int, k: int, p: int) -> int:
    """Windows of stride ``k`` starting at ``-p`` needed to cover ``n`` inputs (ceil mode: none is dropped)."""
    return (n - 1 + p) // k + 1


class STCConnector(Connector):
    """RegStage -> Conv3d downsampling (time x2, space x2) -> RegStage -> MLP, over ``(T, H', W')`` grids.

    Shapes: ``(B, T, N, in_dim)`` with ``N = S x S`` -> ``(B, T', N', out_dim)`` where, for kernel/stride
    ``k = (kt, ks, ks)`` and zero padding ``p``, ``T' = (T - 1 + p) // kt + 1`` and ``N' = S'^2`` with
    ``S' = (S - 1 + p) // ks + 1``: the convolution runs in ceil mode (the far end is zero-padded as needed), so
    no frame or patch row is dropped and a single image (``T = 1``) gives one step. Where the sizes divide
    evenly this equals a plain ``Conv3d(padding=p)``. Output step ``j`` covers input steps
    ``[j*kt - p, j*kt - p + kt)``: its
    timestamp is the first of them inside the clip, and it is real when any of them is real. Padded input steps
    are zeroed before the 3D convolution, exactly like the convolution's own zero padding, so the padding of a
    batch never changes a sample's real output steps.

    VideoLLaMA2 (2.0) uses ``padding=1`` (16 x 16 CLIP grid -> 9 x 9, 8 frames -> 5 steps); its 2.1 variant
    uses ``padding=0`` (16 x 16 -> 8 x 8, 8 frames -> 4 steps). ``hidden_dim`` defaults to ``out_dim`` as in VideoLLaMA2.

    Args:
        in_dim: Encoder width.
        out_dim: LLM width.
        hidden_dim: Width of the convolutional stages (default ``out_dim``).
        depth: Bottleneck blocks per RegNet stage (4 in VideoLLaMA2; >= 1).
        downsample: ``(time, height, width)`` kernel and stride of the 3D convolution.
        padding: Zero padding of the 3D convolution on every side.
        mlp_depth: Depth of the read-out MLP.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int | None = None,
        depth: int = 4,
        downsample: Sequence[int] = (2, 2, 2),
        padding: int = 1,
        mlp_depth: int = 2,
    ) -> None:
        super().__init__(in_dim, out_dim)
        if depth < 1:
            raise CrabzooError(f"STCConnector depth must be >= 1, got {depth}")
        if len(downsample) != 3 or min(downsample) < 1:
            raise CrabzooError(f"STCConnector downsample must be three positive ints (t, h, w), got {downsample}")
        from timm.layers import LayerNorm2d  # imported here: timm is heavy and only this connector needs it
        from timm.models.regnet import RegStage

        hidden = hidden_dim or out_dim
        self.hidden_dim, self.downsample, self.padding = hidden, tuple(int(v) for v in downsample), int(padding)
        stage = dict(stride=1, dilation=1, act_layer=nn.SiLU, norm_layer=LayerNorm2d)
        self.s1 = RegStage(depth=depth, in_chs=in_dim, out_chs=hidden, **stage)
        self.sampler = nn.Sequential(
            nn.Conv3d(hidden, hidden, kernel_size=self.downsample, stride=self.downsample),  # padded in forward
            nn.SiLU(),
        )
        self.s2 = RegStage(depth=depth, in_chs=hidden, out_chs=hidden, **stage)
        self.readout = build_mlp(hidden, out_dim, mlp_depth)

    def _time_axis(self, timestamps: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Timestamps and mask of the downsampled steps."""
        kt, p = self.downsample[0], self.padding
        t = mask.shape[1]
        t_out = _out_len(t, kt, p)
        starts = torch.arange(t_out, device=mask.device) * kt - p
        idx = (starts[:, None] + torch.arange(kt, device=mask.device)).clamp(-1, t)  # (T', kt), -1/T = padding
        inside = (idx >= 0) & (idx < t)
        safe = idx.clamp(0, t - 1)
        real = (mask[:, safe] & inside).any(-1)
        first = torch.where(inside, safe, t).amin(-1).clamp(max=t - 1)  # first input step inside the clip
        return timestamps[:, first], real

    def forward(self, features: MediaFeatures) -> MediaFeatures:
        x = features.tokens
        b, t, n, d = x.shape
        side = square_side(n, "STCConnector")
        grid = x.reshape(b * t, side, side, d).permute(0, 3, 1, 2)  # (BT, D, S, S)
        grid = self.s1(grid)
        h = grid.shape[1]
        vol = grid.reshape(b, t, h, side, side) * features.mask[:, :, None, None, None].to(grid.dtype)
        p = self.padding
        extra = [_out_len(n_, k, p) * k - (n_ + 2 * p) for n_, k in zip((side, side, t), self.downsample[::-1])]
        vol = F.pad(vol.transpose(1, 2), (p, p + extra[0], p, p + extra[1], p, p + extra[2]))
        vol = self.sampler(vol)  # (B, H, T', S', S')
        t2, s2 = vol.shape[2], vol.shape[3]
        grid = self.s2(vol.transpose(1, 2).reshape(b * t2, h, s2, s2))
        tokens = self.readout(grid.flatten(2).transpose(1, 2)).reshape(b, t2, s2 * s2, self.out_dim)
        timestamps, mask = self._time_axis(features.timestamps, features.mask)
        return MediaFeatures(tokens, timestamps, mask)
