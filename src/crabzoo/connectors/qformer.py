"""Q-Former (BLIP-2 style, as in Crab): learned queries that cross-attend to encoder tokens, one step at a time.

A compact BERT-layout implementation: each layer is post-norm self-attention over the queries, cross-attention
from the queries to the encoder tokens, and a GELU feed-forward, as in a BERT-base layer with
``add_cross_attention`` (hidden 768, 12 heads, FFN 3072, LayerNorm eps 1e-12, init N(0, 0.02)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crabzoo.connectors.base import Connector
from crabzoo.connectors.mlp import build_mlp
from crabzoo.encoders.base import MediaFeatures
from crabzoo.errors import CrabzooError


class MultiHeadAttention(nn.Module):
    """Attention with separate query and key/value widths (BERT names: query, key, value, output).

    Args:
        dim: Width of the queries and of the output.
        kv_dim: Width of the keys/values source.
        num_heads: Heads; ``dim`` must be divisible by it.
        dropout: Attention-probability dropout (training only).
    """

    def __init__(self, dim: int, kv_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise CrabzooError(f"hidden width {dim} is not divisible by num_heads={num_heads}")
        self.num_heads, self.dropout = num_heads, dropout
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(kv_dim, dim)
        self.value = nn.Linear(kv_dim, dim)
        self.output = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor, context_mask: Tensor | None = None) -> Tensor:
        """``x (M, Lq, dim)`` attends to ``context (M, Lk, kv_dim)``; ``context_mask (M, Lk)`` True = attend."""
        m, lq, dim = x.shape
        h = self.num_heads

        def split(t: Tensor) -> Tensor:
            return t.reshape(m, t.shape[1], h, dim // h).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(context)), split(self.value(context))
        mask = None if context_mask is None else context_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.output(out.transpose(1, 2).reshape(m, lq, dim))


class QFormerLayer(nn.Module):
    """Self-attention, cross-attention to the encoder tokens, feed-forward; each residual + post-LayerNorm."""

    def __init__(self, dim: int, encoder_dim: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, dim, num_heads, dropout)
        self.self_norm = nn.LayerNorm(dim, eps=1e-12)
        self.cross_attn = MultiHeadAttention(dim, encoder_dim, num_heads, dropout)
        self.cross_norm = nn.LayerNorm(dim, eps=1e-12)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-12)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, memory: Tensor, memory_mask: Tensor | None = None) -> Tensor:
        x = self.self_norm(x + self.drop(self.self_attn(x, x)))
        x = self.cross_norm(x + self.drop(self.cross_attn(x, memory, memory_mask)))
        return self.ffn_norm(x + self.drop(self.ffn(x)))


class QFormer(nn.Module):
    """``num_queries`` learned queries read a set of encoder tokens through ``num_layers`` Q-Former layers.

    Args:
        encoder_dim: Width of the encoder tokens (keys/values of the cross-attention).
        num_queries: Learned queries (32 in Crab / BLIP-2).
        hidden_dim: Query width (768 = BERT-base).
        num_heads: Attention heads (12 = BERT-base).
        num_layers: Layers, each with cross-attention (2 in Crab).
        ffn_dim: Feed-forward width (3072 = BERT-base).
        dropout: Hidden and attention dropout (0.1 = BERT-base).
    """

    def __init__(
        self,
        encoder_dim: int,
        num_queries: int = 32,
        hidden_dim: int = 768,
        num_heads: int = 12,
        num_layers: int = 2,
        ffn_dim: int = 3072,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.zeros(1, num_queries, hidden_dim))
        self.embed_norm = nn.LayerNorm(hidden_dim, eps=1e-12)
        self.embed_drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            QFormerLayer(hidden_dim, encoder_dim, num_heads, ffn_dim, dropout) for _ in range(num_layers)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """BERT initialisation: linear weights and queries N(0, 0.02), biases 0, LayerNorms identity."""
        nn.init.normal_(self.queries, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, memory: Tensor, memory_mask: Tensor | None = None) -> Tensor:
        """``memory (M, L, encoder_dim)`` -> ``(M, num_queries, hidden_dim)``; ``memory_mask (M, L)`` True = real."""
        x = self.embed_drop(self.embed_norm(self.queries.expand(memory.shape[0], -1, -1)))
        for layer in self.layers:
            x = layer(x, memory, memory_mask)
        return x


class QFormerConnector(Connector):
    """Crab's per-modality connector: LayerNorm, a Q-Former per time step, then an MLP to the LLM width.

    Every time step (a video frame, an audio second) is read independently by the same queries, so
    ``(B, T, N, in_dim) -> (B, T, num_queries, out_dim)``; timestamps and mask are unchanged. Crab: 2 layers,
    32 queries, BERT-base widths, MLP depth 2; 10 frames x 32 = 320 tokens per stream.

    Args:
        in_dim: Encoder width (1024 for CLIP ViT-L/14, 768 for BEATs).
        out_dim: LLM width.
        num_queries: Learned queries per time step.
        hidden_dim: Q-Former width.
        num_heads: Q-Former heads.
        num_layers: Q-Former layers (cross-attention in every layer).
        ffn_dim: Q-Former feed-forward width.
        dropout: Q-Former dropout.
        mlp_depth: Depth of the projector after the Q-Former.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_queries: int = 32,
        hidden_dim: int = 768,
        num_heads: int = 12,
        num_layers: int = 2,
        ffn_dim: int = 3072,
        dropout: float = 0.1,
        mlp_depth: int = 2,
    ) -> None:
        super().__init__(in_dim, out_dim)
        self.num_queries = num_queries
        self.input_norm = nn.LayerNorm(in_dim)
        self.qformer = QFormer(in_dim, num_queries, hidden_dim, num_heads, num_layers, ffn_dim, dropout)
        self.proj = build_mlp(hidden_dim, out_dim, mlp_depth)

    def forward(self, features: MediaFeatures) -> MediaFeatures:
        b, t, n, d = features.tokens.shape
        memory = self.input_norm(features.tokens.reshape(b * t, n, d))
        queries = self.qformer(memory)
        return features.replace(self.proj(queries).reshape(b, t, self.num_queries, self.out_dim))


_CRAB_LAYER_KEYS = {
    "attention.self.query": "self_attn.query",
    "attention.self.key": "self_attn.key",
    "attention.self.value": "self_attn.value",
    "attention.output.dense": "self_attn.output",
    "attention.output.LayerNorm": "self_norm",
    "crossattention.self.query": "cross_attn.query",
    "crossattention.self.key": "cross_attn.key",
    "crossattention.self.value": "cross_attn.value",
    "crossattention.output.dense": "cross_attn.output",
    "crossattention.output.LayerNorm": "cross_norm",
    "intermediate_query.dense": "ffn.0",
    "output_query.dense": "ffn.2",
    "output_query.LayerNorm": "ffn_norm",
}


def from_crab_state_dict(state_dict: dict[str, Tensor], modality: str) -> dict[str, Tensor]:
    """Rename Crab's projector weights (``visual_*`` / ``audio_*``) to a :class:`QFormerConnector` state dict.

    Crab stores each projector as ``{m}_ln``, ``{m}_query_tokens``, ``{m}_Qformer.bert.…`` (a LAVIS
    ``BertLMHeadModel``) and ``{m}_proj`` under any prefix, with ``m`` = ``visual`` or ``audio``. Only the weights
    of the query path are kept; the text-side weights Crab never uses (word/position embeddings, the text
    feed-forward, the LM head) are dropped.

    Args:
        state_dict: A Crab checkpoint's state dict (or any dict that holds one projector).
        modality: ``"visual"`` or ``"audio"``.

    Raises:
        CrabzooError: No ``{modality}_ln.weight`` key in ``state_dict``.
    """
    anchor = f"{modality}_ln.weight"
    found = [k for k in state_dict if k == anchor or k.endswith("." + anchor)]
    if not found:
        raise CrabzooError(f"no Crab {modality} projector in the state dict (no key ending in '{anchor}')")
    prefix = found[0][: -len(anchor)] + modality
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix + "_"):
            continue
        rest = key[len(prefix) + 1 :]
        if rest.startswith("ln."):
            out["input_norm." + rest[3:]] = value
        elif rest == "query_tokens":
            out["qformer.queries"] = value
        elif rest.startswith("proj."):
            out[rest] = value
        elif rest.startswith("Qformer.bert.embeddings.LayerNorm."):
            out["qformer.embed_norm." + rest.rsplit(".", 1)[1]] = value
        elif rest.startswith("Qformer.bert.encoder.layer."):
            index, sub = rest[len("Qformer.bert.encoder.layer.") :].split(".", 1)
            module, param = sub.rsplit(".", 1)
            if module in _CRAB_LAYER_KEYS:
                out[f"qformer.layers.{index}.{_CRAB_LAYER_KEYS[module]}.{param}"] = value
    return out
