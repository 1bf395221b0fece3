"""Synthesising the soundtrack of an AVSynth scene.

Each sounding object contributes its category's timbre (harmonics of its pitch, optional noise, vibrato or
sweep) shaped by its rhythm (strikes with an exponential decay, or a steady tone) and gated by the seconds during
which it sounds (with 10 ms ramps). A face scene adds a voice whose pitch contour and syllable tempo carry the
emotion. Background noise is added last. The mix is scaled by a fixed factor (never per clip), so loudness
differences between objects and clips are kept.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from crabzoo.data.avsynth.world import EMOTIONS, Scene, SceneObject

HEADROOM = 0.3
"""Peak amplitude of one object at 0 dB before mixing."""


def _gate(flags: list[bool], n: int, sr: int) -> np.ndarray:
    """Per-sample on/off envelope for per-second flags, with 10 ms linear ramps inside the sounding seconds."""
    gate = np.repeat(np.asarray(flags, dtype=np.float32), sr)[:n]
    if gate.size < n:
        gate = np.pad(gate, (0, n - gate.size))
    ramp = max(1, sr // 100)
    up = np.arange(1, ramp + 1, dtype=np.float32) / ramp
    padded = [False] + list(flags) + [False]
    for i in range(len(flags)):
        if flags[i] and not padded[i]:  # onset at second i
            a = i * sr
            gate[a : a + ramp] = np.minimum(gate[a : a + ramp], up[: max(0, min(ramp, n - a))])
        if flags[i] and not padded[i + 2]:  # offset at the end of second i
            b = min((i + 1) * sr, n)
            seg = gate[max(0, b - ramp) : b]
            gate[max(0, b - ramp) : b] = np.minimum(seg, up[::-1][ramp - seg.size :] if seg.size else seg)
    return gate


TABLE = 4096
"""Points of the one-cycle wavetable of :func:`_tone` (a power of two, so the phase wraps with a bit mask)."""


def white_noise(rng: np.random.Generator, shape: int | tuple[int, ...], std: float) -> np.ndarray:
    """Float32 white noise of standard deviation ``std``, uniformly distributed.

    Uniform noise is several times cheaper to draw than Gaussian noise, and a synthetic background needs no
    particular distribution.
    """
    noise = rng.random(shape, dtype=np.float32)
    noise -= np.float32(0.5)
    noise *= np.float32(std * math.sqrt(12.0))
    return noise


def _frac(x: np.ndarray) -> np.ndarray:
    """``x mod 1`` for non-negative ``x``, in place (``np.mod`` is many times slower than ``floor``)."""
    return np.subtract(x, np.floor(x), out=x)


@lru_cache(maxsize=4)
def _times(n: int, sr: int) -> np.ndarray:
    """Read-only float32 sample times ``arange(n) / sr`` (shared by every object of every clip)."""
    t = np.arange(n, dtype=np.float32) / np.float32(sr)
    t.flags.writeable = False
    return t


def _tone(f: np.ndarray, harmonics: tuple[float, ...], sr: int, roll: float = 0.0) -> np.ndarray:
    """Sum of harmonics of the instantaneous frequency ``f`` (Hz per sample), skipping those above Nyquist.

    The harmonic mix is tabulated over one cycle and read at the running phase (accumulated in float64, in table
    steps, and wrapped with a bit mask), which is exact up to the table resolution and much cheaper than one sine
    per harmonic.
    """
    fmax = float(f.max())
    grid = np.arange(TABLE, dtype=np.float64) / TABLE
    table = np.zeros(TABLE, dtype=np.float64)
    for k, amp in enumerate(harmonics, start=1):
        if amp == 0.0 or k * fmax >= 0.48 * sr:
            continue
        table += amp / (k**roll) * np.sin(2.0 * np.pi * k * grid)
    peak = np.abs(table).max()
    if peak > 0:
        table /= peak
    phase = (f * np.float32(TABLE / sr)).astype(np.float64)
    np.cumsum(phase, out=phase)
    index = phase.astype(np.int64)
    index &= TABLE - 1
    return table.astype(np.float32)[index]


def _strikes(t: np.ndarray, rate: float, decay: float) -> np.ndarray:
    """Envelope of strikes ``rate`` times per second, each decaying with time constant ``decay``."""
    since = _frac(t * np.float32(rate)) * np.float32(1.0 / rate)
    attack = np.minimum(since * np.float32(1.0 / 0.005), np.float32(1.0))
    return attack * np.exp(since * np.float32(-1.0 / decay))


def object_wave(obj: SceneObject, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """The sound of one object over ``n`` samples (zero where it is silent)."""
    if not any(obj.audible):
        return np.zeros(n, dtype=np.float32)
    cat = obj.cat
    t = _times(n, sr)
    two_pi = np.float32(2 * np.pi)
    f = np.full(n, cat.f0, dtype=np.float32)
    if cat.vibrato:
        f *= 1.0 + np.float32(cat.vibrato) * np.sin(two_pi * np.float32(5.5) * t)
    if cat.glide:
        f *= 1.0 + np.float32(cat.glide) * np.sin(two_pi * np.float32(0.5) * t)
    rhythm = obj.rhythm
    if rhythm in ("rising", "falling"):  # a one-octave sweep over every 2-s period
        ramp = _frac(t * np.float32(0.5))
        f *= np.exp2(ramp if rhythm == "rising" else 1.0 - ramp) * np.float32(0.75)
    if cat.name == "bird":  # chirps sweep upward inside each strike
        f *= 1.0 + np.float32(0.5) * _frac(t * np.float32(cat.pulse_rate))
    wave = _tone(f, cat.harmonics, sr)
    if cat.noise:
        wave *= np.float32(1 - cat.noise)
        wave += white_noise(rng, n, cat.noise / math.sqrt(3.0))  # uniform in [-noise, noise]
    pulsed = cat.pulse_rate > 0 if rhythm in (None, "rising", "falling") else rhythm == "pulsed"
    if pulsed:
        rate = cat.pulse_rate if cat.pulse_rate > 0 else 3.0
        decay = cat.decay if cat.pulse_rate > 0 else 0.08
        wave *= _strikes(t, rate, decay)
    wave *= _gate(obj.audible, n, sr)
    wave *= np.float32(HEADROOM * 10.0 ** (obj.gain_db / 20.0))
    return wave


def voice_wave(emotion: int, n: int, sr: int) -> np.ndarray:
    """A syllabic voice with the pitch contour, tempo and timbre of an emotion."""
    emo = EMOTIONS[emotion]
    t = _times(n, sr)
    pos = _frac(t * np.float32(emo.tempo))  # position inside the syllable, 0..1
    if emo.name == "disgust":
        semis = np.float32(emo.contour) * np.sin(np.float32(np.pi) * pos)
    else:
        semis = np.float32(emo.contour) * pos
    f = np.float32(emo.f0) * np.exp2(semis * np.float32(1.0 / 12.0))
    if emo.tremolo:
        f *= 1.0 + np.float32(emo.tremolo) * np.sin(np.float32(2 * np.pi * 9.0) * t)
    wave = _tone(f, tuple([1.0] * 12), sr, roll=emo.brightness)
    syllable = np.sin(np.float32(np.pi) * np.minimum(pos * np.float32(1 / 0.75), np.float32(1.0))) ** 2  # 75% voiced
    loud = 1.0 if emo.name in ("angry", "fear", "happy") else 0.6
    wave *= syllable
    wave *= np.float32(HEADROOM * loud)
    return wave


def render_audio(scene: Scene, sample_rate: int) -> np.ndarray:
    """The mono soundtrack of ``scene``: float32 ``(duration * sample_rate,)`` in [-1, 1]."""
    n = int(scene.duration * sample_rate)
    rng = np.random.default_rng([scene.seed, 3])
    mix = np.zeros(n, dtype=np.float32)
    for obj in scene.objects:
        mix += object_wave(obj, n, sample_rate, rng)
    if scene.face is not None:
        mix += voice_wave(scene.face, n, sample_rate)
    if scene.noise > 0:
        mix += white_noise(rng, n, 0.25 * scene.noise)
    return np.clip(mix, -1.0, 1.0, out=mix)


def rms_per_second(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Root-mean-square level of each whole second of ``wave``."""
    seconds = wave.size // sample_rate
    if seconds == 0:
        return np.zeros(0)
    return np.sqrt(np.mean(wave[: seconds * sample_rate].reshape(seconds, sample_rate) ** 2, axis=1))


def loudness_db(gain_db: float) -> float:
    """Peak level in dBFS of an object mixed at ``gain_db``."""
    return 20.0 * math.log10(HEADROOM) + gain_db
