"""Tiny encoders saved in their real on-disk formats and clips to feed them (no download)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from .encoders_helpers import TINY_OPEN_CLIP, TINY_WHISPER

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
