"""Media policies of Crab+: per-task audio crops and endpoint-inclusive frame sampling (numpy only).

Audio crops follow ``process_audio_by_task`` of the Crab+ code (AVUIE_SPEC §2.2). A clip shorter than one
second is first right-padded with zeros to one second. ``s = floor(N / K)`` is the length of a "virtual second"
for a clip of ``N`` samples split into ``K`` parts; it is not necessarily the sample rate. Each policy returns an
:class:`~crabzoo.data.schema.AudioClip` whose rows are the virtual seconds the model hears, in order, so that
``clip.waveform`` is exactly the waveform Crab+ feeds to its audio encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crabzoo.data.schema import AudioClip

SAMPLE_RATE = 16000


def frame_indices(total_frames: int, num_frames: int) -> list[int]:
    """Crab+ frame sampling: ``round(linspace(0, total_frames - 1, num_frames))`` (first and last included).

    A video shorter than ``num_frames`` repeats frames (Crab+ would fail and retry with 2 frames).
    """
    if total_frames <= 0:
        return [0] * num_frames
    return [int(i) for i in np.round(np.linspace(0, total_frames - 1, num_frames))]


def pad_to_one_second(wave: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 waveform, right-padded with zeros to at least ``sr`` samples."""
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    if len(wave) < sr:
        wave = np.concatenate([wave, np.zeros(sr - len(wave), dtype=np.float32)])
    return wave


def _fit(chunk: np.ndarray, length: int, front: bool = False) -> np.ndarray:
    """``chunk`` zero-padded (at the back, or the front) or truncated to ``length`` samples."""
    if len(chunk) >= length:
        return chunk[:length]
    pad = np.zeros(length - len(chunk), dtype=np.float32)
    return np.concatenate([pad, chunk] if front else [chunk, pad])


@dataclass(frozen=True)
class AudioPolicy:
    """One audio crop policy.

    Attributes:
        kind: ``segments`` (K chunks concatenated), ``one`` (chunk ``idx`` of K), ``first`` (first ``seconds``
            at the sample rate) or ``avqa`` (ten 2-s windows around 0, 6, ..., 54 of K=60 virtual seconds).
        parts: ``K``.
        seconds: Seconds kept by ``first``.
    """

    kind: str
    parts: int = 10
    seconds: int = 4

    def __call__(self, wave: np.ndarray, idx: int = 0, sr: int = SAMPLE_RATE) -> AudioClip:
        """Crop a decoded waveform; ``idx`` selects the chunk of the ``one`` policy."""
        wave = pad_to_one_second(wave, sr)
        n = len(wave)
        if self.kind == "first":
            rows = [_fit(wave[i * sr : (i + 1) * sr], sr) for i in range(self.seconds)]
            return AudioClip(np.stack(rows), sr, np.arange(self.seconds, dtype=np.float64))
        s = n // self.parts
        if self.kind == "segments":
            rows = [_fit(wave[i * s : (i + 1) * s], s) for i in range(self.parts)]
            return AudioClip(np.stack(rows), sr, np.arange(self.parts, dtype=np.float64) * s / sr)
        if self.kind == "one":
            i = int(idx)
            row = _fit(wave[i * s : (i + 1) * s], s)
            return AudioClip(row[None], sr, np.array([i * s / sr], dtype=np.float64))
        if self.kind == "avqa":
            return self._avqa(wave, s, sr)
        raise ValueError(f"unknown audio policy {self.kind!r}")

    def _avqa(self, wave: np.ndarray, s: int, sr: int) -> AudioClip:
        rows, starts = [], []
        for centre in range(0, self.parts, 6):
            lo, hi = max(0.0, centre - 0.5), min(float(self.parts), centre + 1.5)
            window = wave[int(lo * s) : int(hi * s)]
            window = _fit(window, 2 * s, front=centre - 0.5 < 0)
            rows += [window[:s], window[s:]]
            starts += [(centre - 0.5) * s / sr, (centre + 0.5) * s / sr]
        return AudioClip(np.stack(rows), sr, np.asarray(starts, dtype=np.float64))


SEGMENTS_10 = AudioPolicy("segments", parts=10)
"""Ten 1-s chunks (avqa_thu, ks, ucf, avvp, ave, a2v, v2a, unav, avcap)."""
SEGMENTS_5 = AudioPolicy("segments", parts=5)
"""Five chunks, i.e. the whole clip (arig)."""
FIRST_4S = AudioPolicy("first", seconds=4)
"""Exactly the first 4 s at 16 kHz (emotion tasks)."""
ONE_OF_5 = AudioPolicy("one", parts=5)
"""Chunk ``idx`` of 5 (s4, ms3)."""
ONE_OF_10 = AudioPolicy("one", parts=10)
"""Chunk ``idx`` of 10 (ref_avs)."""
AVQA_WINDOWS = AudioPolicy("avqa", parts=60)
"""Ten 2-s windows centred on 0.5 s after 0, 6, ..., 54 of 60 virtual seconds (MUSIC-AVQA)."""


def concat_clips(clips: list[AudioClip]) -> AudioClip:
    """Concatenate cropped clips in time (v2a); rows of unequal length are zero-padded at their end."""
    width = max(c.segments.shape[1] for c in clips)
    rows = [np.pad(c.segments, ((0, 0), (0, width - c.segments.shape[1]))) for c in clips]
    offset, starts = 0.0, []
    for c in clips:
        starts.append(c.starts + offset)
        offset += c.segments.size / c.sample_rate
    return AudioClip(np.concatenate(rows), clips[0].sample_rate, np.concatenate(starts))
