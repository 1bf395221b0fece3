"""Kaldi-compatible log-mel filterbanks, the input features of BEATs.

Two implementations of the same features: :func:`kaldi_fbank` (pure torch, batched, differentiable) and
:func:`kaldi_fbank_native` (``kaldi-native-fbank``, the C++ reference). Both use Kaldi's defaults: Povey window,
pre-emphasis 0.97, DC-offset removal, no dither, power spectrum over a 512-point FFT, HTK mel scale with
triangular bins from ``low_freq`` to Nyquist, ``snip_edges`` framing and a natural log floored at float32
epsilon. :func:`beats_fbank` adds BEATs' scaling (waveform times 2^15) and normalisation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

BEATS_FBANK_MEAN = 15.41663
"""Mean of BEATs' AudioSet fbank features."""

BEATS_FBANK_STD = 6.55582
"""Std of BEATs' AudioSet fbank features (BEATs divides by twice this value)."""

_EPS = float(torch.finfo(torch.float32).eps)


def num_frames(samples: int, sample_rate: int = 16000, frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0) -> int:
    """Frames Kaldi produces with ``snip_edges`` (``1 + (samples - window) // shift``, 0 if too short)."""
    window = int(sample_rate * frame_length_ms / 1000)
    shift = int(sample_rate * frame_shift_ms / 1000)
    return 0 if samples < window else 1 + (samples - window) // shift


def _mel(freq: Tensor) -> Tensor:
    return 1127.0 * torch.log1p(freq / 700.0)


def mel_banks(num_bins: int, padded_window: int, sample_rate: float, low_freq: float = 20.0, high_freq: float = 0.0) -> Tensor:
    """Kaldi's triangular mel filters, ``(num_bins, padded_window // 2 + 1)`` (the Nyquist column is zero).

    Args:
        num_bins: Number of mel bins.
        padded_window: FFT size.
        sample_rate: Sampling rate in Hz.
        low_freq: Lowest band edge in Hz.
        high_freq: Highest band edge in Hz; ``<= 0`` means Nyquist plus this offset (Kaldi's convention).
    """
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    fft_bins = padded_window // 2
    mel_low, mel_high = _mel(torch.tensor(low_freq, dtype=torch.float64)), _mel(torch.tensor(high_freq, dtype=torch.float64))
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins, dtype=torch.float64).unsqueeze(1)
    left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
    mel = _mel(torch.arange(fft_bins, dtype=torch.float64) * (sample_rate / padded_window)).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    weights = torch.where(mel <= center, up, down)
    weights = torch.where((mel > left) & (mel < right), weights, torch.zeros_like(weights))
    return torch.nn.functional.pad(weights, (0, 1)).float()


def _povey_window(length: int) -> Tensor:
    n = torch.arange(length, dtype=torch.float64)
    return (0.5 - 0.5 * torch.cos(2 * math.pi * n / (length - 1))).pow(0.85).float()


def kaldi_fbank(
    waveform: Tensor,
    num_mel_bins: int = 128,
    sample_rate: int = 16000,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    preemphasis: float = 0.97,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
) -> Tensor:
    """Kaldi log-mel filterbanks of waveforms, in pure torch.

    Args:
        waveform: ``(S,)`` or ``(B, S)`` samples (any scale; Kaldi tools expect int16 scale).
        num_mel_bins: Mel bins.
        sample_rate: Sampling rate in Hz.
        frame_length_ms: Window length.
        frame_shift_ms: Hop length.
        preemphasis: Pre-emphasis coefficient.
        low_freq: Lowest mel band edge in Hz.
        high_freq: Highest band edge (``<= 0``: offset from Nyquist).

    Returns:
        ``(F, num_mel_bins)`` or ``(B, F, num_mel_bins)`` float32, ``F`` from :func:`num_frames`.
    """
    squeeze = waveform.dim() == 1
    x = waveform.float().reshape(-1, waveform.shape[-1])
    window = int(sample_rate * frame_length_ms / 1000)
    shift = int(sample_rate * frame_shift_ms / 1000)
    if x.shape[-1] < window:
        raise ValueError(f"kaldi_fbank: {x.shape[-1]} samples is shorter than one {window}-sample window")
    frames = x.unfold(-1, window, shift)  # (B, F, W)
    frames = frames - frames.mean(-1, keepdim=True)
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
    frames = (frames - preemphasis * previous) * _povey_window(window).to(frames.device)
    padded = 1 << (window - 1).bit_length()
    power = torch.fft.rfft(frames, n=padded).abs().pow(2)
    banks = mel_banks(num_mel_bins, padded, sample_rate, low_freq, high_freq).to(power.device)
    feats = torch.clamp(power @ banks.T, min=_EPS).log()
    return feats[0] if squeeze else feats


def kaldi_fbank_native(waveform: np.ndarray, num_mel_bins: int = 128, sample_rate: int = 16000) -> np.ndarray:
    """The same features as :func:`kaldi_fbank` through ``kaldi-native-fbank`` (one waveform ``(S,)``).

    Kaldi refuses mel banks with an empty triangle. At 16 kHz with a 512-point FFT and ``low_freq=20`` that
    happens from 128 bins up (bin 3 falls between two FFT bins), so BEATs' 128-bin features cannot come from
    Kaldi itself; :func:`kaldi_fbank` computes them like ``torchaudio.compliance.kaldi.fbank``, whose empty
    bin is ``log(eps)``. Up to 127 bins both implementations agree (tested at 23, 80 and 100).

    Returns:
        ``(F, num_mel_bins)`` float32.

    Raises:
        ValueError: Kaldi rejects this number of bins (see above).
    """
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = sample_rate
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = num_mel_bins
    opts.mel_opts.low_freq = 20.0
    try:
        computer = knf.OnlineFbank(opts)
    except ValueError as err:
        raise ValueError(
            f"kaldi-native-fbank rejects {num_mel_bins} mel bins at {sample_rate} Hz ({err}); use kaldi_fbank (torch)"
        ) from err
    computer.accept_waveform(sample_rate, np.asarray(waveform, dtype=np.float32).tolist())
    computer.input_finished()
    n = computer.num_frames_ready
    if n == 0:
        return np.zeros((0, num_mel_bins), dtype=np.float32)
    return np.stack([computer.get_frame(i) for i in range(n)]).astype(np.float32)


def beats_fbank(waveform: Tensor | np.ndarray, num_mel_bins: int = 128, sample_rate: int = 16000, backend: str = "torch") -> Tensor:
    """BEATs input features of ``[-1, 1]`` waveforms: fbank of ``waveform * 2**15``, normalised.

    Args:
        waveform: ``(S,)`` or ``(B, S)``.
        num_mel_bins: Mel bins (128 for BEATs).
        sample_rate: Sampling rate (16 kHz for BEATs).
        backend: ``"torch"`` (:func:`kaldi_fbank`) or ``"kaldi"`` (:func:`kaldi_fbank_native`).

    Returns:
        ``(F, num_mel_bins)`` or ``(B, F, num_mel_bins)`` float32, ``(fbank - 15.41663) / (2 * 6.55582)``.
    """
    wav = torch.as_tensor(np.asarray(waveform, dtype=np.float32) if not isinstance(waveform, Tensor) else waveform).float()
    if backend == "torch":
        feats = kaldi_fbank(wav * 32768.0, num_mel_bins=num_mel_bins, sample_rate=sample_rate)
    elif backend == "kaldi":
        rows = wav.reshape(-1, wav.shape[-1]).numpy() * 32768.0
        feats = torch.from_numpy(np.stack([kaldi_fbank_native(r, num_mel_bins, sample_rate) for r in rows]))
        feats = feats[0] if wav.dim() == 1 else feats
    else:
        raise ValueError(f"beats_fbank: unknown backend {backend!r}; use 'torch' or 'kaldi'")
    return (feats - BEATS_FBANK_MEAN) / (2 * BEATS_FBANK_STD)
