"""Temporal + spatial mean pooling connector (Video-ChatGPT's design)."""

from __future__ import annotations

import torch

from crabzoo.connectors.base import Connector
from crabzoo.connectors.mlp import build_mlp
from crabzoo.encoders.base import MediaFeatures


class PoolingConnector(Connector):
    """Mean over time per spatial token, mean over space per frame, concatenated, then a linear projection.

    Video-ChatGPT pools ``T`` frames of ``N`` patch tokens into ``N`` temporal tokens (each patch averaged over
    the frames) followed by ``T`` spatial tokens (each frame averaged over its patches): 256 + 100 tokens for
    100 CLIP frames, projected by one linear layer to the LLM width.

    Representation: the result has ``T' = N + T`` steps of one token each, ``(B, N + T, 1, out_dim)``:
    steps ``0 .. N-1`` are the temporal tokens (timestamp: the first real frame's, always real when the clip has
    a real frame), steps ``N .. N+T-1`` the spatial tokens (timestamp and mask of their frame). Taking the real
    steps in order gives exactly Video-ChatGPT's token sequence; padded frames are excluded from the temporal
    mean, so a batch's padding never changes a sample's real tokens.

    Args:
        in_dim: Encoder width.
        out_dim: LLM width.
        mlp_depth: 1 = linear (Video-ChatGPT); 2 = Linear-GELU-Linear.
    """

    def __init__(self, in_dim: int, out_dim: int, mlp_depth: int = 1) -> None:
        super().__init__(in_dim, out_dim)
        self.proj = build_mlp(in_dim, out_dim, mlp_depth)

    def forward(self, features: MediaFeatures) -> MediaFeatures:
        x, mask, ts = features.tokens, features.mask, features.timestamps
        b, t, n, d = x.shape
        weights = mask.to(x.dtype)[:, :, None, None]  # (B, T, 1, 1)
        temporal = (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # (B, N, D)
        spatial = x.mean(2)  # (B, T, D)
        tokens = self.proj(torch.cat([temporal, spatial], dim=1)).unsqueeze(2)  # (B, N + T, 1, out)
        any_real = mask.any(1, keepdim=True)
        first = torch.where(mask, torch.arange(t, device=mask.device), t).amin(1).clamp(max=t - 1)
        t0 = ts.gather(1, first[:, None])
        timestamps = torch.cat([t0.expand(b, n), ts], dim=1)
        new_mask = torch.cat([any_real.expand(b, n), mask], dim=1)
        return MediaFeatures(tokens, timestamps, new_mask)
