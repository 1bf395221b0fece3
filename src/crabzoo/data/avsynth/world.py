"""The AVSynth world: sound-emitting object categories, emotions, actions, difficulty knobs and scenes.

Every category has a visual identity (shape, colour, texture) and an acoustic identity (fundamental pitch,
harmonics, rhythm, envelope). A :class:`Scene` places 1-3 objects in a clip, each with the seconds during which
it is visible and the seconds during which it sounds, so silent visible distractors and audible off-screen
sources are both expressible. Scenes are plain data: rendering lives in ``render_video`` / ``render_audio``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from crabzoo.errors import CrabzooError


@dataclass(frozen=True)
class Category:
    """A sound-emitting object category.

    Attributes:
        name: Label used in every task (``"bell"``).
        shape: Drawn shape (see ``render_video.SHAPES``).
        colour: Colour name (key of :data:`COLOURS`).
        texture: ``solid``, ``stripes``, ``checker`` or ``dots``.
        f0: Fundamental frequency in Hz.
        harmonics: Relative amplitude of harmonics 1, 2, 3, ...
        pulse_rate: Strikes per second (0 for a continuous sound).
        decay: Decay time constant of each strike in seconds (pulsed sounds).
        noise: Share of broadband noise in the timbre (0..1).
        vibrato: Depth of the pitch vibrato (fraction of f0).
        glide: Depth of a slow pitch sweep (fraction of f0, 0.5 Hz), e.g. a siren.
        sound: Words describing the sound, used in reasoning text.
    """

    name: str
    shape: str
    colour: str
    texture: str
    f0: float
    harmonics: tuple[float, ...]
    pulse_rate: float
    decay: float
    noise: float
    vibrato: float
    glide: float
    sound: str

    @property
    def looks(self) -> str:
        """Visual description, e.g. ``"red striped circle"``."""
        tex = {"solid": "", "stripes": "striped ", "checker": "checkered ", "dots": "dotted "}[self.texture]
        return f"{self.colour} {tex}{self.shape}"


COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 225, 40),
    "green": (30, 160, 60),
    "cyan": (40, 215, 225),
    "blue": (50, 80, 235),
    "purple": (130, 50, 190),
    "magenta": (235, 50, 200),
    "lime": (170, 245, 90),
    "pink": (250, 160, 185),
    "brown": (140, 85, 35),
    "white": (245, 245, 245),
}
"""Object colours (RGB), chosen to be far apart."""

CATEGORIES: tuple[Category, ...] = (
    Category("bell", "circle", "red", "solid", 880.0, (1.0, 0.0, 0.4, 0.0, 0.2), 2.0, 0.25, 0.0, 0.0, 0.0,
             "a high ringing tone struck twice a second"),
    Category("drum", "square", "orange", "checker", 110.0, (1.0, 0.5), 3.0, 0.08, 0.6, 0.0, 0.0,
             "low thumping beats three times a second"),
    Category("violin", "triangle", "yellow", "stripes", 660.0, (1.0, 0.7, 0.5, 0.4, 0.3, 0.2), 0.0, 0.0, 0.0,
             0.02, 0.0, "a bright bowed tone with vibrato"),
    Category("flute", "diamond", "green", "solid", 1320.0, (1.0, 0.1), 0.0, 0.0, 0.05, 0.01, 0.0,
             "a pure, breathy high whistle"),
    Category("trumpet", "cross", "cyan", "solid", 440.0, (1.0, 0.9, 0.8, 0.6, 0.5, 0.4, 0.3), 0.0, 0.0, 0.0,
             0.0, 0.0, "a loud brassy mid-pitched tone"),
    Category("guitar", "ring", "blue", "solid", 220.0, (1.0, 0.6, 0.4, 0.2), 2.0, 0.35, 0.0, 0.0, 0.0,
             "plucked low notes twice a second"),
    Category("piano", "hbar", "purple", "stripes", 523.0, (1.0, 0.5, 0.25, 0.12), 1.5, 0.5, 0.0, 0.0, 0.0,
             "struck mid notes that fade slowly"),
    Category("dog", "x", "magenta", "solid", 330.0, (1.0, 0.8, 0.6), 2.5, 0.1, 0.3, 0.0, 0.0,
             "short rough barks"),
    Category("bird", "semicircle", "lime", "dots", 2200.0, (1.0, 0.2), 4.0, 0.06, 0.0, 0.08, 0.0,
             "rapid very high chirps"),
    Category("siren", "vbar", "pink", "solid", 750.0, (1.0, 0.3), 0.0, 0.0, 0.0, 0.0, 0.25,
             "a slowly wailing up-and-down tone"),
    Category("engine", "frame", "brown", "checker", 80.0, (1.0, 0.9, 0.8, 0.7, 0.6, 0.5), 0.0, 0.0, 0.35, 0.0,
             0.0, "a very low rumbling hum"),
    Category("clock", "ellipse", "white", "dots", 3000.0, (1.0,), 2.0, 0.015, 0.5, 0.0, 0.0,
             "sharp high ticks twice a second"),
)
"""The 12 object categories shared by the event, segmentation, grounding, QA, matching and captioning tasks."""

CATEGORY_BY_NAME: dict[str, Category] = {c.name: c for c in CATEGORIES}

UNSEEN_CATEGORIES: tuple[str, ...] = ("siren", "clock")
"""Categories never referred to in ref_avs training records; they form the ``test_u`` (unseen) split."""


@dataclass(frozen=True)
class Emotion:
    """An emotion: a face glyph (mouth, brows) plus prosody (pitch, contour, tempo).

    Attributes:
        name: Label (CREMA-D style names).
        mouth: ``smile``, ``frown``, ``flat``, ``open`` or ``wavy``.
        brows: ``none``, ``angry`` (inner ends down), ``worried`` (inner ends up) or ``raised``.
        f0: Voice pitch in Hz.
        contour: Pitch movement over each syllable in semitones (positive rises).
        tempo: Syllables per second.
        tremolo: Depth of pitch tremolo (fear).
        brightness: Harmonic roll-off exponent (lower is brighter, harsher).
        prosody: Words describing the voice, used in reasoning text.
    """

    name: str
    mouth: str
    brows: str
    f0: float
    contour: float
    tempo: float
    tremolo: float
    brightness: float
    prosody: str


EMOTIONS: tuple[Emotion, ...] = (
    Emotion("angry", "flat", "angry", 210.0, 0.0, 5.0, 0.0, 0.6, "a loud, harsh, fast voice at a level pitch"),
    Emotion("disgust", "wavy", "raised", 150.0, -3.0, 2.0, 0.0, 1.2, "a low, slow voice that dips"),
    Emotion("fear", "open", "worried", 300.0, 2.0, 4.5, 0.06, 1.0, "a high, trembling, quick voice"),
    Emotion("happy", "smile", "none", 240.0, 5.0, 4.0, 0.0, 1.0, "a high voice rising on every syllable"),
    Emotion("neutral", "flat", "none", 180.0, 0.0, 3.0, 0.0, 1.5, "a calm voice at a steady pitch"),
    Emotion("sad", "frown", "worried", 130.0, -5.0, 1.5, 0.0, 1.8, "a low, slow voice falling on every syllable"),
)
"""Emotion classes of the ``emotion`` task."""


@dataclass(frozen=True)
class Action:
    """A scene category defined jointly by a motion pattern and a sound pattern.

    Neither modality alone identifies the class: every motion is shared by two classes that differ only in
    their sound, and every sound pattern is shared by classes that differ only in their motion.

    Attributes:
        name: Class label as written in the annotations.
        motion: ``vertical``, ``horizontal``, ``circular`` or ``pulsing`` (size).
        sound: ``pulsed``, ``steady``, ``rising`` or ``falling``.
    """

    name: str
    motion: str
    sound: str


KS_ACTIONS: tuple[Action, ...] = (
    Action("hopping", "vertical", "pulsed"),
    Action("floating", "vertical", "steady"),
    Action("rolling", "horizontal", "pulsed"),
    Action("gliding", "horizontal", "steady"),
    Action("spinning", "circular", "pulsed"),
    Action("orbiting", "circular", "steady"),
)
"""Action classes of ``ks`` (motion x rhythm)."""

UCF_ACTIONS: tuple[Action, ...] = (
    Action("ClimbUp", "vertical", "rising"),
    Action("DropDown", "vertical", "falling"),
    Action("SwingRise", "horizontal", "rising"),
    Action("SwingFall", "horizontal", "falling"),
    Action("WhirlRise", "circular", "rising"),
    Action("WhirlFall", "circular", "falling"),
    Action("PumpRise", "pulsing", "rising"),
    Action("PumpFall", "pulsing", "falling"),
)
"""Action classes of ``ucf`` (motion x pitch contour); three motions are shared with ``ks``."""

SLOTS: dict[str, float] = {"left": 0.2, "middle": 0.5, "right": 0.8}
"""Horizontal centre of each screen position (fraction of the width)."""


def position_name(x: float) -> str:
    """``left`` / ``middle`` / ``right`` for a horizontal centre in [0, 1]."""
    return "left" if x < 0.36 else "right" if x > 0.64 else "middle"


@dataclass(frozen=True)
class Knobs:
    """Difficulty and format knobs of AVSynth (all have small, fast defaults).

    Attributes:
        duration: Clip length in seconds for the video tasks (integer, 4..60). Image tasks use 5 s (s4/ms3/arig)
            and 10 s (ref_avs) as the release does.
        size: Frame width and height in pixels (even, 16..512).
        fps: Video frame rate (1..30); at least 10 frames per clip are needed, so ``fps * duration >= 10``.
        noise: Background noise level in [0, 1] (audio noise amplitude and pixel noise).
        max_objects: Most objects per scene (1..3).
        distractor_rate: Probability of a silent visible distractor and, separately, of an off-screen sound (0..1).
        motion: Motion amplitude of objects in [0, 1] (fraction of a slot).
        test_fraction: Share of each task's clips written to ``test.json`` (0..0.9).
        sample_rate: Audio sample rate of the written files (Hz).
        audio_format: ``wav`` (every separate audio file is a 16-bit WAV, fast) or ``release`` (the release's
            extension per task: ``.mp3`` for a2v, v2a, avqa, avqa_thu, ave, unav, avvp, avcap; ``.wav`` elsewhere).
        soundtrack: Mux the soundtrack into every video (AAC in MP4s, 16-bit PCM in the ucf AVIs); the pipeline
            reads the separate audio file instead.
    """

    duration: int = 10
    size: int = 64
    fps: int = 2
    noise: float = 0.05
    max_objects: int = 3
    distractor_rate: float = 0.3
    motion: float = 0.3
    test_fraction: float = 0.2
    sample_rate: int = 16000
    audio_format: str = "wav"
    soundtrack: bool = True

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise CrabzooError(f"AVSynth knob {what}")

        if self.audio_format not in ("wav", "release"):
            raise CrabzooError(f"AVSynth knob audio_format must be 'wav' or 'release', got {self.audio_format!r}")
        if not isinstance(self.soundtrack, bool):
            raise CrabzooError(f"AVSynth knob soundtrack must be true or false, got {self.soundtrack!r}")
        for f in fields(self):
            if f.name in ("audio_format", "soundtrack"):
                continue
            value = getattr(self, f.name)
            expected = int if f.type in ("int", int) else float
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (expected is int and not float(value).is_integer()):
                raise CrabzooError(f"AVSynth knob {f.name} must be a {expected.__name__}, got {value!r}")
            object.__setattr__(self, f.name, expected(value))
        need(4 <= self.duration <= 60, f"duration must be an integer in [4, 60] seconds, got {self.duration}")
        need(16 <= self.size <= 512 and self.size % 2 == 0, f"size must be an even integer in [16, 512], got {self.size}")
        need(1 <= self.fps <= 30, f"fps must be in [1, 30], got {self.fps}")
        need(self.fps * self.duration >= 10, f"fps * duration must be >= 10 (10 frames are sampled), got {self.fps}*{self.duration}")
        need(0.0 <= self.noise <= 1.0, f"noise must be in [0, 1], got {self.noise}")
        need(1 <= self.max_objects <= 3, f"max_objects must be 1, 2 or 3, got {self.max_objects}")
        need(0.0 <= self.distractor_rate <= 1.0, f"distractor_rate must be in [0, 1], got {self.distractor_rate}")
        need(0.0 <= self.motion <= 1.0, f"motion must be in [0, 1], got {self.motion}")
        need(0.0 <= self.test_fraction <= 0.9, f"test_fraction must be in [0, 0.9], got {self.test_fraction}")
        need(8000 <= self.sample_rate <= 48000, f"sample_rate must be in [8000, 48000] Hz, got {self.sample_rate}")

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Knobs:
        """Build from a dict, rejecting unknown names with the list of valid ones."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise CrabzooError(f"unknown AVSynth knob(s) {unknown}; valid knobs: {sorted(names)}")
        return cls(**options)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for the manifest)."""
        return asdict(self)


@dataclass
class SceneObject:
    """One object of a scene.

    Attributes:
        category: Index into :data:`CATEGORIES`.
        x: Horizontal centre (fraction of width).
        y: Vertical centre (fraction of height).
        radius: Half-size (fraction of the frame size).
        visible: Per-second visibility (``False`` everywhere: an off-screen source).
        audible: Per-second sounding (``False`` everywhere: a silent distractor).
        gain_db: Loudness relative to full scale (0 is loudest).
        motion: ``none``, ``drift``, ``vertical``, ``horizontal``, ``circular`` or ``pulsing``.
        amplitude: Motion amplitude (fraction of the frame).
        phase: Motion phase (radians); ``drift`` uses it as direction.
        rhythm: Sound pattern override: ``None`` (the category's), ``pulsed``, ``steady``, ``rising``, ``falling``.
    """

    category: int
    x: float
    y: float
    radius: float
    visible: list[bool]
    audible: list[bool]
    gain_db: float = 0.0
    motion: str = "none"
    amplitude: float = 0.0
    phase: float = 0.0
    rhythm: str | None = None

    @property
    def cat(self) -> Category:
        """The object's :class:`Category`."""
        return CATEGORIES[self.category]

    def centre(self, t: float, duration: float) -> tuple[float, float, float]:
        """``(x, y, radius)`` at time ``t`` seconds."""
        a, ph = self.amplitude, self.phase
        x, y, r = self.x, self.y, self.radius
        if self.motion == "vertical":
            y += a * math.sin(2 * math.pi * 0.5 * t + ph)
        elif self.motion == "horizontal":
            x += a * math.sin(2 * math.pi * 0.5 * t + ph)
        elif self.motion == "circular":
            x += a * math.cos(2 * math.pi * 0.5 * t + ph)
            y += a * math.sin(2 * math.pi * 0.5 * t + ph)
        elif self.motion == "pulsing":
            r *= 1.0 + 0.45 * math.sin(2 * math.pi * 0.5 * t + ph)
        elif self.motion == "drift":
            frac = t / max(duration, 1e-6) - 0.5
            x += a * math.cos(ph) * frac
            y += a * math.sin(ph) * frac
        return x, y, r


@dataclass
class Scene:
    """A clip: its objects, length, background noise and (for the emotion task) a face.

    Attributes:
        duration: Seconds.
        objects: The objects, drawn in order.
        noise: Background noise level in [0, 1].
        face: Index into :data:`EMOTIONS` when the clip shows a speaking face, else ``None``.
        seed: Seed of the noise textures (so rendering is a pure function of the scene).
    """

    duration: int
    objects: list[SceneObject] = field(default_factory=list)
    noise: float = 0.05
    face: int | None = None
    seed: int = 0

    def spans(self, obj: SceneObject, modality: str) -> list[tuple[int, int]]:
        """Maximal runs of seconds where ``obj`` is visible (``"visual"``) or sounding (``"audio"``), end exclusive."""
        flags = obj.visible if modality == "visual" else obj.audible
        runs: list[tuple[int, int]] = []
        start = None
        for i, on in enumerate(list(flags) + [False]):
            if on and start is None:
                start = i
            elif not on and start is not None:
                runs.append((start, i))
                start = None
        return runs
