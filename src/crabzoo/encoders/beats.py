"""BEATs (iter3+, AS2M), key-compatible with the official checkpoints.

The module tree reproduces the official parameter names, so ``BEATsEncoder.state_dict()`` has exactly the
keys of a BEATs ``.pt`` file (250 for the self-supervised checkpoint, 252 with the AudioSet predictor):

```
patch_embedding            Conv2d(1 -> embed_dim, 16x16, stride 16, no bias) over the (time, freq) fbank
layer_norm                 LayerNorm(embed_dim)
post_extract_proj          Linear(embed_dim -> width)
encoder.pos_conv.0         weight-normed grouped Conv1d (weight_g, weight_v, bias), then trim 1 + GELU
encoder.layer_norm         LayerNorm(width) after the positional conv (post-LN model)
encoder.layers.{i}         post-LN deep-norm layers: self_attn (q/k/v/out_proj, grep_linear, grep_a,
                           relative_attention_bias), self_attn_layer_norm, fc1, fc2, final_layer_norm
predictor                  Linear(width -> 527), fine-tuned checkpoints only
```

Every layer has a ``relative_attention_bias`` entry in the official state dict, but all of them are one
table (the official code makes layers 1-11 reference layer 0's module) and only the bias computed from it in
layer 0 is used; each layer gates that bias with its own query. Here only layer 0 owns the table, so every
parameter belongs to exactly one layer (FSDP shards layer by layer); a state-dict hook writes the 11 copies
under the official keys and a load hook drops them again.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crabzoo.data.schema import AudioClip
from crabzoo.encoders.base import AudioEncoder, MediaFeatures
from crabzoo.encoders.common import encode_steps, make_features, step_mask
from crabzoo.encoders.fbank import beats_fbank, num_frames
from crabzoo.errors import CrabzooError


@dataclass
class BEATsConfig:
    """BEATs hyper-parameters; field names and defaults follow the official ``BEATsConfig`` class.

    The class defaults are *not* the iter3+ values: a checkpoint's ``cfg`` dict is read on top of these
    defaults, exactly like the official code. :data:`ITER3_PLUS_AS2M` holds the values of the real
    checkpoints and :data:`TINY` a small test configuration.
    """

    input_patch_size: int = -1
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_wise_gradient_decay_ratio: float = 1.0
    layer_norm_first: bool = False
    deep_norm: bool = False
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    dropout_input: float = 0.0
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = False
    num_buckets: int = 320
    max_distance: int = 1280
    gru_rel_pos: bool = False
    finetuned_model: bool = False
    predictor_dropout: float = 0.1
    predictor_class: int = 527

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> BEATsConfig:
        """Build from a ``cfg`` dict; keys that are not config fields are ignored (as in the official code)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in cfg.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain dict (what a checkpoint stores under ``cfg``)."""
        return asdict(self)


ITER3_PLUS_AS2M: dict[str, Any] = {
    "input_patch_size": 16,
    "embed_dim": 512,
    "conv_bias": False,
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_wise_gradient_decay_ratio": 0.6,
    "layer_norm_first": False,
    "deep_norm": True,
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.05,
    "dropout_input": 0.0,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "relative_position_embedding": True,
    "num_buckets": 320,
    "max_distance": 800,
    "gru_rel_pos": True,
    "finetuned_model": True,
    "predictor_dropout": 0.0,
    "predictor_class": 527,
}
"""The config of the official iter3+ AS2M fine-tuned checkpoints (the SSL one has ``finetuned_model=False``)."""

TINY: dict[str, Any] = {
    "encoder_layers": 2,
    "embed_dim": 32,
    "encoder_embed_dim": 64,
    "encoder_ffn_embed_dim": 128,
    "encoder_attention_heads": 4,
    "conv_pos": 16,
    "conv_pos_groups": 4,
    "encoder_layerdrop": 0.0,
    "finetuned_model": False,
}
"""Overrides of :data:`ITER3_PLUS_AS2M` for a tiny random BEATs (tests, quickstart): patch 16, width 64."""


def _gelu_fp32(x: Tensor) -> Tensor:
    return F.gelu(x.float()).type_as(x)


class WeightNormConv1d(nn.Module):
    """Grouped Conv1d with weight normalisation over ``dim=2`` (one gain per kernel tap).

    Stores ``weight_g (1, 1, K)`` and ``weight_v (C_out, C_in / groups, K)`` like ``nn.utils.weight_norm``;
    the effective weight is ``g[k] * v[:, :, k] / ||v[:, :, k]||``.
    """

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.padding, self.groups = kernel_size // 2, groups
        std = math.sqrt(4.0 / (kernel_size * channels))
        v = torch.randn(channels, channels // groups, kernel_size) * std
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(torch.linalg.vector_norm(v, dim=(0, 1), keepdim=True))
        self.bias = nn.Parameter(torch.zeros(channels))

    def weight(self) -> Tensor:
        """The effective convolution weight."""
        norm = torch.linalg.vector_norm(self.weight_v, dim=(0, 1), keepdim=True)
        return self.weight_v * (self.weight_g / norm)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv1d(x, self.weight(), self.bias, padding=self.padding, groups=self.groups)


class PositionalConv(nn.Sequential):
    """``encoder.pos_conv``: weight-normed conv (index 0), trim the extra step of an even kernel, GELU."""

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__(WeightNormConv1d(channels, kernel_size, groups))
        self.trim = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: Tensor) -> Tensor:
        y = self[0](x)
        if self.trim:
            y = y[..., : -self.trim]
        return F.gelu(y)


def relative_position_bucket(relative: Tensor, num_buckets: int, max_distance: int) -> Tensor:
    """T5-style bidirectional buckets: exact below ``num_buckets // 4``, logarithmic up to ``max_distance``."""
    half = num_buckets // 2
    bucket = (relative > 0).long() * half
    distance = relative.abs()
    exact = half // 2
    large = exact + (torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact) * (half - exact)).long()
    large = large.clamp(max=half - 1)
    return bucket + torch.where(distance < exact, distance, large)


class BEATsAttention(nn.Module):
    """Multi-head self-attention with a gated (GRU-style) relative position bias."""

    def __init__(self, cfg: BEATsConfig, has_bias_table: bool) -> None:
        super().__init__()
        width, heads = cfg.encoder_embed_dim, cfg.encoder_attention_heads
        self.num_heads, self.head_dim = heads, width // heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)
        self.gru_rel_pos = cfg.gru_rel_pos
        if cfg.gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))
        if has_bias_table:
            self.relative_attention_bias = nn.Embedding(cfg.num_buckets, heads)
        self.num_buckets, self.max_distance = cfg.num_buckets, cfg.max_distance
        self.dropout = cfg.attention_dropout

    def position_bias(self, n: int, device: torch.device) -> Tensor:
        """``(H, N, N)`` un-gated bias looked up in this layer's ``relative_attention_bias`` table."""
        pos = torch.arange(n, device=device)
        buckets = relative_position_bucket(pos[None, :] - pos[:, None], self.num_buckets, self.max_distance)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)

    def forward(
        self, x: Tensor, position_bias: Tensor | None, key_padding_mask: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """Attention output and the un-gated bias (computed here when this layer owns the table)."""
        b, n, _ = x.shape
        if position_bias is None and hasattr(self, "relative_attention_bias"):
            position_bias = self.position_bias(n, x.device)
        q = self.q_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        bias = None
        if position_bias is not None:
            bias = position_bias.unsqueeze(0).to(q.dtype)  # (1, H, N, N)
            if self.gru_rel_pos:
                gates = torch.sigmoid(self.grep_linear(q).view(b, self.num_heads, n, 2, 4).sum(-1))
                gate_a, gate_b = gates[..., :1], gates[..., 1:]
                bias = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * bias
        if key_padding_mask is not None:
            pad = torch.zeros(b, 1, 1, n, dtype=q.dtype, device=q.device).masked_fill(
                key_padding_mask.view(b, 1, 1, n), float("-inf")
            )
            bias = pad if bias is None else bias + pad
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1)), position_bias


class BEATsLayer(nn.Module):
    """A post-LN (deep-norm) or pre-LN transformer layer with BEATs' parameter names."""

    def __init__(self, cfg: BEATsConfig, has_bias_table: bool) -> None:
        super().__init__()
        width = cfg.encoder_embed_dim
        self.self_attn = BEATsAttention(cfg, has_bias_table)
        self.self_attn_layer_norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, width)
        self.final_layer_norm = nn.LayerNorm(width)
        self.layer_norm_first = cfg.layer_norm_first
        self.alpha = math.pow(2.0 * cfg.encoder_layers, 0.25) if cfg.deep_norm else 1.0
        self.dropout, self.activation_dropout = cfg.dropout, cfg.activation_dropout

    def _ffn(self, x: Tensor) -> Tensor:
        h = F.dropout(_gelu_fp32(self.fc1(x)), self.activation_dropout, self.training)
        return F.dropout(self.fc2(h), self.dropout, self.training)

    def forward(
        self, x: Tensor, position_bias: Tensor | None, key_padding_mask: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """The layer output and the relative bias for the next layer (layer 0 computes it from its table)."""
        if self.layer_norm_first:
            attn, position_bias = self.self_attn(self.self_attn_layer_norm(x), position_bias, key_padding_mask)
            x = x + F.dropout(attn, self.dropout, self.training)
            return x + self._ffn(self.final_layer_norm(x)), position_bias
        attn, position_bias = self.self_attn(x, position_bias, key_padding_mask)
        x = self.self_attn_layer_norm(self.alpha * x + F.dropout(attn, self.dropout, self.training))
        return self.final_layer_norm(self.alpha * x + self._ffn(x)), position_bias


class BEATsTransformer(nn.Module):
    """``encoder``: positional conv, LayerNorm and the layers; the relative bias is computed once."""

    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        width = cfg.encoder_embed_dim
        self.pos_conv = PositionalConv(width, cfg.conv_pos, cfg.conv_pos_groups)
        self.layer_norm = nn.LayerNorm(width)
        relative = cfg.relative_position_embedding
        self.layers = nn.ModuleList(BEATsLayer(cfg, relative and i == 0) for i in range(cfg.encoder_layers))
        self.layer_norm_first = cfg.layer_norm_first
        self.dropout = cfg.dropout
        if relative:
            self.register_state_dict_post_hook(_add_bias_copies)
            self.register_load_state_dict_pre_hook(_drop_bias_copies)

    def bias_copy_keys(self, prefix: str = "") -> list[str]:
        """The official keys of layers 1.. that repeat layer 0's relative-bias table."""
        return [f"{prefix}layers.{i}.{_BIAS_KEY}" for i in range(1, len(self.layers))]

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = F.dropout(x, self.dropout, self.training)
        bias = None  # layer 0 computes it inside its own forward (its FSDP unit owns the table)
        for layer in self.layers:
            x, bias = layer(x, bias, padding_mask)
        if self.layer_norm_first:
            x = self.layer_norm(x)
        return x


_BIAS_KEY = "self_attn.relative_attention_bias.weight"


def _add_bias_copies(module: BEATsTransformer, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    table = state.get(f"{prefix}layers.0.{_BIAS_KEY}")
    if table is not None:
        for key in module.bias_copy_keys(prefix):
            state[key] = table


def _drop_bias_copies(module: BEATsTransformer, state: dict[str, Any], prefix: str, *args: Any) -> None:
    for key in module.bias_copy_keys(prefix):
        state.pop(key, None)


class BEATsEncoder(AudioEncoder):
    """BEATs audio encoder: 128-bin Kaldi fbank per segment -> ``N = floor(L/16) * 8`` tokens per segment.

    Build it from an official checkpoint (``checkpoint``) or from a config (``config``: overrides of
    :data:`ITER3_PLUS_AS2M`, e.g. :data:`TINY`); with neither, it is a randomly initialised iter3+ model.
    Layer drop is not applied: crabzoo uses BEATs as a feature extractor (Crab sets it to 0 too).

    Args:
        checkpoint: Path to a BEATs ``.pt`` file holding ``cfg`` and ``model`` (and ``label_dict`` when
            fine-tuned), loaded with ``torch.load(weights_only=True)`` and a strict key check.
        config: Config overrides on top of the iter3+ AS2M values, used when ``checkpoint`` is ``None``.
        freeze: Set ``requires_grad=False`` on every parameter (the paradigm may unfreeze the group).
        fbank_backend: ``"torch"`` (default) or ``"kaldi"`` (kaldi-native-fbank; only below 128 bins).

    Example (YAML):
        ```yaml
        audio_encoder:
          class_path: crabzoo.encoders.BEATsEncoder
          init_args:
            checkpoint: checkpoints/BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt
        ```
    """

    adapter_targets: ClassVar[tuple[str, ...]] = ("q_proj", "k_proj", "v_proj", "out_proj")
    num_mel_bins: ClassVar[int] = 128
    sample_rate: ClassVar[int] = 16000

    def __init__(
        self,
        checkpoint: str | None = None,
        config: dict[str, Any] | None = None,
        freeze: bool = True,
        fbank_backend: str = "torch",
    ) -> None:
        super().__init__()
        state = None
        self.label_dict: dict[int, str] = {}
        if checkpoint is not None:
            if config is not None:
                raise CrabzooError("BEATsEncoder: give `checkpoint` or `config`, not both (the checkpoint holds its config)")
            blob = _load_blob(checkpoint)
            cfg = BEATsConfig.from_dict(blob["cfg"])
            state = blob["model"]
            self.label_dict = dict(blob.get("label_dict") or {})
        else:
            cfg = BEATsConfig.from_dict({**ITER3_PLUS_AS2M, **(config or {})})
        _check_config(cfg)
        if fbank_backend not in ("torch", "kaldi"):
            raise CrabzooError(f"BEATsEncoder: fbank_backend {fbank_backend!r} is unknown; use 'torch' or 'kaldi'")
        self.cfg = cfg
        self.fbank_backend = fbank_backend
        self.checkpoint = checkpoint
        self.patch_embedding = nn.Conv2d(
            1, cfg.embed_dim, kernel_size=cfg.input_patch_size, stride=cfg.input_patch_size, bias=cfg.conv_bias
        )
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.post_extract_proj = (
            nn.Linear(cfg.embed_dim, cfg.encoder_embed_dim) if cfg.embed_dim != cfg.encoder_embed_dim else None
        )
        self.encoder = BEATsTransformer(cfg)
        self.predictor = nn.Linear(cfg.encoder_embed_dim, cfg.predictor_class) if cfg.finetuned_model else None
        if state is not None:
            self.load_official_state_dict(state, source=str(checkpoint))
        if freeze:
            self.requires_grad_(False)
        self.eval()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, freeze: bool = True) -> BEATsEncoder:
        """Load an official (or crabzoo-written) BEATs ``.pt`` checkpoint."""
        return cls(checkpoint=str(path), freeze=freeze)

    def load_official_state_dict(self, state: dict[str, Tensor], source: str = "state dict") -> None:
        """Load a BEATs state dict with a strict key check.

        Accepts the ``nn.utils.weight_norm`` names (``weight_g``/``weight_v``) and the parametrization names
        (``parametrizations.weight.original0``/``original1``), and state dicts that hold
        ``relative_attention_bias`` for layer 0 only.

        Raises:
            CrabzooError: Keys are missing or unexpected, or a shape differs; the message lists them.
        """
        renamed = {}
        for key, value in state.items():
            key = key.replace("pos_conv.0.parametrizations.weight.original0", "pos_conv.0.weight_g")
            key = key.replace("pos_conv.0.parametrizations.weight.original1", "pos_conv.0.weight_v")
            renamed[key] = value
        own = self.state_dict()
        copies = set(self.encoder.bias_copy_keys("encoder."))
        missing = sorted(k for k in own if k not in renamed and k not in copies)
        unexpected = sorted(k for k in renamed if k not in own)
        if missing or unexpected:
            raise CrabzooError(
                f"BEATs checkpoint {source} does not match the config: missing keys {missing[:20]}"
                f"{' ...' if len(missing) > 20 else ''}, unexpected keys {unexpected[:20]}"
                f"{' ...' if len(unexpected) > 20 else ''} (is `finetuned_model` in its cfg right?)"
            )
        wrong = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in renamed.items() if tuple(v.shape) != tuple(own[k].shape)]
        if wrong:
            raise CrabzooError(f"BEATs checkpoint {source} has wrong shapes (checkpoint vs model): {wrong[:10]}")
        self.load_state_dict(renamed, strict=True)

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Write an official-format ``.pt`` (``cfg``, ``model``, and ``label_dict`` if any), atomically."""
        blob: dict[str, Any] = {"cfg": self.cfg.to_dict(), "model": {k: v.detach().cpu() for k, v in self.state_dict().items()}}
        if self.label_dict:
            blob["label_dict"] = dict(self.label_dict)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(blob, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    # ------------------------------------------------------------------ contract
    @property
    def out_dim(self) -> int:
        return self.cfg.encoder_embed_dim

    @property
    def block_cls(self) -> type[nn.Module]:
        """The transformer layer class (FSDP / activation-checkpointing unit)."""
        return BEATsLayer

    def preprocess_config(self) -> dict:
        return {"features": "kaldi_fbank", "num_mel_bins": self.num_mel_bins, "backend": self.fbank_backend}

    def preprocess(self, clip: AudioClip) -> Tensor:
        """Normalised fbank per segment: ``(T, L, 128)`` float32, ``L = 1 + (S - 400) // 160`` (98 per second).

        Segments shorter than one 16-frame patch (about 0.17 s, e.g. MUSIC-AVQA's windows on a 10-s clip) are
        zero-padded to 16 frames (zero is the normalised mean), so that every segment gives at least one row of
        patches; the official model fails on them.

        Raises:
            CrabzooError: The clip is not 16 kHz or its segments are shorter than one 25-ms window.
        """
        if clip.sample_rate != self.sample_rate:
            raise CrabzooError(f"BEATsEncoder needs 16 kHz audio, got {clip.sample_rate} Hz; resample when loading")
        segments = np.asarray(clip.segments, dtype=np.float32)
        if segments.ndim != 2 or num_frames(segments.shape[1]) == 0:
            raise CrabzooError(f"BEATsEncoder: segments must be (T, S) with S >= 400 samples, got shape {segments.shape}")
        fbank = beats_fbank(segments, self.num_mel_bins, self.sample_rate, backend=self.fbank_backend)
        short = self.cfg.input_patch_size - fbank.shape[1]
        if short > 0:
            fbank = F.pad(fbank, (0, 0, 0, short))
        return fbank.contiguous()

    def token_count(self, frames: int) -> int:
        """Tokens per segment of ``frames`` fbank frames: ``floor(frames / p) * (128 / p)``."""
        p = self.cfg.input_patch_size
        return (frames // p) * (self.num_mel_bins // p)

    def extract_features(self, fbank: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """The official ``extract_features`` on normalised fbank ``(B, L, 128)`` -> ``(B, N, D)``.

        Args:
            fbank: Normalised filterbanks, time by frequency.
            padding_mask: Optional ``(B, L)`` frame mask (``True`` = padding), reduced to tokens as in the
                official code (exact only when it is all ``False``).
        """
        x = self.patch_embedding(fbank.unsqueeze(1))
        x = x.flatten(2).transpose(1, 2)
        x = self.layer_norm(x)
        token_mask = None
        if padding_mask is not None:
            n = x.shape[1]
            extra = padding_mask.shape[1] % n
            if extra:
                padding_mask = padding_mask[:, :-extra]
            token_mask = padding_mask.view(padding_mask.shape[0], n, -1).all(-1)
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        x = F.dropout(x, self.cfg.dropout_input, self.training)
        return self.encoder(x, token_mask)

    def classify(self, fbank: Tensor) -> Tensor:
        """AudioSet probabilities ``(B, 527)`` of the fine-tuned head (mean of per-token logits, sigmoid)."""
        if self.predictor is None:
            raise CrabzooError("BEATsEncoder.classify needs a fine-tuned checkpoint (`finetuned_model: true`)")
        x = self.extract_features(fbank)
        return torch.sigmoid(self.predictor(F.dropout(x, self.cfg.predictor_dropout, self.training)).mean(1))

    def forward(self, inputs: Tensor, timestamps: Tensor | None = None, mask: Tensor | None = None) -> MediaFeatures:
        """Encode ``(B, T, L, 128)`` fbanks into ``(B, T, N, D)`` tokens; padded steps are skipped (zeros)."""
        if inputs.dim() != 4 or inputs.shape[-1] != self.num_mel_bins:
            raise ValueError(f"BEATsEncoder expects (B, T, L, {self.num_mel_bins}) fbanks, got {tuple(inputs.shape)}")
        real = step_mask(inputs, mask)
        dtype = self.patch_embedding.weight.dtype
        (tokens,) = encode_steps(lambda x: self.extract_features(x.to(dtype)), inputs, real)
        return make_features(tokens, timestamps, real)


def _load_blob(path: str | os.PathLike) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise CrabzooError(f"BEATs checkpoint {file} does not exist; download e.g. BEATs_iter3_plus_AS2M.pt and point `checkpoint` to it")
    try:
        blob = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several types for unreadable files
        raise CrabzooError(
            f"BEATs checkpoint {file} cannot be read with torch.load(weights_only=True) ({str(err)[:200]}); the official "
            "files hold only tensors, dicts, numbers and strings: if this one holds other objects, re-save its 'cfg' as "
            "a plain dict and its 'model' state dict with torch.save in an environment you trust"
        ) from err
    if not isinstance(blob, dict) or "cfg" not in blob or "model" not in blob:
        keys = sorted(blob) if isinstance(blob, dict) else type(blob).__name__
        raise CrabzooError(f"BEATs checkpoint {file} must be a dict with 'cfg' and 'model' (found {keys})")
    return blob


def _check_config(cfg: BEATsConfig) -> None:
    if cfg.input_patch_size <= 0:
        raise CrabzooError(f"BEATs config: input_patch_size must be positive (iter3+ uses 16), got {cfg.input_patch_size}")
    if cfg.encoder_embed_dim % cfg.encoder_attention_heads:
        raise CrabzooError(
            f"BEATs config: encoder_embed_dim {cfg.encoder_embed_dim} is not divisible by "
            f"encoder_attention_heads {cfg.encoder_attention_heads}"
        )
    if cfg.encoder_embed_dim % cfg.conv_pos_groups:
        raise CrabzooError(f"BEATs config: encoder_embed_dim {cfg.encoder_embed_dim} is not divisible by conv_pos_groups {cfg.conv_pos_groups}")
    if cfg.activation_fn != "gelu":
        raise CrabzooError(f"BEATs config: only activation_fn 'gelu' is implemented, got {cfg.activation_fn!r}")
