"""A mask decoder after Crab's segmentation branch: mask-token hidden states + CLIP feature maps -> mask logits.

crabzoo's own, smaller layout (SAM-style output token and hypernetwork); Crab's exact module, which loads its
released stage-3 weights, is :class:`~crabzoo.heads.crab_seg.CrabSegModule`.

The LLM emits ``num_scales x tokens_per_scale`` mask tokens (``<mask_0> .. <mask_5>``: 2 scales x 3). Their last
hidden states go through an MLP to ``prompt_dim``-wide prompts. Per scale, one CLIP layer's patch grid goes
through a neck (1x1 conv to ``prompt_dim``, LayerNorm2d, 3x3 conv, LayerNorm2d); scales after the first are
upsampled 2x and gated by the previous scale's mask; a two-way transformer (SAM's mask decoder) lets a learned
output token plus the scale's prompts and the image attend to each other; the upscaled image embedding dotted
with a hypernetwork projection of the output token gives the scale's mask logits. The final mask is the mean
of the scales' logits; the loss is BCE + 0.5 Dice on it.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crabzoo.errors import CrabzooError
from crabzoo.heads.base import MaskHead, square_grid


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def image_neck(visual_dim: int, dim: int) -> nn.Sequential:
    """Crab's neck from visual features to decoder width: 1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d (no biases)."""
    return nn.Sequential(
        nn.Conv2d(visual_dim, dim, kernel_size=1, bias=False),
        LayerNorm2d(dim),
        nn.Conv2d(dim, dim, kernel_size=3, padding=1, bias=False),
        LayerNorm2d(dim),
    )


class RandomFourierPositions(nn.Module):
    """2D positional encoding with random Gaussian frequencies (SAM); the frequencies are a saved buffer."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2:
            raise CrabzooError(f"prompt_dim must be even for the positional encoding, got {dim}")
        self.register_buffer("freqs", torch.randn(2, dim // 2))

    def forward(self, h: int, w: int) -> Tensor:
        """``(dim, h, w)`` encoding of the pixel centres of an ``h x w`` grid."""
        return fourier_positions(self.freqs, h, w)


def fourier_positions(freqs: Tensor, h: int, w: int) -> Tensor:
    """``(2 F, h, w)`` sines and cosines of ``2 pi (2 c - 1) @ freqs`` at the pixel centres ``c = (x, y)`` in
    ``[0, 1]^2`` of an ``h x w`` grid, for ``(2, F)`` frequencies."""
    ys = (torch.arange(h, device=freqs.device, dtype=freqs.dtype) + 0.5) / h
    xs = (torch.arange(w, device=freqs.device, dtype=freqs.dtype) + 0.5) / w
    coords = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2) as (x, y)
    angles = 2 * math.pi * (2 * coords - 1) @ freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1).permute(2, 0, 1)


class Attention(nn.Module):
    """Multi-head attention whose internal width is ``dim // downsample`` (SAM's cheaper cross-attention)."""

    def __init__(self, dim: int, num_heads: int, downsample: int = 1) -> None:
        super().__init__()
        inner = dim // downsample
        if inner % num_heads:
            raise CrabzooError(f"attention width {inner} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(dim, inner), nn.Linear(dim, inner), nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        def heads(x: Tensor) -> Tensor:
            b, n, c = x.shape
            return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.q_proj(q)), heads(self.k_proj(k)), heads(self.v_proj(v)))
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1))


class TwoWayBlock(nn.Module):
    """Token self-attention, token->image cross-attention, token MLP, image->token cross-attention."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, skip_first_pe: bool) -> None:
        super().__init__()
        self.skip_first_pe = skip_first_pe
        self.self_attn = Attention(dim, num_heads)
        self.token_to_image = Attention(dim, num_heads, downsample=2)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, dim))
        self.image_to_token = Attention(dim, num_heads, downsample=2)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(4))

    def forward(self, tokens: Tensor, image: Tensor, token_pe: Tensor, image_pe: Tensor) -> tuple[Tensor, Tensor]:
        if self.skip_first_pe:
            tokens = self.self_attn(tokens, tokens, tokens)
        else:
            q = tokens + token_pe
            tokens = tokens + self.self_attn(q, q, tokens)
        tokens = self.norms[0](tokens)
        tokens = self.norms[1](tokens + self.token_to_image(tokens + token_pe, image + image_pe, image))
        tokens = self.norms[2](tokens + self.mlp(tokens))
        image = self.norms[3](image + self.image_to_token(image + image_pe, tokens + token_pe, tokens))
        return tokens, image


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks, then a final token->image attention (SAM's mask-decoder transformer)."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TwoWayBlock(dim, num_heads, mlp_dim, skip_first_pe=i == 0) for i in range(depth))
        self.final_attn = Attention(dim, num_heads, downsample=2)
        self.final_norm = nn.LayerNorm(dim)

    def forward(self, image: Tensor, image_pe: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """``image (B, C, H, W)``, ``image_pe (C, H, W)``, ``tokens (B, L, C)`` -> tokens, image ``(B, HW, C)``."""
        b = image.shape[0]
        image = image.flatten(2).transpose(1, 2)
        image_pe = image_pe.flatten(1).transpose(0, 1).unsqueeze(0).expand(b, -1, -1)
        token_pe, x = tokens, tokens
        for block in self.blocks:
            x, image = block(x, image, token_pe, image_pe)
        x = self.final_norm(x + self.final_attn(x + token_pe, image + image_pe, image))
        return x, image


def dice_loss(logits: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """Mean over masks of ``1 - (2 sum(p t) + s) / (sum(p) + sum(t) + s)`` with ``p = sigmoid(logits)``."""
    p = logits.sigmoid().flatten(1)
    t = target.flatten(1)
    return (1 - (2 * (p * t).sum(-1) + smooth) / (p.sum(-1) + t.sum(-1) + smooth)).mean()


class MaskDecoder(MaskHead):
    """Mask tokens of the LLM + multi-scale CLIP feature grids -> mask logits (crabzoo's layout of Crab's branch).

    Args:
        llm_dim: Hidden size of the LLM (width of the mask-token hidden states).
        visual_dim: Width of the visual encoder layers fed to the neck (1024 for CLIP ViT-L/14).
        num_scales: Scales (Crab: 2, one CLIP layer each: 14 and 22).
        tokens_per_scale: Mask tokens per scale (Crab: 3, so ``<mask_0> .. <mask_5>``).
        prompt_dim: Width of the prompts and of the decoder (SAM: 256).
        depth: Two-way blocks per scale (SAM/Crab: 2).
        num_heads: Attention heads (SAM/Crab: 8).
        mlp_dim: Token MLP width in the two-way blocks (SAM/Crab: 2048).
        mask_size: ``(H, W)`` (or one int) of the returned logits (Crab: 224).
        bce_weight: Weight of the BCE term of :meth:`loss`.
        dice_weight: Weight of the Dice term of :meth:`loss` (Crab: 0.5).
    """

    def __init__(
        self,
        llm_dim: int,
        visual_dim: int,
        num_scales: int = 2,
        tokens_per_scale: int = 3,
        prompt_dim: int = 256,
        depth: int = 2,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        mask_size: int | Sequence[int] = 224,
        bce_weight: float = 1.0,
        dice_weight: float = 0.5,
    ) -> None:
        super().__init__()
        if prompt_dim % 8:
            raise CrabzooError(f"MaskDecoder prompt_dim must be a multiple of 8, got {prompt_dim}")
        self.num_scales, self.tokens_per_scale = num_scales, tokens_per_scale
        self.mask_size = (mask_size, mask_size) if isinstance(mask_size, int) else tuple(int(s) for s in mask_size)
        self.bce_weight, self.dice_weight = bce_weight, dice_weight
        p = prompt_dim
        self.prompt_mlp = nn.Sequential(nn.Linear(llm_dim, llm_dim), nn.ReLU(), nn.Linear(llm_dim, p))
        self.neck = image_neck(visual_dim, p)
        self.upsample = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(p, p, kernel_size=2, stride=2), LayerNorm2d(p), nn.GELU())
            for _ in range(num_scales - 1)
        )
        self.positions = RandomFourierPositions(p)
        self.no_mask_embed = nn.Parameter(torch.randn(p) * 0.02)
        self.output_tokens = nn.Parameter(torch.randn(num_scales, p) * 0.02)
        self.level_embed = nn.Parameter(torch.randn(num_scales, p) * 0.02)
        self.transformers = nn.ModuleList(TwoWayTransformer(p, depth, num_heads, mlp_dim) for _ in range(num_scales))
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(p, p // 4, kernel_size=2, stride=2),
            LayerNorm2d(p // 4),
            nn.GELU(),
            nn.ConvTranspose2d(p // 4, p // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.hyper_mlp = nn.Sequential(nn.Linear(p, p), nn.ReLU(), nn.Linear(p, p), nn.ReLU(), nn.Linear(p, p // 8))

    def forward(self, mask_token_states: Tensor, visual_layers: Sequence[Tensor]) -> Tensor:
        """Predict per-scale mask logits.

        Args:
            mask_token_states: ``(B, num_scales * tokens_per_scale, llm_dim)`` last hidden states of the mask
                tokens, scale-major (``<mask_0..2>`` = scale 0).
            visual_layers: ``num_scales`` tensors ``(B, N, visual_dim)`` with ``N`` a square grid of patches;
                layer ``s`` feeds scale ``s``.

        Returns:
            ``(B, num_scales, H, W)`` logits at ``mask_size``; :meth:`combine` gives the final mask logits.
        """
        b, k, _ = mask_token_states.shape
        if k != self.num_mask_tokens:
            raise CrabzooError(f"MaskDecoder expects {self.num_mask_tokens} mask-token states, got {k}")
        if len(visual_layers) != self.num_scales:
            raise CrabzooError(f"MaskDecoder expects {self.num_scales} visual layers, got {len(visual_layers)}")
        prompts = self.prompt_mlp(mask_token_states).reshape(b, self.num_scales, self.tokens_per_scale, -1)
        outputs: list[Tensor] = []
        previous: Tensor | None = None
        for s, layer in enumerate(visual_layers):
            image = self.neck(square_grid(layer, type(self).__name__))
            if s > 0:
                image = self.upsample[s - 1](image)
                gate = F.interpolate(previous, size=image.shape[-2:], mode="bilinear", align_corners=False)
                image = image * (1 + gate.sigmoid())
            image = image + self.no_mask_embed[:, None, None]
            h, w = image.shape[-2:]
            tokens = torch.cat([self.output_tokens[s].expand(b, 1, -1), prompts[:, s]], dim=1) + self.level_embed[s]
            hs, src = self.transformers[s](image, self.positions(h, w).to(image.dtype), tokens)
            up = self.output_upscaling(src.transpose(1, 2).reshape(b, -1, h, w))
            low = torch.einsum("bc,bchw->bhw", self.hyper_mlp(hs[:, 0]), up).unsqueeze(1)  # (B, 1, 4h, 4w)
            previous = low
            outputs.append(F.interpolate(low, size=self.mask_size, mode="bilinear", align_corners=False))
        return torch.cat(outputs, dim=1)

    @staticmethod
    def combine(logits: Tensor) -> Tensor:
        """Final mask logits ``(B, H, W)``: the mean of the scales (Crab's fixed 1/num_scales weights)."""
        return logits.mean(1)

    def predict(self, logits: Tensor) -> Tensor:
        """Boolean masks ``(B, H, W)``: sigmoid of the combined logits above 0.5."""
        return self.combine(logits) > 0

    def loss(self, logits: Tensor, target_masks: Tensor) -> Tensor:
        """``bce_weight * BCE + dice_weight * Dice`` of the combined logits against ``(B, H, W)`` targets.

        Targets are binary (bool or 0/1) and are resized (nearest) to ``mask_size`` when they differ.
        """
        final = self.combine(logits)
        target = target_masks.to(final.dtype)
        if target.dim() == 4:
            target = target[:, 0]
        if target.shape[-2:] != final.shape[-2:]:
            target = F.interpolate(target[:, None], size=final.shape[-2:], mode="nearest")[:, 0]
        bce = F.binary_cross_entropy_with_logits(final, target)
        return self.bce_weight * bce + self.dice_weight * dice_loss(final, target)
