"""Kaldi fbank: the torch implementation against kaldi-native-fbank, and BEATs' normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crabzoo.encoders.fbank import BEATS_FBANK_MEAN, BEATS_FBANK_STD, beats_fbank, kaldi_fbank, kaldi_fbank_native, mel_banks, num_frames

from .encoders_helpers import audio_clip


@pytest.mark.parametrize("bins", [23, 80, 100])
def test_torch_fbank_matches_kaldi_native(bins: int) -> None:
    wave = audio_clip(1, seconds=1.3).waveform * 32768.0
    ours = kaldi_fbank(torch.from_numpy(wave), num_mel_bins=bins)
    ref = torch.from_numpy(kaldi_fbank_native(wave, num_mel_bins=bins))
    assert ours.shape == ref.shape == (num_frames(wave.shape[0]), bins)
    diff = (ours - ref).abs()  # log-energies of magnitude ~25, float32 on both sides
    assert diff.max().item() < 5e-3
    assert diff.mean().item() < 1e-4


def test_kaldi_rejects_128_bins_and_torch_keeps_the_empty_bin() -> None:
    wave = audio_clip(1).waveform * 32768.0
    with pytest.raises(ValueError, match="128 mel bins"):
        kaldi_fbank_native(wave, num_mel_bins=128)
    banks = mel_banks(128, 512, 16000.0)
    assert banks.shape == (128, 257)
    assert (banks.sum(1) == 0).nonzero().flatten().tolist() == [3]
    feats = kaldi_fbank(torch.from_numpy(wave), num_mel_bins=128)
    assert torch.allclose(feats[:, 3], torch.full((98,), math.log(torch.finfo(torch.float32).eps)))


def test_frame_counts() -> None:
    assert num_frames(16000) == 98
    assert num_frames(32000) == 198
    assert num_frames(399) == 0
    assert kaldi_fbank(torch.zeros(2, 32000)).shape == (2, 198, 128)


def test_beats_normalisation_of_silence() -> None:
    # silence -> every bin is log(float32 eps) = -15.942385; normalised with 2 x std
    feats = beats_fbank(np.zeros(16000, dtype=np.float32))
    expected = (math.log(2.0**-23) - 15.41663) / (2 * 6.55582)
    assert feats.shape == (98, 128)
    assert torch.allclose(feats, torch.full_like(feats, expected))
    assert abs(expected - (-2.391693)) < 1e-5
    assert (BEATS_FBANK_MEAN, BEATS_FBANK_STD) == (15.41663, 6.55582)


def test_beats_fbank_scales_waveform_by_2_pow_15() -> None:
    wave = audio_clip(1).waveform
    direct = (kaldi_fbank(torch.from_numpy(wave) * 32768.0) - 15.41663) / (2 * 6.55582)
    assert torch.allclose(beats_fbank(wave), direct)
    batched = beats_fbank(np.stack([wave, wave[::-1].copy()]))
    assert batched.shape == (2, 98, 128) and torch.allclose(batched[0], direct, atol=1e-5)


def test_kaldi_backend_agrees_below_128_bins() -> None:
    wave = audio_clip(1).waveform
    a = beats_fbank(wave, num_mel_bins=80, backend="torch")
    b = beats_fbank(wave, num_mel_bins=80, backend="kaldi")
    assert (a - b).abs().max().item() < 1e-4
