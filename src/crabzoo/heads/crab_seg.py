"""Crab's own segmentation module (``seg_module`` of GeWu-Lab/Crab), with its parameter names and shapes.

Its state dict matches the one Crab saves under ``base_model.model.model.seg_module.`` (the stage-3 files
``avs_finetune_weights.bin`` / ``avss_finetune_weights.bin``), so :mod:`crabzoo.paradigms.released` loads them
as they are. What it computes, per sample:

1. The six mask-token states (scale-major, each the LLM's last hidden state one position before its
   ``<mask_k>`` token, the state that predicts it) go through ``text_hidden_fcs`` (Linear, ReLU, Linear to
   ``prompt_dim``); the three prompts of a scale are averaged (Crab's fixed 1/3 weights): one prompt per scale.
2. Each scale's CLIP patch grid (layers 14 and 22 of ViT-L/14, 16 x 16 patches of 1024) goes through the shared
   ``image_feature_neck`` (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d) to ``prompt_dim`` channels.
3. Per scale ``s``, ``mask_decoder``: 300 learned queries attend to the scale's prompt (``query_generator``),
   get the scale's level embedding and run with the image through a SAM two-way transformer (one per scale).
   Scale 1 first upsamples the image 2x and gates it by ``1 + sigmoid`` of scale 0's mask (mean over its
   channels), with ``pe1`` positions instead of ``pe_layer``'s. The queries (``hyper_mlp``, to
   ``prompt_dim / 8``) dotted with the 2x-upscaled image give 300 maps, mixed by 1x1 convs
   (``hyper_mlp_out``) into ``prompt_dim / 8`` channels, then ``ms3_s4_classfier`` (one channel) gives the
   scale's logits at 2x the grid (32 x 32, then 64 x 64).
4. The scales' logits, each resized to ``low_res_size`` (112), are averaged (Crab's fixed 1/2 weights) and
   resized to ``mask_size`` (224); a pixel is foreground where the logit is above 0 (sigmoid above 0.5).

``avss_classifier`` (71 classes, Crab's AVSS head) is held so both stage-3 files load, but no crabzoo task uses
it. Two quirks of Crab are kept, since the released weights were trained with them: every query-generator layer
reads the learned queries (not the previous layer's output), so only the last layer's output counts; and the
loss is summed, not averaged, over the batch's masks. The two random-frequency position buffers
(``positional_encoding_gaussian_matrix``) are drawn at construction; Crab never saves them (its checkpoints
hold parameters only), so the ones Crab ran with cannot be recovered.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crabzoo.errors import CrabzooError
from crabzoo.heads.base import MaskHead, square_grid
from crabzoo.heads.mask_decoder import Attention, LayerNorm2d, dice_loss, fourier_positions, image_neck


class PositionEmbeddingRandom(nn.Module):
    """Random-frequency 2D positions (SAM), the frequencies under Crab's buffer name."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, dim // 2))

    def forward(self, h: int, w: int) -> Tensor:
        """``(dim, h, w)`` encoding of an ``h x w`` grid."""
        return fourier_positions(self.positional_encoding_gaussian_matrix, h, w)


class MLPBlock(nn.Module):
    """``lin2(relu(lin1(x)))``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin2(F.relu(self.lin1(x)))


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token->image attention, token MLP, image->token attention (post-norm)."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, skip_first_layer_pe: bool) -> None:
        super().__init__()
        self.skip_first_layer_pe = skip_first_layer_pe
        self.self_attn = Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, num_heads, downsample=2)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, num_heads, downsample=2)

    def forward(self, tokens: Tensor, image: Tensor, token_pe: Tensor, image_pe: Tensor) -> tuple[Tensor, Tensor]:
        if self.skip_first_layer_pe:
            tokens = self.self_attn(tokens, tokens, tokens)
        else:
            q = tokens + token_pe
            tokens = tokens + self.self_attn(q, q, tokens)
        tokens = self.norm1(tokens)
        tokens = self.norm2(tokens + self.cross_attn_token_to_image(tokens + token_pe, image + image_pe, image))
        tokens = self.norm3(tokens + self.mlp(tokens))
        image = self.norm4(image + self.cross_attn_image_to_token(image + image_pe, tokens + token_pe, tokens))
        return tokens, image


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks and a final token->image attention."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(dim, num_heads, mlp_dim, skip_first_layer_pe=i == 0) for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(dim, num_heads, downsample=2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image: Tensor, image_pe: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """``image (B, C, H, W)``, ``image_pe (C, H, W)``, ``tokens (B, L, C)`` -> tokens, image ``(B, HW, C)``."""
        image = image.flatten(2).transpose(1, 2)
        image_pe = image_pe.flatten(1).transpose(0, 1).unsqueeze(0).to(image.dtype)
        x = tokens
        for layer in self.layers:
            x, image = layer(x, image, tokens, image_pe)
        x = self.norm_final_attn(x + self.final_attn_token_to_image(x + tokens, image + image_pe, image))
        return x, image


class MLP(nn.Module):
    """``num_layers`` linear layers (1x1 convs when ``conv``) with ReLU between them, under ``layers``."""

    def __init__(self, dims: Sequence[int], conv: bool = False) -> None:
        super().__init__()
        make = (lambda i, o: nn.Conv2d(i, o, kernel_size=1)) if conv else nn.Linear
        self.layers = nn.ModuleList(make(i, o) for i, o in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class QueryLayer(nn.Module):
    """Self-attention of the queries, cross-attention to the prompt, FFN (GELU), each with a post-norm."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, queries: Tensor, prompt: Tensor) -> Tensor:
        queries = self.norm1(queries + self.self_attn(queries, queries, queries, need_weights=False)[0])
        queries = self.norm2(queries + self.cross_attn(queries, prompt, prompt, need_weights=False)[0])
        return self.norm3(queries + self.ffn(queries))


class QueryGenerator(nn.Module):
    """Learned queries conditioned on a scale's prompt; as in Crab each layer reads the learned queries."""

    def __init__(self, num_layers: int, dim: int, num_heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(QueryLayer(dim, num_heads, ffn_dim) for _ in range(num_layers))
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, queries: Tensor, prompt: Tensor) -> Tensor:
        out = queries
        for layer in self.layers:
            out = layer(queries, prompt)
        return out


class MultiScaleDecoder(nn.Module):
    """One scale of Crab's decoder: queries + image grid (+ the previous scale's mask) -> logits at 2x the grid."""

    def __init__(
        self, dim: int, num_scales: int, depth: int, num_heads: int, mlp_dim: int, num_queries: int,
        query_layers: int, query_ffn_dim: int, avss_classes: int,
    ) -> None:
        super().__init__()
        self.transformer = nn.ModuleList(TwoWayTransformer(dim, depth, num_heads, mlp_dim) for _ in range(num_scales))
        self.avs_query_tokens = nn.Embedding(num_queries, dim)
        self.query_generator = QueryGenerator(query_layers, dim, num_heads, query_ffn_dim)
        self.hyper_mlp_out = MLP([num_queries, dim, dim, dim // 8], conv=True)
        self.hyper_mlp = MLP([dim, dim, dim, dim // 8])
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 8, kernel_size=2, stride=2), LayerNorm2d(dim // 8), nn.GELU()
        )
        self.upsample_2x = nn.Sequential(nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2), LayerNorm2d(dim), nn.GELU())
        self.pe1 = PositionEmbeddingRandom(dim)
        self.level_embed = nn.Embedding(num_scales, dim)
        self.ms3_s4_classfier = nn.Conv2d(dim // 8, 1, kernel_size=1, bias=False)  # sic: Crab's name
        self.avss_classifier = nn.Conv2d(dim // 8, avss_classes, kernel_size=1, bias=False)

    def forward(self, image: Tensor, image_pe: Tensor, prompt: Tensor, dense: Tensor, level: int,
                previous: Tensor | None) -> Tensor:
        """Logits ``(B, 1, 2h', 2w')`` of scale ``level``.

        Args:
            image: ``(B, C, h, w)`` neck output of the scale's grid.
            image_pe: ``(C, h, w)`` positions (used at level 0; later levels use ``pe1`` at their size).
            prompt: ``(B, 1, C)`` the scale's prompt.
            dense: ``(1, C, 1, 1)`` the no-mask embedding added to the image.
            level: Scale index.
            previous: The previous scale's logits (``None`` at level 0).
        """
        b = image.shape[0]
        queries = self.query_generator(self.avs_query_tokens.weight.expand(b, -1, -1), prompt)
        queries = queries + self.level_embed.weight[level]
        if level > 0 and previous is not None:
            image = self.upsample_2x(image)
            gate = previous.mean(1, keepdim=True)
            if gate.shape[-2:] != image.shape[-2:]:  # only beyond Crab's two scales
                gate = F.interpolate(gate.float(), size=image.shape[-2:], mode="bilinear", align_corners=False).to(gate.dtype)
            image = (gate.sigmoid() + 1) * image
            image_pe = self.pe1(*image.shape[-2:])
        image = image + dense
        h, w = image.shape[-2:]
        hs, keys = self.transformer[level](image, image_pe, queries)
        weights = self.hyper_mlp(hs)  # (B, Q, C/8)
        up = self.output_upscaling(keys.transpose(1, 2).reshape(b, -1, h, w))  # (B, C/8, 2h, 2w)
        maps = (weights @ up.flatten(2)).reshape(b, -1, *up.shape[-2:])  # (B, Q, 2h, 2w)
        return self.ms3_s4_classfier(self.hyper_mlp_out(maps))


class CrabSegModule(MaskHead):
    """Crab's segmentation module as a crabzoo mask head (see the module docstring for the computation).

    Args:
        llm_dim: Hidden size of the LLM (4096 for LLaMA-2-7B).
        visual_dim: Width of the visual layers (1024 for CLIP ViT-L/14).
        num_scales: Scales, one visual layer each (Crab: 2).
        tokens_per_scale: Mask tokens per scale (Crab: 3).
        prompt_dim: Width of the prompts and of the decoder (Crab: 256; a multiple of 8 and of ``num_heads``).
        depth: Two-way blocks per scale (Crab: 2).
        num_heads: Attention heads of the two-way transformers and the query generator (Crab: 8).
        mlp_dim: MLP width of the two-way blocks (Crab: 2048).
        num_queries: Learned queries (Crab: 300).
        query_layers: Query-generator layers (Crab: 2).
        query_ffn_dim: FFN width of the query generator (Crab: 2048).
        avss_classes: Output channels of the (unused) AVSS classifier (Crab: 71).
        low_res_size: Side the scales' logits are resized to before they are averaged (Crab: 112).
        mask_size: Side of the returned logits (Crab: 224, the CLIP input size).
        bce_weight: Weight of the BCE term of :meth:`loss` (Crab: 1).
        dice_weight: Weight of the Dice term of :meth:`loss` (Crab: 0.5).
    """

    state_offset = -1

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
        num_queries: int = 300,
        query_layers: int = 2,
        query_ffn_dim: int = 2048,
        avss_classes: int = 71,
        low_res_size: int = 112,
        mask_size: int = 224,
        bce_weight: float = 1.0,
        dice_weight: float = 0.5,
    ) -> None:
        super().__init__()
        if prompt_dim % 16 or (prompt_dim // 2) % num_heads:
            raise CrabzooError(
                f"CrabSegModule: prompt_dim {prompt_dim} must be a multiple of 16 with prompt_dim / 2 divisible by "
                f"num_heads={num_heads} (Crab: 256 and 8)"
            )
        self.num_scales, self.tokens_per_scale = num_scales, tokens_per_scale
        self.low_res_size, self.mask_size = low_res_size, (mask_size, mask_size)
        self.bce_weight, self.dice_weight = bce_weight, dice_weight
        p = prompt_dim
        self.text_hidden_fcs = nn.ModuleList(
            [nn.Sequential(nn.Linear(llm_dim, llm_dim), nn.ReLU(), nn.Linear(llm_dim, p), nn.Dropout(0.0))]
        )
        self.no_mask_embed = nn.Embedding(1, p)
        self.image_feature_neck = image_neck(visual_dim, p)
        self.pe_layer = PositionEmbeddingRandom(p)
        self.mask_decoder = MultiScaleDecoder(
            p, num_scales, depth, num_heads, mlp_dim, num_queries, query_layers, query_ffn_dim, avss_classes
        )

    def forward(self, mask_token_states: Tensor, visual_layers: Sequence[Tensor]) -> Tensor:
        """Mask logits ``(B, 1, H, W)`` at ``mask_size``.

        Args:
            mask_token_states: ``(B, num_scales * tokens_per_scale, llm_dim)`` states, scale-major.
            visual_layers: ``num_scales`` patch grids ``(B, N, visual_dim)``, layer ``s`` for scale ``s``.
        """
        b, k, _ = mask_token_states.shape
        if k != self.num_mask_tokens or len(visual_layers) != self.num_scales:
            raise CrabzooError(
                f"CrabSegModule expects {self.num_mask_tokens} mask-token states and {self.num_scales} visual "
                f"layers, got {k} and {len(visual_layers)}"
            )
        prompts = self.text_hidden_fcs[0](mask_token_states)
        prompts = prompts.reshape(b, self.num_scales, self.tokens_per_scale, -1).mean(2)  # (B, S, C)
        dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1)
        total: Tensor | None = None
        previous: Tensor | None = None
        for s, layer in enumerate(visual_layers):
            image = self.image_feature_neck(square_grid(layer, type(self).__name__))
            pe = self.pe_layer(*image.shape[-2:])
            previous = self.mask_decoder(image, pe, prompts[:, s : s + 1], dense, s, previous)
            low = F.interpolate(previous.float(), size=(self.low_res_size,) * 2, mode="bilinear", align_corners=False)
            total = low / self.num_scales if total is None else total + low / self.num_scales
        assert total is not None
        out = F.interpolate(total, size=self.mask_size, mode="bilinear", align_corners=False)
        return out.to(mask_token_states.dtype)

    def predict(self, logits: Tensor) -> Tensor:
        """Boolean masks ``(B, H, W)``: sigmoid of the logits above 0.5."""
        return logits[:, 0] > 0

    def loss(self, logits: Tensor, target_masks: Tensor) -> Tensor:
        """Crab's mask loss, summed over the masks: ``bce_weight * BCE + dice_weight * Dice`` per mask.

        BCE is the mean over pixels; Dice is ``1 - (2 sum(p t) + 1e-3) / (sum(p) + sum(t) + 1e-3)`` (Crab's
        ``scale = 1000``, ``eps = 1e-6``). Targets ``(B, H, W)`` are resized (nearest) to ``mask_size`` when
        they differ.
        """
        final = logits[:, 0].float()
        target = target_masks.to(final.dtype)
        if target.shape[-2:] != final.shape[-2:]:
            target = F.interpolate(target[:, None], size=final.shape[-2:], mode="nearest")[:, 0]
        bce = F.binary_cross_entropy_with_logits(final, target, reduction="none").flatten(1).mean(1).sum()
        return self.bce_weight * bce + self.dice_weight * dice_loss(final, target, smooth=1e-3) * final.shape[0]
