"""Per-task clip builders of AVSynth: scene sampling, media writing and AV-UIE v2 records.

A clip is identified by ``(seed, task, index)``; its scene is a pure function of that triple, so any worker can
build any clip, and a task can look at another clip's scene without rendering it (a2v/v2a pair each clip with
another clip of a different category; arig reuses the clips of s4). :func:`build_clip` writes the clip's media
under the task folder and returns its records (``(split, record)`` pairs) in the release's field layout, each
with an ``avsynth`` dict holding the structured ground truth.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crabzoo.data.avsynth.render_audio import render_audio
from crabzoo.data.avsynth.render_video import render_frames, write_audio, write_jpg, write_label, write_mask, write_video
from crabzoo.data.avsynth.targets import format_target
from crabzoo.data.avsynth.world import (
    CATEGORIES,
    EMOTIONS,
    KS_ACTIONS,
    SLOTS,
    UCF_ACTIONS,
    UNSEEN_CATEGORIES,
    Action,
    Knobs,
    Scene,
    SceneObject,
    position_name,
)

AVSYNTH_TASKS: tuple[str, ...] = (
    "a2v", "v2a", "ks", "ucf", "emotion", "avqa", "avqa_thu", "ave", "unav", "avvp", "s4", "ms3", "ref_avs", "arig",
    "avcap",
)
"""Task folders AVSynth writes (the release's names plus ``emotion``)."""

IMAGE_TASKS = ("s4", "ms3", "ref_avs", "arig")
RELEASE_MP3 = ("a2v", "v2a", "avqa", "avqa_thu", "ave", "unav", "avvp", "avcap")
"""Tasks whose release audio files are ``.mp3`` (used with ``audio_format='release'``)."""

NUMBERS = ("zero", "one", "two", "three", "four")
FRAME = 224
"""Side of the frame in which boxes and points are expressed."""


@dataclass(frozen=True)
class Job:
    """One clip to build.

    Attributes:
        task: Task folder.
        index: Clip index within the task.
        count: Clips of this task (sets the train/test split).
        seed: Dataset seed.
        knobs: Difficulty knobs.
        reasoning: Write reasoning before the answer.
        root: The folder holding the task folders.
        tasks: Every task being generated (arig writes s4's clips itself when s4 is not among them).
    """

    task: str
    index: int
    count: int
    seed: int
    knobs: Knobs
    reasoning: bool
    root: Path
    tasks: tuple[str, ...]


def n_test(count: int, fraction: float) -> int:
    """Clips of a task that go to the test split (at least one when the task has 2+ clips and fraction > 0)."""
    if count < 2 or fraction <= 0:
        return 0
    return min(count - 1, max(1, int(round(count * fraction))))


def split_of(index: int, count: int, fraction: float) -> str:
    """``train`` for the first clips, ``test`` for the last :func:`n_test` ones."""
    return "test" if index >= count - n_test(count, fraction) else "train"


def clip_rng(seed: int, task: str, index: int, tag: int = 0) -> np.random.Generator:
    """The random generator of a clip (independent of worker count and order)."""
    return np.random.default_rng([seed, zlib.crc32(task.encode()), index, tag])


def clip_seed(seed: int, task: str, index: int) -> int:
    """Seed of the noise textures of a clip."""
    return int(clip_rng(seed, task, index, 99).integers(0, 2**31 - 1))


# ---------------------------------------------------------------------------------------------- geometry
def box_points(mask: np.ndarray) -> tuple[list[int], list[list[int]]]:
    """Box ``[x1, y1, x2, y2]`` and 3 points ``[[x, y], ...]`` of a mask, in the 224 x 224 frame.

    The box encloses every mask pixel; the points are centres of mask pixels (the pixel nearest the centroid and
    the pixels at the first and third quartile of the mask in raster order), so each lies on the object.
    """
    h, w = mask.shape
    rows, cols = np.nonzero(mask)
    sx, sy = FRAME / w, FRAME / h
    x1, y1 = int(math.floor(cols.min() * sx)), int(math.floor(rows.min() * sy))
    x2 = min(FRAME - 1, int(math.ceil((cols.max() + 1) * sx)) - 1)
    y2 = min(FRAME - 1, int(math.ceil((rows.max() + 1) * sy)) - 1)
    cy, cx = rows.mean(), cols.mean()
    centre = int(np.argmin((rows - cy) ** 2 + (cols - cx) ** 2))
    picks = [centre, len(rows) // 4, (3 * len(rows)) // 4]
    points = [[int((cols[i] + 0.5) * sx), int((rows[i] + 0.5) * sy)] for i in picks]
    return [x1, y1, x2, y2], points


# ---------------------------------------------------------------------------------------------- words
def span_words(spans: list[tuple[int, int]]) -> str:
    """``from second 2 to 7`` or ``from second 0 to 3 and from second 6 to 9``."""
    return " and ".join(f"from second {s} to {e}" for s, e in spans)


def _flags(duration: int, spans: list[tuple[int, int]]) -> list[bool]:
    flags = [False] * duration
    for s, e in spans:
        for i in range(s, e):
            flags[i] = True
    return flags


def random_spans(rng: np.random.Generator, duration: int, max_spans: int = 2, min_len: int = 2) -> list[tuple[int, int]]:
    """1..max_spans disjoint, non-touching spans of at least ``min_len`` seconds inside ``[0, duration]``."""
    want = int(rng.integers(1, max_spans + 1))
    while want > 1 and want * min_len + (want - 1) > duration:
        want -= 1
    slack = duration - want * min_len - (want - 1)
    parts = rng.multinomial(max(slack, 0), np.full(2 * want + 1, 1.0 / (2 * want + 1)))
    spans: list[tuple[int, int]] = []
    cursor = int(parts[0])
    for k in range(want):
        length = min_len + int(parts[1 + 2 * k])
        spans.append((cursor, cursor + length))
        cursor += length + 1 + int(parts[2 + 2 * k])
    return spans


def _new_object(rng: np.random.Generator, knobs: Knobs, category: int, slot: str, visible: list[bool],
                audible: list[bool], gain_db: float = 0.0) -> SceneObject:
    return SceneObject(
        category=int(category),
        x=SLOTS[slot] + float(rng.uniform(-0.03, 0.03)),
        y=0.5 + float(rng.uniform(-0.15, 0.15)),
        radius=0.12 + float(rng.uniform(0.0, 0.02)),
        visible=visible,
        audible=audible,
        gain_db=gain_db,
        motion="vertical" if knobs.motion > 0 else "none",
        amplitude=0.06 * knobs.motion,
        phase=float(rng.uniform(0, 2 * math.pi)),
    )


def _slots(rng: np.random.Generator, k: int) -> list[str]:
    names = list(SLOTS)
    return [names[i] for i in rng.permutation(len(names))[:k]]


# ---------------------------------------------------------------------------------------------- scenes
def event_scene(rng: np.random.Generator, knobs: Knobs, duration: int, seed: int) -> Scene:
    """ave / a2v / v2a: one audio-visual event, optionally a silent visible distractor and an off-screen sound."""
    cats = rng.permutation(len(CATEGORIES))
    slots = _slots(rng, 2)
    s = int(rng.integers(0, duration - 1))
    e = int(rng.integers(s + 2, duration + 1)) if s <= duration - 2 else duration
    main = _new_object(rng, knobs, cats[0], slots[0], _flags(duration, [(s, e)]), _flags(duration, [(s, e)]),
                       float(rng.uniform(-4, 0)))
    objects = [main]
    if knobs.max_objects >= 2 and rng.random() < knobs.distractor_rate:
        objects.append(_new_object(rng, knobs, cats[1], slots[1], [True] * duration, [False] * duration))
    if knobs.max_objects >= 3 and rng.random() < knobs.distractor_rate:
        off = random_spans(rng, duration, 1)
        objects.append(_new_object(rng, knobs, cats[2], slots[0], [False] * duration, _flags(duration, off),
                                   float(rng.uniform(-14, -8))))
    return Scene(duration, objects, knobs.noise, None, seed)


def full_event_scene(rng: np.random.Generator, knobs: Knobs, duration: int, seed: int) -> Scene:
    """a2v / v2a / avcap: one object heard and seen over the whole clip, optionally a silent distractor."""
    cats = rng.permutation(len(CATEGORIES))
    slots = _slots(rng, 2)
    objects = [_new_object(rng, knobs, cats[0], slots[0], [True] * duration, [True] * duration, float(rng.uniform(-4, 0)))]
    if knobs.max_objects >= 2 and rng.random() < knobs.distractor_rate:
        objects.append(_new_object(rng, knobs, cats[1], slots[1], [True] * duration, [False] * duration))
    return Scene(duration, objects, knobs.noise, None, seed)


def avvp_scene(rng: np.random.Generator, knobs: Knobs, duration: int, seed: int) -> Scene:
    """avvp: 1-3 objects, each audio-visual, audio-only (off-screen) or visual-only (silent)."""
    k = int(rng.integers(1, knobs.max_objects + 1))
    cats = rng.permutation(len(CATEGORIES))[:k]
    slots = _slots(rng, k)
    objects = []
    for i in range(k):
        kind = "av" if i == 0 else str(rng.choice(["av", "audio", "visual"]))
        if rng.random() < knobs.distractor_rate and i > 0:
            kind = "audio" if rng.random() < 0.5 else "visual"
        vis = _flags(duration, random_spans(rng, duration))
        aud = vis if kind == "av" else _flags(duration, random_spans(rng, duration))
        objects.append(_new_object(rng, knobs, cats[i], slots[i], vis if kind != "audio" else [False] * duration,
                                   aud if kind != "visual" else [False] * duration, float(rng.uniform(-6, 0))))
    return Scene(duration, objects, knobs.noise, None, seed)


def unav_scene(rng: np.random.Generator, knobs: Knobs, duration: int, seed: int) -> Scene:
    """unav: several audio-visual events (1-2 spans each), possibly overlapping in time."""
    k = int(rng.integers(min(2, knobs.max_objects), knobs.max_objects + 1))
    cats = rng.permutation(len(CATEGORIES))[:k]
    slots = _slots(rng, k)
    objects = []
    for i in range(k):
        flags = _flags(duration, random_spans(rng, duration))
        objects.append(_new_object(rng, knobs, cats[i], slots[i], flags, list(flags), float(rng.uniform(-6, 0))))
    return Scene(duration, objects, knobs.noise, None, seed)


def action_scene(rng: np.random.Generator, knobs: Knobs, duration: int, seed: int, action: Action) -> Scene:
    """ks / ucf: one object whose motion and sound pattern define the action, plus maybe a silent still object."""
    cats = rng.permutation(len(CATEGORIES))
    main = SceneObject(int(cats[0]), 0.5, 0.5, 0.12, [True] * duration, [True] * duration, float(rng.uniform(-4, 0)),
                       action.motion, 0.16 + 0.1 * knobs.motion, float(rng.uniform(0, 2 * math.pi)), action.sound)
    objects = [main]
    if knobs.max_objects >= 2 and rng.random() < knobs.distractor_rate:
        corner = (0.12, 0.12) if rng.random() < 0.5 else (0.88, 0.12)
        objects.append(SceneObject(int(cats[1]), corner[0], corner[1], 0.08, [True] * duration, [False] * duration))
    return Scene(duration, objects, knobs.noise, None, seed)


def qa_scene(rng: np.random.Generator, knobs: Knobs, duration: int, seed: int) -> Scene:
    """avqa: 1-3 objects at distinct positions, distinct loudness (8 dB apart) and distinct sound onsets."""
    k = int(rng.integers(min(2, knobs.max_objects), knobs.max_objects + 1))
    cats = rng.permutation(len(CATEGORIES))[:k]
    slots = _slots(rng, k)
    gains = [0.0, -8.0, -16.0]
    order = rng.permutation(3)
    onsets = sorted(int(v) for v in rng.choice(np.arange(0, max(duration - 3, k)), size=k, replace=False))
    onsets = [onsets[i] for i in rng.permutation(k)]
    objects = []
    for i in range(k):
        visible = not (i > 0 and rng.random() < knobs.distractor_rate / 2)
        audible = not (i > 0 and visible and rng.random() < knobs.distractor_rate)
        aud = _flags(duration, [(onsets[i], duration)]) if audible else [False] * duration
        objects.append(_new_object(rng, knobs, cats[i], slots[i], [visible] * duration, aud, gains[int(order[i])]))
    return Scene(duration, objects, knobs.noise, None, seed)


def thu_scene(rng: np.random.Generator, knobs: Knobs, duration: int, seed: int) -> Scene:
    """avqa_thu: exactly one sounding object (on or off screen) and 0-2 silent visible objects."""
    k = int(rng.integers(1, knobs.max_objects + 1))
    cats = rng.permutation(len(CATEGORIES))[:k]
    slots = _slots(rng, k)
    objects = []
    for i in range(k):
        if i == 0:
            visible = not (rng.random() < knobs.distractor_rate / 2)
            objects.append(_new_object(rng, knobs, cats[i], slots[i], [visible] * duration, [True] * duration))
        else:
            objects.append(_new_object(rng, knobs, cats[i], slots[i], [True] * duration, [False] * duration))
    return Scene(duration, objects, knobs.noise, None, seed)


def s4_scene(rng: np.random.Generator, knobs: Knobs, seed: int) -> Scene:
    """s4 / arig: a 5-s clip with one sounding visible object and maybe a silent visible distractor."""
    cats = rng.permutation(len(CATEGORIES))
    slots = _slots(rng, 2)
    objects = [_new_object(rng, knobs, cats[0], slots[0], [True] * 5, [True] * 5, float(rng.uniform(-4, 0)))]
    if knobs.max_objects >= 2 and rng.random() < max(knobs.distractor_rate, 0.5):
        objects.append(_new_object(rng, knobs, cats[1], slots[1], [True] * 5, [False] * 5))
    return Scene(5, objects, knobs.noise, None, seed)


def ms3_scene(rng: np.random.Generator, knobs: Knobs, seed: int) -> Scene:
    """ms3: a 5-s clip with 2-3 visible objects, 1-2 of which sound (one over all 5 s, one over some seconds)."""
    k = int(rng.integers(min(2, knobs.max_objects), knobs.max_objects + 1))
    cats = rng.permutation(len(CATEGORIES))[:k]
    slots = _slots(rng, k)
    objects = [_new_object(rng, knobs, cats[0], slots[0], [True] * 5, [True] * 5, float(rng.uniform(-4, 0)))]
    for i in range(1, k):
        if i == 1 and rng.random() >= knobs.distractor_rate:
            aud = _flags(5, random_spans(rng, 5, 1, 2))
        else:
            aud = [False] * 5
        objects.append(_new_object(rng, knobs, cats[i], slots[i], [True] * 5, aud, float(rng.uniform(-6, 0))))
    return Scene(5, objects, knobs.noise, None, seed)


def refavs_scene(rng: np.random.Generator, knobs: Knobs, seed: int) -> Scene:
    """ref_avs: a 10-s clip with 2-3 visible objects; 1-2 sound over the whole clip at loudness 8 dB apart."""
    k = int(rng.integers(min(2, knobs.max_objects), knobs.max_objects + 1))
    cats = rng.permutation(len(CATEGORIES))[:k]
    slots = _slots(rng, k)
    n_sound = 1 if k == 1 else int(rng.integers(1, 3))
    objects = []
    for i in range(k):
        sounding = i < n_sound
        objects.append(_new_object(rng, knobs, cats[i], slots[i], [True] * 10, [sounding] * 10, -8.0 * i))
    return Scene(10, objects, knobs.noise, None, seed)


# ---------------------------------------------------------------------------------------------- writing helpers
class ClipWriter:
    """Writes one clip's media under its task folder and keeps the names used in records."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.knobs = job.knobs
        self.dir = job.root / job.task
        self.name = f"{job.task}_{job.index:05d}"
        self.split = split_of(job.index, job.count, job.knobs.test_fraction)

    def audio_ext(self, task: str | None = None) -> str:
        task = task or self.job.task
        return ".mp3" if self.knobs.audio_format == "release" and task in RELEASE_MP3 else ".wav"

    def video_times(self, duration: int) -> list[float]:
        return [i / self.knobs.fps for i in range(duration * self.knobs.fps)]

    def write_av(self, scene: Scene, video_rel: str, audio_rel: str | None) -> tuple[np.ndarray, np.ndarray]:
        """Render ``scene``; write ``video/<video_rel>`` (with soundtrack) and ``audio/<audio_rel>``."""
        frames, masks = render_frames(scene, self.knobs.size, self.video_times(scene.duration))
        audio = render_audio(scene, self.knobs.sample_rate)
        write_video(self.dir / "video" / video_rel, frames, self.knobs.fps,
                    audio if self.knobs.soundtrack else None, self.knobs.sample_rate)
        if audio_rel is not None:
            write_audio(self.dir / "audio" / audio_rel, audio, self.knobs.sample_rate)
        return frames, audio

    def target(self, truth: dict[str, Any], evidence: str) -> str:
        return format_target(self.job.task, truth, evidence, self.job.reasoning)


def _sound(obj: SceneObject) -> str:
    return f"{obj.cat.sound} ({_a(obj.cat.name)})"


def _a(word: str) -> str:
    """``a bell`` / ``an engine``."""
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _at(x: float) -> str:
    """``on the left`` / ``in the middle`` / ``on the right``."""
    name = position_name(x)
    return "in the middle" if name == "middle" else f"on the {name}"


# ---------------------------------------------------------------------------------------------- tasks
def _scene_for(job: Job, task: str, index: int) -> Scene:
    """The scene of clip ``index`` of ``task`` (pure function of the seed, task and index)."""
    k, seed = job.knobs, clip_seed(job.seed, task, index)
    rng = clip_rng(job.seed, task, index)
    d = k.duration
    if task == "ave":
        return event_scene(rng, k, d, seed)
    if task in ("a2v", "v2a", "avcap"):
        return full_event_scene(rng, k, d, seed)
    if task == "avvp":
        return avvp_scene(rng, k, d, seed)
    if task == "unav":
        return unav_scene(rng, k, d, seed)
    if task == "ks":
        return action_scene(rng, k, d, seed, KS_ACTIONS[index % len(KS_ACTIONS)])
    if task == "ucf":
        return action_scene(rng, k, d, seed, UCF_ACTIONS[index % len(UCF_ACTIONS)])
    if task == "avqa":
        return qa_scene(rng, k, d, seed)
    if task == "avqa_thu":
        return thu_scene(rng, k, d, seed)
    if task in ("s4", "arig"):
        return s4_scene(clip_rng(job.seed, "s4", index), k, clip_seed(job.seed, "s4", index))
    if task == "ms3":
        return ms3_scene(rng, k, seed)
    if task == "ref_avs":
        return refavs_scene(rng, k, seed)
    if task == "emotion":
        emo = index % len(EMOTIONS)
        return Scene(d, [], k.noise, emo, seed)
    raise KeyError(task)


def _partner(job: Job, scene: Scene) -> int:
    """Index of another clip of the same split whose main category differs (a2v / v2a negatives)."""
    split = split_of(job.index, job.count, job.knobs.test_fraction)
    same = [i for i in range(job.count) if i != job.index and split_of(i, job.count, job.knobs.test_fraction) == split]
    if not same:
        same = [i for i in range(job.count) if i != job.index]
    start = int(clip_rng(job.seed, job.task, job.index, 1).integers(0, len(same))) if same else 0
    for step in range(len(same)):
        j = same[(start + step) % len(same)]
        if _scene_for(job, job.task, j).objects[0].category != scene.objects[0].category:
            return j
    return job.index  # a task with a single clip (or one category only): no negative exists


def build_matching(job: Job) -> list[tuple[str, dict[str, Any]]]:
    """a2v (audio -> which of two videos) and v2a (video -> which of two audios)."""
    w = ClipWriter(job)
    scene = _scene_for(job, job.task, job.index)
    video, audio = f"{w.name}.mp4", f"{w.name}{w.audio_ext()}"
    w.write_av(scene, video, audio)
    j = _partner(job, scene)
    other = _scene_for(job, job.task, j)
    o_video, o_audio = f"{job.task}_{j:05d}.mp4", f"{job.task}_{j:05d}{w.audio_ext()}"
    correct = 1 if clip_rng(job.seed, job.task, job.index, 2).random() < 0.5 else 2
    main, neg = scene.objects[0], other.objects[0]
    if job.task == "a2v":
        v1, v2 = (video, o_video) if correct == 1 else (o_video, video)
        e1, e2 = (main, neg) if correct == 1 else (neg, main)
        evidence = (f"The audio contains {_sound(main)}. The first video shows {_a(e1.cat.looks)} and the second video "
                    f"shows {_a(e2.cat.looks)}; the {main.cat.looks} is the {main.cat.name}, so video {correct} matches.")
        truth = {"answer": str(correct), "category": main.cat.name, "negative": neg.cat.name}
        rec = {"video1_path": v1, "video2_path": v2, "audio_path": audio, "correct_video": correct,
               "audio_event": main.cat.name, "video1_event": e1.cat.name, "video2_event": e2.cat.name}
    else:
        a1, a2 = (audio, o_audio) if correct == 1 else (o_audio, audio)
        e1, e2 = (main, neg) if correct == 1 else (neg, main)
        evidence = (f"The video shows {_a(main.cat.looks)}, which is {_a(main.cat.name)}. The first audio clip contains "
                    f"{_sound(e1)} and the second contains {_sound(e2)}, so audio {correct} matches.")
        truth = {"answer": str(correct), "category": main.cat.name, "negative": neg.cat.name}
        rec = {"video_path": video, "audio1_path": a1, "audio2_path": a2, "correct_audio": correct,
               "audio1_event": e1.cat.name, "video_event": main.cat.name, "audio2_event": e2.cat.name}
    if w.split == "train":
        rec["label"] = w.target(truth, evidence)
    else:
        for key in ("audio_event", "video1_event", "video2_event", "audio1_event", "video_event", "audio2_event"):
            rec.pop(key, None)
    rec["avsynth"] = truth
    return [(w.split, rec)]


def _action_words(action: Action) -> tuple[str, str]:
    motion = {"vertical": "moves up and down", "horizontal": "moves from side to side",
              "circular": "moves in a circle", "pulsing": "grows and shrinks"}[action.motion]
    sound = {"pulsed": "a sound in repeated short strikes", "steady": "a continuous steady sound",
             "rising": "a sound whose pitch keeps rising", "falling": "a sound whose pitch keeps falling"}[action.sound]
    return motion, sound


def build_action(job: Job) -> list[tuple[str, dict[str, Any]]]:
    """ks and ucf: actions defined jointly by motion and sound pattern."""
    w = ClipWriter(job)
    actions = KS_ACTIONS if job.task == "ks" else UCF_ACTIONS
    action = actions[job.index % len(actions)]
    scene = _scene_for(job, job.task, job.index)
    if job.task == "ks":
        video, audio = f"{w.name}.mp4", f"{w.name}{w.audio_ext()}"
    else:
        stem = f"{action.name}/v_{action.name}_g{job.index:03d}_c01"
        video, audio = f"{stem}.avi", f"{stem}{w.audio_ext()}"
    w.write_av(scene, video, audio)
    motion, sound = _action_words(action)
    evidence = (f"The audio contains {sound}. In the video the {scene.objects[0].cat.looks} {motion}. "
                f"Motion that {motion} together with {sound} is {action.name}.")
    truth = {"answer": action.name if job.task == "ks" else action.name.lower(), "motion": action.motion,
             "sound": action.sound, "category": scene.objects[0].cat.name}
    if job.task == "ks":
        rec = {"video_path": video, "audio_path": audio, "action": action.name}
        if w.split == "train":
            rec["label"] = w.target(truth, evidence)
    else:
        rec = {"video_path": video, "audio_path": audio, "label": action.name}
        if w.split == "train":
            rec["new_label"] = w.target(truth, evidence)
    rec["avsynth"] = truth
    return [(w.split, rec)]


def build_emotion(job: Job) -> list[tuple[str, dict[str, Any]]]:
    """emotion: a face glyph with an expression and a voice with the matching prosody (CREMA-D layout)."""
    w = ClipWriter(job)
    scene = _scene_for(job, job.task, job.index)
    emo = EMOTIONS[scene.face]
    video, audio = f"{w.name}.mp4", f"{w.name}.wav"
    w.write_av(scene, video, audio)
    face = {"smile": "a smiling mouth", "frown": "a frowning mouth", "flat": "a straight mouth",
            "open": "a wide open mouth", "wavy": "a twisted, wavy mouth"}[emo.mouth]
    brows = {"none": "relaxed brows", "angry": "brows pulled down", "worried": "brows raised in the middle",
             "raised": "raised brows"}[emo.brows]
    evidence = f"The voice is {emo.prosody}. The face shows {face} and {brows}. Together they express {emo.name}."
    truth = {"answer": emo.name}
    rec = {"video_path": video, "audio_path": audio, "emotion": emo.name}
    if w.split == "train":
        rec["label"] = w.target(truth, evidence)
    rec["avsynth"] = truth
    return [(w.split, rec)]


def _av_events(scene: Scene, modality: str, only_av: bool = False) -> list[list[Any]]:
    events: list[list[Any]] = []
    for obj in scene.objects:
        if only_av:
            flags = [a and v for a, v in zip(obj.audible, obj.visible)]
            o = SceneObject(obj.category, obj.x, obj.y, obj.radius, flags, flags)
            spans = scene.spans(o, "audio")
        else:
            spans = scene.spans(obj, modality)
        events += [[obj.cat.name, s, e] for s, e in spans]
    return events


def _per_second(scene: Scene, events: list[list[Any]]) -> list[str]:
    labels = ["background"] * scene.duration
    for label, s, e in events:
        for i in range(s, e):
            labels[i] = label
    return labels


def build_events(job: Job) -> list[tuple[str, dict[str, Any]]]:
    """ave (one event), unav (several events) and avvp (audio and visual events parsed separately)."""
    w = ClipWriter(job)
    scene = _scene_for(job, job.task, job.index)
    video, audio = f"{w.name}.mp4", f"{w.name}{w.audio_ext()}"
    w.write_av(scene, video, audio)
    heard, seen = [], []
    for obj in scene.objects:
        a, v = scene.spans(obj, "audio"), scene.spans(obj, "visual")
        if a:
            where = "" if v else " with no visible source"
            heard.append(f"{_sound(obj)} {span_words(a)}{where}")
        if v:
            silent = " but it makes no sound" if not a else ""
            seen.append(f"{_a(obj.cat.looks)} {span_words(v)}{silent}")
    evidence = f"Audio: {'; '.join(heard) or 'no event sound'}. Visual: {'; '.join(seen) or 'no object'}."
    base = {"video_path": video, "audio_path": audio}
    if job.task == "avvp":
        truth = {"audio": _av_events(scene, "audio"), "visual": _av_events(scene, "visual")}
        tagged = format_target("avvp", truth, "", reasoning=False)
        rec = {**base, "filename": w.name, "vid": w.name, "event": tagged}
        if w.split == "train":
            rec["label_content"] = w.target(truth, evidence)
    else:
        events = _av_events(scene, "audio", only_av=True)
        truth = {"events": events, "labels": _per_second(scene, events)}
        if job.task == "ave":
            label, s, e = events[0]
            truth["answer"] = f"event:{label} start_time:{s} end_time:{e}"
            evidence += f" The {label} is both heard and seen {span_words([(s, e)])}."
            rec = {**base, "event": label, "vid": w.name, "start_time": s, "end_time": e}
            if w.split == "train":
                rec["label_content"] = w.target(truth, evidence)
        else:
            rec = {**base, "vid": w.name, "label_content": w.target(truth, evidence)}
    rec["avsynth"] = truth
    return [(w.split, rec)]


def _avqa_question(rng: np.random.Generator, scene: Scene) -> tuple[list[str], str, str, str]:
    """(type, question, answer, evidence) for one of the MUSIC-AVQA-style question types valid in ``scene``."""
    objs = scene.objects
    audible = [o for o in objs if any(o.audible)]
    visible = [o for o in objs if any(o.visible)]
    both = [o for o in audible if any(o.visible)]
    onset = {id(o): o.audible.index(True) for o in audible}
    options: list[tuple[list[str], str, str, str]] = []
    heard = "; ".join(f"{_sound(o)} from second {onset[id(o)]}" for o in audible) or "no sound"
    seen = "; ".join(f"{_a(o.cat.looks)} {_at(o.x)}" for o in visible) or "nothing"
    evidence = f"Audio: {heard}. Visual: {seen}."
    options.append((["Audio", "Counting"], "How many different sounds can be heard?", NUMBERS[len(audible)], evidence))
    options.append((["Visual", "Counting"], "How many objects can be seen in the video?", NUMBERS[len(visible)], evidence))
    options.append((["Audio-Visual", "Counting"], "How many objects in the video are both visible and sounding?",
                    NUMBERS[len(both)], evidence))
    if len(audible) >= 2:
        a, b = (audible[i] for i in rng.permutation(len(audible))[:2])
        options.append((["Audio", "Comparative"], f"Is the {a.cat.name} louder than the {b.cat.name}?",
                        "yes" if a.gain_db > b.gain_db else "no", evidence))
        first = min(audible, key=lambda o: onset[id(o)])
        options.append((["Audio-Visual", "Temporal"], "Which object starts making a sound first?", first.cat.name,
                        evidence))
    if visible:
        o = visible[int(rng.integers(0, len(visible)))]
        options.append((["Visual", "Location"], f"Where is the {o.cat.looks}?", position_name(o.x), evidence))
        options.append((["Audio-Visual", "Existential"], f"Is the {o.cat.name} in the video making a sound?",
                        "yes" if any(o.audible) else "no", evidence))
    if len(both) >= 2:
        a, b = (both[i] for i in rng.permutation(len(both))[:2])
        options.append((["Audio-Visual", "Comparative"],
                        f"Is the object {_at(a.x)} louder than the object {_at(b.x)}?",
                        "yes" if a.gain_db > b.gain_db else "no", evidence))
    if both:
        o = both[int(rng.integers(0, len(both)))]
        options.append((["Audio-Visual", "Location"], f"Where is the sounding {o.cat.name}?", position_name(o.x),
                        evidence))
    return options[int(rng.integers(0, len(options)))]


def build_avqa(job: Job) -> list[tuple[str, dict[str, Any]]]:
    """avqa: MUSIC-AVQA-style questions (counting, location, comparison, temporal, existence) per modality."""
    w = ClipWriter(job)
    scene = _scene_for(job, job.task, job.index)
    video, audio = f"{w.name}.mp4", f"{w.name}{w.audio_ext()}"
    w.write_av(scene, video, audio)
    qtype, question, answer, evidence = _avqa_question(clip_rng(job.seed, job.task, job.index, 3), scene)
    truth = {"answer": answer, "type": qtype}
    rec = {"video_path": video, "audio_path": audio, "video_id": w.name, "question_id": job.index,
           "type": json.dumps(qtype), "question": question, "answer": answer}
    if w.split == "train":
        rec["label"] = w.target(truth, evidence + f" So the answer is {answer}.")
    rec["avsynth"] = truth
    return [(w.split, rec)]


def build_avqa_thu(job: Job) -> list[tuple[str, dict[str, Any]]]:
    """avqa_thu: multiple-choice questions about the sounding object and the silent ones."""
    w = ClipWriter(job)
    scene = _scene_for(job, job.task, job.index)
    video, audio = f"{w.name}.mp4", f"{w.name}{w.audio_ext()}"
    w.write_av(scene, video, audio)
    rng = clip_rng(job.seed, job.task, job.index, 3)
    src = scene.objects[0]
    silent = [o for o in scene.objects[1:]]
    on_screen = any(src.visible)
    kinds = ["which", "come_from"] + (["silent"] if silent else [])
    kind = kinds[int(rng.integers(0, len(kinds)))]
    where = position_name(src.x) if on_screen else "off-screen"
    looks = f"{_a(src.cat.looks)} {_at(src.x)}" if on_screen else "no object for this sound"
    evidence = (f"Audio: {_sound(src)}. Visual: {looks}"
                + "".join(f"; a silent {o.cat.looks} {_at(o.x)}" for o in silent) + ".")
    if kind == "come_from":
        choices, relation, qtype, question = ["left", "middle", "right", "off-screen"], "Both", "Come From", \
            "Where does the sound come from?"
        answer = where
    else:
        target = src if kind == "which" else silent[int(rng.integers(0, len(silent)))]
        others = [c.name for c in CATEGORIES if c.name != target.cat.name]
        choices = [others[i] for i in rng.permutation(len(others))[:3]] + [target.cat.name]
        choices = [choices[i] for i in rng.permutation(4)]
        relation, qtype = ("Both", "Which") if kind == "which" else ("Visual", "Which")
        question = "Which object is making the sound?" if kind == "which" else "Which object is shown but silent?"
        answer = target.cat.name
    truth = {"answer": answer, "type": qtype, "relation": relation, "choices": choices}
    rec = {"id": job.index, "video_name": w.name, "video_id": job.index, "question_relation": relation,
           "question_type": qtype, "multi_choice": choices, "question_text": question, "answer": answer}
    if w.split == "train":
        rec["label"] = w.target(truth, evidence + f" So the answer is {answer}.")
    rec["video_path"], rec["audio_path"] = video, audio
    rec["avsynth"] = truth
    return [(w.split, rec)]


def build_avcap(job: Job) -> list[tuple[str, dict[str, Any]]]:
    """avcap: several reference captions of the scene (what is seen, where, and what is heard)."""
    w = ClipWriter(job)
    scene = _scene_for(job, job.task, job.index)
    video, audio = f"{w.name}.mp4", f"{w.name}{w.audio_ext()}"
    w.write_av(scene, video, audio)
    main = scene.objects[0]
    extra = scene.objects[1] if len(scene.objects) > 1 else None
    tail = f" while {_a(extra.cat.looks)} stays silent" if extra else ""
    captions = [
        f"{_a(main.cat.looks)} {_at(main.x)} makes {main.cat.sound}{tail}.",
        f"{_at(main.x)} of the screen {_a(main.cat.name)} shown as {_a(main.cat.looks)} is heard{tail}.",
        f"the video shows {_a(main.cat.looks)}"
        + (f" and {_a(extra.cat.looks)}" if extra else "")
        + f" and the audio is {main.cat.sound} from {_a(main.cat.name)}.",
    ]
    evidence = f"Audio: {_sound(main)}. Visual: {_a(main.cat.looks)} {_at(main.x)}" + (
        f" and a silent {extra.cat.looks}." if extra else ".")
    truth = {"answer": captions[0], "caption": captions[0], "captions": captions}
    rec = {"video_path": video, "audio_path": audio, "video_id": w.name, "label_content": w.target(truth, evidence)}
    rec["avsynth"] = truth
    return [(w.split, rec)]


def _write_avs_clip(job: Job, scene: Scene, folder: Path) -> np.ndarray:
    """Write an AVSBench-style clip folder (audio.wav, frames/k.jpg, labels_rgb/k.png, labels_semantic/k.png).

    Returns the per-frame masks of the sounding objects, ``(5, H, W)`` bool.
    """
    frames, masks = render_frames(scene, job.knobs.size, [float(k) for k in range(scene.duration)])
    sounding = _sounding_masks(scene, masks)
    write_audio(folder / "audio.wav", render_audio(scene, job.knobs.sample_rate), job.knobs.sample_rate)
    for k in range(scene.duration):
        write_jpg(folder / "frames" / f"{k}.jpg", frames[k])
        write_mask(folder / "labels_rgb" / f"{k}.png", sounding[k])
        semantic = np.zeros(sounding[k].shape, dtype=np.uint8)
        for i, obj in enumerate(scene.objects):
            if obj.audible[k]:
                semantic[masks[k, i]] = obj.category + 1
        write_label(folder / "labels_semantic" / f"{k}.png", semantic)
    return sounding


def _sounding_masks(scene: Scene, masks: np.ndarray) -> np.ndarray:
    out = np.zeros((masks.shape[0],) + masks.shape[2:], dtype=bool)
    for k in range(masks.shape[0]):
        for i, obj in enumerate(scene.objects):
            if obj.audible[min(k, scene.duration - 1)]:
                out[k] |= masks[k, i]
    return out


def build_avs(job: Job) -> list[tuple[str, dict[str, Any]]]:
    """s4, ms3 and arig: AVSBench-style 5-frame clips; arig reuses the clips of s4."""
    w = ClipWriter(job)
    src_task = "ms3" if job.task == "ms3" else "s4"
    level = "v1m" if job.task == "ms3" else "v1s"
    scene = _scene_for(job, src_task, job.index)
    uid = f"{src_task}_{job.index:05d}"
    rel = f"AVS/{level}/{uid}"
    if job.task == "arig" and "s4" in job.tasks:
        _, masks = render_frames(scene, job.knobs.size, [float(k) for k in range(scene.duration)])
        sounding = _sounding_masks(scene, masks)
    else:
        sounding = _write_avs_clip(job, scene, w.dir / rel)
    out: list[tuple[str, dict[str, Any]]] = []
    if job.task == "s4" or job.task == "arig":
        frame_ids = [0] if job.task == "s4" and w.split == "train" else list(range(5))
        if job.task == "arig" and w.split == "train":
            frame_ids = [int(clip_rng(job.seed, "arig", job.index, 4).integers(0, 5))]
    else:
        frame_ids = list(range(5))
    for k in frame_ids:
        sound_objs = [o for o in scene.objects if o.audible[k]]
        name = " and ".join(o.cat.name for o in sound_objs)
        box, points = box_points(sounding[k])
        silent = [o for o in scene.objects if not o.audible[k]]
        evidence = (f"The audio contains {'; '.join(_sound(o) for o in sound_objs)}. In the frame the "
                    f"{' and the '.join(o.cat.looks for o in sound_objs)} "
                    f"{'is' if len(sound_objs) == 1 else 'are'} the {name}"
                    + "".join(f"; the {o.cat.looks} is silent" for o in silent) + ".")
        truth = {"answer": name, "category": name, "categories": [o.cat.name for o in sound_objs], "box": box,
                 "points": points,
                 "frame_idx": k, "mask": f"{rel}/labels_rgb/{k}.png"}
        image = f"{rel}/frames/{k}.jpg"
        audio = f"{rel}/audio.wav"
        if job.task == "arig":
            if w.split == "train":
                rec = {"image_path": image, "audio_path": audio, "a_obj": name, "label_content": w.target(truth, evidence)}
            else:
                rec = {"visual_path": image, "audio_path": audio, "top_left": box[:2], "bottom_right": box[2:],
                       "a_obj": name, "frame_idx": k}
        else:
            common = {"audio_path": audio, "vid": uid, "uid": uid, "a_obj": name}
            if w.split == "train":
                rec = {"image_path": image, **common}
                if job.task == "ms3":
                    rec["frame_idx"] = k
                rec["label_content"] = w.target(truth, evidence)
            else:
                rec = {"visual_path": image, **common, "frame_idx": k}
        rec["avsynth"] = truth
        out.append((w.split, rec))
    return out


def _expressions(rng: np.random.Generator, scene: Scene, split: str) -> list[tuple[str, SceneObject | None, str]]:
    """Referring expressions of a ref_avs clip: ``(expression, referred object or None, kind)``."""
    sounding = [o for o in scene.objects if any(o.audible)]
    allowed = [o for o in scene.objects if split != "train" or o.cat.name not in UNSEEN_CATEGORIES]
    out: list[tuple[str, SceneObject | None, str]] = []
    if allowed:
        o = allowed[int(rng.integers(0, len(allowed)))]
        kind = int(rng.integers(0, 3))
        if kind == 0:
            out.append((f"the {o.cat.looks}", o, "appearance"))
        elif kind == 1 and o in sounding:
            out.append((f"the sounding object {_at(o.x)}", o, "position"))
        elif o in sounding and len(sounding) >= 2:
            loud = max(sounding, key=lambda x: x.gain_db)
            out.append(("the object making the loudest sound", loud, "loudness"))
        else:
            out.append((f"the {o.cat.name} that can be seen", o, "category"))
    present = {o.category for o in scene.objects}
    absent = [c for c in range(len(CATEGORIES)) if c not in present]
    if absent and rng.random() < 0.4:
        c = CATEGORIES[absent[int(rng.integers(0, len(absent)))]]
        out.append((f"the {c.name} making a sound", None, "null"))
    return out


def build_refavs(job: Job) -> list[tuple[str, dict[str, Any]]]:
    """ref_avs: referring expressions over 10-frame clips, with seen (test_s), unseen (test_u) and null splits."""
    w = ClipWriter(job)
    scene = _scene_for(job, job.task, job.index)
    uid_clip = w.name
    media = f"REFAVS/media/{uid_clip}"
    frames, masks = render_frames(scene, job.knobs.size, [float(k) for k in range(10)])
    write_audio(w.dir / media / "audio.wav", render_audio(scene, job.knobs.sample_rate), job.knobs.sample_rate)
    for k in range(10):
        write_jpg(w.dir / media / "frames" / f"{k}.jpg", frames[k])
    rng = clip_rng(job.seed, job.task, job.index, 5)
    out: list[tuple[str, dict[str, Any]]] = []
    for j, (expr, obj, kind) in enumerate(_expressions(rng, scene, w.split)):
        fid = job.index * 4 + j
        mask_dir = w.dir / "REFAVS" / "gt_mask" / uid_clip / f"fid_{fid}"
        idx_obj = scene.objects.index(obj) if obj is not None else -1
        obj_masks = masks[:, idx_obj] if obj is not None else np.zeros(masks.shape[:1] + masks.shape[2:], bool)
        for k in range(10):
            write_mask(mask_dir / f"0000{k}.png", obj_masks[k])
        split = "test_n" if obj is None else "test_u" if obj.cat.name in UNSEEN_CATEGORIES else "test_s"
        uid = f"{uid_clip}_{fid}_x"
        frame_ids = [int(rng.integers(0, 10))] if w.split == "train" else list(range(10))
        for k in frame_ids:
            if obj is None:
                truth: dict[str, Any] = {"exists": False, "answer": "absent", "name": None, "box": None, "points": None}
                evidence = (f"The audio contains {'; '.join(_sound(o) for o in scene.objects if any(o.audible))}; "
                            f"nothing matches {expr}, and no such object is in the frame.")
            else:
                box, points = box_points(obj_masks[k])
                truth = {"exists": True, "answer": obj.cat.name, "name": obj.cat.name, "box": box, "points": points}
                heard = "it is sounding" if any(obj.audible) else "it is silent"
                evidence = (f"In the frame {expr} is the {obj.cat.looks} {_at(obj.x)}; in the audio "
                            f"{heard}. It is the {obj.cat.name}.")
            truth.update({"frame_idx": k, "split": split, "kind": kind,
                          "mask": f"REFAVS/gt_mask/{uid_clip}/fid_{fid}/0000{k}.png"})
            image, audio = f"{media}/frames/{k}.jpg", f"{media}/audio.wav"
            if w.split == "train":
                rec = {"image_path": image, "audio_path": audio, "vid": uid_clip, "fid": fid, "uid": uid, "idx": k,
                       "description": expr, "output": w.target(truth, evidence)}
            else:
                rec = {"visual_path": image, "audio_path": audio, "object": expr, "split": split, "vid": uid_clip,
                       "uid": uid, "fid": fid, "frame_idx": k}
            rec["avsynth"] = truth
            out.append((w.split, rec))
    return out


BUILDERS = {
    "a2v": build_matching, "v2a": build_matching, "ks": build_action, "ucf": build_action, "emotion": build_emotion,
    "avqa": build_avqa, "avqa_thu": build_avqa_thu, "ave": build_events, "unav": build_events, "avvp": build_events,
    "s4": build_avs, "ms3": build_avs, "arig": build_avs, "ref_avs": build_refavs, "avcap": build_avcap,
}
"""Clip builder of every AVSynth task."""


def build_clip(job: Job) -> list[tuple[str, dict[str, Any]]]:
    """Build one clip: write its media and return its ``(split, record)`` pairs."""
    return BUILDERS[job.task](job)
