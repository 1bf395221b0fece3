"""Tiny encoder configs and clips shared by the encoder tests (a module, not conftest.py, so tests import it)."""

from __future__ import annotations

import numpy as np

from crabzoo.data.schema import AudioClip, VisualClip

TINY_WHISPER = {
    "num_mel_bins": 16,
    "d_model": 32,
    "encoder_layers": 2,
    "encoder_attention_heads": 4,
    "encoder_ffn_dim": 64,
    "decoder_layers": 1,
    "decoder_attention_heads": 4,
    "decoder_ffn_dim": 64,
    "max_source_positions": 50,
    "max_target_positions": 16,
}
"""A 2-layer Whisper encoder with a 1-s window (100 mel frames -> 50 tokens)."""

TINY_CLIP_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4, "image_size": 32, "patch_size": 8}
"""transformers CLIPVisionConfig of a 3-block ViT on 32x32 images (16 patches)."""

TINY_OPEN_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 64, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}
"""open_clip model config of a 3-block ViT on 32x32 images."""


def audio_clip(t: int = 2, seconds: float = 1.0, seed: int = 0) -> AudioClip:
    """``t`` segments of a tone plus noise, at 16 kHz."""
    rng = np.random.default_rng(seed)
    s = int(16000 * seconds)
    n = np.arange(t * s) / 16000
    wave = 0.3 * np.sin(2 * np.pi * (220 + 110 * seed) * n) + 0.05 * rng.standard_normal(t * s)
    return AudioClip(wave.reshape(t, s).astype(np.float32), 16000, np.arange(t, dtype=np.float64) * seconds)


def visual_clip(t: int = 2, size: tuple[int, int] = (40, 48), seed: int = 0) -> VisualClip:
    """``t`` random RGB frames."""
    rng = np.random.default_rng(seed)
    return VisualClip(rng.integers(0, 256, (t, *size, 3), dtype=np.uint8), np.arange(t, dtype=np.float64) * 0.5)
