"""Window-level Q-Former over time-aligned audio and visual tokens (video-SALMONN-style fusion).

video-SALMONN synchronises audio and visual features in time and reads them with a Q-Former per time window
(its multi-resolution causal Q-Former runs several window sizes; this connector is the single-resolution
form). Both streams are grouped into windows of ``window`` seconds by their timestamps, and one Q-Former with
``num_queries`` learned queries reads each window's audio and visual tokens together.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from crabzoo.connectors.base import FusionConnector
from crabzoo.connectors.mlp import build_mlp
from crabzoo.connectors.qformer import QFormer
from crabzoo.encoders.base import MediaFeatures
from crabzoo.errors import CrabzooError


def _window_ids(features: MediaFeatures, window: float) -> Tensor:
    """Window index of every step, ``-1`` for padded steps."""
    wid = torch.floor(features.timestamps.float() / window + 1e-6).long()
    return torch.where(features.mask, wid.clamp(min=0), -1)


def _group(tokens: Tensor, wid: Tensor, num_windows: int) -> tuple[Tensor, Tensor]:
    """Scatter ``(B, T, N, H)`` steps into ``(B, W, S, N, H)`` window slots; returns slots and their validity."""
    b, t, n, h = tokens.shape
    earlier = torch.ones(t, t, dtype=torch.bool, device=wid.device).tril(-1)  # earlier[t, t'] = t' < t
    slot = ((wid[:, :, None] == wid[:, None, :]) & earlier).sum(-1)  # (B, T): rank within its window
    real = wid >= 0
    slots = int(slot[real].max()) + 1 if bool(real.any()) else 1
    dense = tokens.new_zeros(b, num_windows, slots, n, h)
    valid = torch.zeros(b, num_windows, slots, dtype=torch.bool, device=tokens.device)
    bi, ti = real.nonzero(as_tuple=True)
    dense = dense.index_put((bi, wid[bi, ti], slot[bi, ti]), tokens[bi, ti])
    valid[bi, wid[bi, ti], slot[bi, ti]] = True
    return dense, valid


class WindowQFormerConnector(FusionConnector):
    """Fuses audio and visual streams into ``(B, W, num_queries, out_dim)``: one Q-Former read per time window.

    Each stream is layer-normalised and projected to ``hidden_dim`` and tagged with a learned modality
    embedding. Step ``t`` of a stream falls in window ``floor(timestamp / window)``; the Q-Former's queries
    cross-attend to all real tokens of both streams in that window (padded steps are masked out of the
    attention). ``W`` is the number of windows up to the last real step in the batch; a window is real when it
    holds any real step, and its timestamp is its start, ``w * window``.

    Args:
        audio_dim: Audio encoder width.
        visual_dim: Visual encoder width.
        out_dim: LLM width.
        window: Window length in seconds (e.g. 1.0 or 2.0; video-SALMONN's finest resolution is 0.5).
        num_queries: Learned queries per window (tokens per window for the LLM).
        hidden_dim: Q-Former width.
        num_heads: Q-Former heads.
        num_layers: Q-Former layers.
        ffn_dim: Q-Former feed-forward width.
        dropout: Q-Former dropout.
        mlp_depth: Depth of the projector after the Q-Former.
    """

    def __init__(
        self,
        audio_dim: int,
        visual_dim: int,
        out_dim: int,
        window: float = 1.0,
        num_queries: int = 32,
        hidden_dim: int = 768,
        num_heads: int = 12,
        num_layers: int = 2,
        ffn_dim: int = 3072,
        dropout: float = 0.1,
        mlp_depth: int = 2,
    ) -> None:
        super().__init__(audio_dim, visual_dim, out_dim)
        if window <= 0:
            raise CrabzooError(f"WindowQFormerConnector window must be > 0 seconds, got {window}")
        self.window, self.num_queries = float(window), num_queries
        self.audio_in = nn.Sequential(nn.LayerNorm(audio_dim), nn.Linear(audio_dim, hidden_dim))
        self.visual_in = nn.Sequential(nn.LayerNorm(visual_dim), nn.Linear(visual_dim, hidden_dim))
        self.modality_embed = nn.Parameter(torch.zeros(2, hidden_dim))
        nn.init.normal_(self.modality_embed, std=0.02)
        self.qformer = QFormer(hidden_dim, num_queries, hidden_dim, num_heads, num_layers, ffn_dim, dropout)
        self.proj = build_mlp(hidden_dim, out_dim, mlp_depth)

    def forward(self, audio: MediaFeatures, visual: MediaFeatures) -> MediaFeatures:
        if audio.tokens.shape[0] != visual.tokens.shape[0]:
            raise CrabzooError(
                f"WindowQFormerConnector: audio batch {audio.tokens.shape[0]} != visual batch {visual.tokens.shape[0]}"
            )
        wa, wv = _window_ids(audio, self.window), _window_ids(visual, self.window)
        num_windows = max(int(wa.max()), int(wv.max()), 0) + 1
        a = self.audio_in(audio.tokens) + self.modality_embed[0]
        v = self.visual_in(visual.tokens) + self.modality_embed[1]
        da, ma = _group(a, wa, num_windows)
        dv, mv = _group(v, wv, num_windows)
        b, w, hidden = a.shape[0], num_windows, a.shape[-1]
        na, nv = a.shape[2], v.shape[2]
        memory = torch.cat([da.reshape(b * w, -1, hidden), dv.reshape(b * w, -1, hidden)], dim=1)
        keys = torch.cat([ma.repeat_interleave(na, dim=2).reshape(b * w, -1), mv.repeat_interleave(nv, dim=2).reshape(b * w, -1)], dim=1)
        real = keys.any(-1)  # (B*W,)
        keys = keys.clone()
        keys[:, 0] |= ~real  # an empty window attends to one zero slot; it is masked out below
        out = self.proj(self.qformer(memory, keys)).reshape(b, w, self.num_queries, self.out_dim)
        timestamps = (torch.arange(w, device=out.device, dtype=torch.float32) * self.window).expand(b, w)
        return MediaFeatures(out, timestamps, real.reshape(b, w))
