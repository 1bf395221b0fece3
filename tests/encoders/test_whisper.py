"""Whisper encoder: offline save/load, exact match with transformers in segment mode, crop mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crabzoo.encoders.whisper import WhisperAudioEncoder
from crabzoo.errors import CrabzooError

from .encoders_helpers import TINY_WHISPER, audio_clip


def test_from_pretrained_folder_matches_transformers(whisper_dir) -> None:
    from transformers import WhisperFeatureExtractor, WhisperModel

    enc = WhisperAudioEncoder.from_pretrained(str(whisper_dir))
    clip = audio_clip(3)
    feats = enc(enc.preprocess(clip).unsqueeze(0))
    assert feats.tokens.shape == (1, 3, 50, 32)
    # reference: the released recipe, one padded window per segment through WhisperModel's encoder
    ref_model = WhisperModel.from_pretrained(whisper_dir).eval()
    mel = WhisperFeatureExtractor.from_pretrained(whisper_dir)(list(clip.segments), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        ref = ref_model.encoder(mel["input_features"]).last_hidden_state
    assert torch.allclose(feats.tokens[0], ref, atol=1e-5)


def test_short_segments_are_padded_with_whisper_silence() -> None:
    # a 2-s window fed 0.5-s segments: the kept tokens match Whisper on the zero-padded waveform
    cfg = {**TINY_WHISPER, "max_source_positions": 100}
    torch.manual_seed(0)
    enc = WhisperAudioEncoder(config=cfg)
    clip = audio_clip(2, seconds=0.5)
    x = enc.preprocess(clip)
    assert x.shape == (2, 16, 50)
    tokens = enc(x.unsqueeze(0)).tokens[0]
    assert tokens.shape == (2, 25, 32)
    mel = enc.features(list(clip.segments), sampling_rate=16000, return_tensors="pt")["input_features"]
    with torch.no_grad():
        ref = enc.whisper(mel).last_hidden_state[:, :25]
    # only the frames next to the end of the signal differ (Whisper's reflect-padded STFT sees the signal)
    assert (tokens - ref).abs().max().item() < 0.05
    assert (tokens - ref).abs().mean().item() < 5e-3


def test_crop_mode_encodes_the_crop_as_one_signal() -> None:
    cfg = {**TINY_WHISPER, "max_source_positions": 100}  # 2-s windows
    torch.manual_seed(0)
    enc = WhisperAudioEncoder(config=cfg, mode="crop")
    clip = audio_clip(2, seconds=1.0)
    x = enc.preprocess(clip)
    assert x.shape == (2, 16, 100)
    tokens = enc(x.unsqueeze(0)).tokens[0]
    mel = enc.features([clip.waveform], sampling_rate=16000, return_tensors="pt")["input_features"]
    with torch.no_grad():
        ref = enc.whisper(mel).last_hidden_state[0]
    assert torch.allclose(tokens.reshape(100, 32), ref, atol=1e-5)
    assert WhisperAudioEncoder(config=cfg, mode="crop", pool=2)(x.unsqueeze(0)).tokens.shape == (1, 2, 25, 32)


def test_errors(whisper_dir, tmp_path) -> None:
    with pytest.raises(CrabzooError, match="mode"):
        WhisperAudioEncoder(config=TINY_WHISPER, mode="chunks")
    with pytest.raises(CrabzooError, match="cannot load"):
        WhisperAudioEncoder(str(tmp_path / "nothing"))
    enc = WhisperAudioEncoder(str(whisper_dir))
    with pytest.raises(CrabzooError, match="do not fit"):
        enc.preprocess(audio_clip(1, seconds=2.0))
    clip = audio_clip(1)
    clip.segments = clip.segments.astype(np.float64)
    assert enc.preprocess(clip).dtype == torch.float32
