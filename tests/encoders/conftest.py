"""Tiny encoders saved in their real on-disk formats and clips to feed them (no download)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

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


@pytest.fixture(scope="session")
def whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny WhisperModel + feature extractor written with save_pretrained."""
    from transformers import WhisperConfig, WhisperModel

    from crabzoo.encoders.whisper import WhisperAudioEncoder

    out = tmp_path_factory.mktemp("whisper")
    torch.manual_seed(0)
    config = WhisperConfig(**TINY_WHISPER)
    WhisperModel(config).save_pretrained(out)
    WhisperAudioEncoder.feature_extractor_for(config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def open_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny open_clip model in open_clip's local-dir format (config JSON + safetensors weights)."""
    import open_clip
    from safetensors.torch import save_file

    out = tmp_path_factory.mktemp("open_clip")
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_OPEN_CLIP, "preprocess_cfg": {}}))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{out}", pretrained=None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "open_clip_model.safetensors"))
    return out


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest single-threaded (the shared CI machine oversubscribes OpenMP threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
