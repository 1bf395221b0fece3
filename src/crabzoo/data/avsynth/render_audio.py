"""Synthesising the soundtrack of an AVSynth scene.

Each sounding object contributes its category's timbre (harmonics of its pitch, optional noise, vibrato or
sweep) shaped by its rhythm (strikes with an exponential decay, or a steady tone) and gated by the seconds during
which it sounds (with 10 ms ramps). A face scene adds a voice whose pitch contour and syllable tempo carry the
emotion. Background noise is added last. The mix is scaled by a fixed factor (never per clip), so loudness
differences between objects and clips are kept.
"""

from __future__ import annotations

import math

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


def _tone(f: np.ndarray, harmonics: tuple[float, ...], sr: int, roll: float = 0.0) -> np.ndarray:
    """Sum of harmonics of the instantaneous frequency ``f`` (Hz per sample), skipping those above Nyquist.

    The harmonic mix is tabulated over one cycle (4096 points) and read at the running phase, which is exact up
    to the table resolution and much cheaper than one sine per harmonic.
    """
    fmax = float(f.max())
    grid = np.arange(4096, dtype=np.float64) / 4096
    table = np.zeros(4096, dtype=np.float64)
    for k, amp in enumerate(harmonics, start=1):
        if amp == 0.0 or k * fmax >= 0.48 * sr:
            continue
        table += amp / (k**roll) * np.sin(2.0 * np.pi * k * grid)
    peak = np.abs(table).max()
    if peak > 0:
        table /= peak
    cycles = np.cumsum(f, dtype=np.float64) / sr
    index = (np.mod(cycles, 1.0) * 4096).astype(np.int64) & 4095
    return table.astype(np.float32)[index]


def _strikes(t: np.ndarray, rate: float, decay: float) -> np.ndarray:
    """Envelope of strikes ``rate`` times per second, each decaying with time constant ``decay``."""
    since = np.mod(t, 1.0 / rate)
    attack = np.minimum(since / 0.005, 1.0)
    return attack * np.exp(-since / decay)


def object_wave(obj: SceneObject, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """The sound of one object over ``n`` samples (zero where it is silent)."""
    if not any(obj.audible):
        return np.zeros(n, dtype=np.float32)
    cat = obj.cat
    t = np.arange(n, dtype=np.float32) / np.float32(sr)
    f = np.full(n, cat.f0, dtype=np.float32)
    if cat.vibrato:
        f *= 1.0 + cat.vibrato * np.sin(2 * np.pi * 5.5 * t)
    if cat.glide:
        f *= 1.0 + cat.glide * np.sin(2 * np.pi * 0.5 * t)
    rhythm = obj.rhythm
    if rhythm in ("rising", "falling"):  # a one-octave sweep over every 2-s period
        ramp = np.mod(t, 2.0) / 2.0
        f = f * np.power(2.0, ramp if rhythm == "rising" else 1.0 - ramp) * 0.75
    if cat.name == "bird":  # chirps sweep upward inside each strike
        f *= 1.0 + 0.5 * np.mod(t, 1.0 / cat.pulse_rate) * cat.pulse_rate
    wave = _tone(f, cat.harmonics, sr)
    if cat.noise:
        wave = np.float32(1 - cat.noise) * wave + np.float32(cat.noise) * rng.uniform(-1.0, 1.0, n).astype(np.float32)
    pulsed = cat.pulse_rate > 0 if rhythm in (None, "rising", "falling") else rhythm == "pulsed"
    if pulsed:
        rate = cat.pulse_rate if cat.pulse_rate > 0 else 3.0
        decay = cat.decay if cat.pulse_rate > 0 else 0.08
        wave = wave * _strikes(t, rate, decay)
    gain = HEADROOM * 10.0 ** (obj.gain_db / 20.0)
    return (gain * wave * _gate(obj.audible, n, sr)).astype(np.float32)


def voice_wave(emotion: int, n: int, sr: int) -> np.ndarray:
    """A syllabic voice with the pitch contour, tempo and timbre of an emotion."""
    emo = EMOTIONS[emotion]
    t = np.arange(n, dtype=np.float64) / sr
    period = 1.0 / emo.tempo
    pos = np.mod(t, period) / period  # position inside the syllable, 0..1
    semis = emo.contour * pos
    if emo.name == "disgust":
        semis = emo.contour * np.sin(np.pi * pos)
    f = emo.f0 * np.power(2.0, semis / 12.0)
    if emo.tremolo:
        f *= 1.0 + emo.tremolo * np.sin(2 * np.pi * 9.0 * t)
    wave = _tone(f, tuple([1.0] * 12), sr, roll=emo.brightness)
    syllable = np.sin(np.pi * np.clip(pos / 0.75, 0.0, 1.0)) ** 2  # 75% voiced, 25% pause
    loud = 1.0 if emo.name in ("angry", "fear", "happy") else 0.6
    return (HEADROOM * loud * wave * syllable).astype(np.float32)


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
        mix += np.float32(0.25 * scene.noise) * rng.standard_normal(n, dtype=np.float32)
    return np.clip(mix, -1.0, 1.0)


def rms_per_second(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Root-mean-square level of each whole second of ``wave``."""
    seconds = wave.size // sample_rate
    if seconds == 0:
        return np.zeros(0)
    return np.sqrt(np.mean(wave[: seconds * sample_rate].reshape(seconds, sample_rate) ** 2, axis=1))


def loudness_db(gain_db: float) -> float:
    """Peak level in dBFS of an object mixed at ``gain_db``."""
    return 20.0 * math.log10(HEADROOM) + gain_db
