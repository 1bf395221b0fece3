"""Shared machinery of the concrete tasks: record field access, video / image task bases, chance levels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from crabzoo.data.schema import AudioClip, Sample, VisualClip
from crabzoo.errors import CrabzooError, MalformedRecordError
from crabzoo.tasks.base import ParseFailure, Task
from crabzoo.tasks.policies import SEGMENTS_10, AudioPolicy

H_AV = "This is a video and an audio:"
H_IA = "This is an image and an audio:"
H_A2V = "These are two videos and an audio:"
H_V2A = "This is a video and two audio clips:"

_ANY = object()


class Fields:
    """Typed access to one record's fields; a missing or wrong-typed field raises MalformedRecordError.

    Args:
        record: The raw record.
        path: The annotation file (for the error message).
        index: Position of the record in the file.
    """

    def __init__(self, record: Any, path: Path, index: int) -> None:
        if not isinstance(record, dict):
            raise MalformedRecordError(str(path), index, f"record is a {type(record).__name__}, not a JSON object")
        self.record, self.path, self.index = record, path, index

    def error(self, reason: str) -> MalformedRecordError:
        """A MalformedRecordError for this record."""
        return MalformedRecordError(str(self.path), self.index, reason)

    def get(self, key: str, kind: Any = _ANY) -> Any:
        """``record[key]``, checked against ``kind`` (a type or tuple of types; bools are never ints)."""
        if key not in self.record:
            raise self.error(f"missing field {key!r}")
        value = self.record[key]
        if kind is not _ANY:
            kinds = kind if isinstance(kind, tuple) else (kind,)
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                names = " or ".join(k.__name__ for k in kinds)
                raise self.error(f"field {key!r} must be {names}, got {type(value).__name__} {value!r:.60}")
        return value

    def text(self, key: str) -> str:
        """A non-empty string field."""
        value = self.get(key, str)
        if not value.strip():
            raise self.error(f"field {key!r} is empty")
        return value

    def integer(self, key: str) -> int:
        """An integer field (ints, integral floats and digit strings are accepted)."""
        value = self.get(key, (int, float, str))
        try:
            number = float(value)
        except ValueError:
            raise self.error(f"field {key!r} must be an integer, got {value!r:.60}") from None
        if not number.is_integer():
            raise self.error(f"field {key!r} must be an integer, got {value!r:.60}")
        return int(number)

    def require(self, *keys: str) -> None:
        """Check that fields read (but unused) by the Crab+ loader are present."""
        for key in keys:
            self.get(key)

    def avsynth(self) -> dict[str, Any]:
        """The optional ``avsynth`` extra (richer ground truth of AVSynth records), ``{}`` when absent."""
        extra = self.record.get("avsynth")
        return extra if isinstance(extra, dict) else {}


class BaseTask(Task):
    """Concrete defaults shared by every task.

    Attributes:
        instruction_template: The exact instruction (``{...}`` fields filled from the record).
        answer_format: The tagged answer form, for the docs.
        answer_keys: Keys of ``truth`` that the answer carries (they round-trip through format/parse).
        reference: The benchmark's reference scorer.
        chance_text: How the chance level is defined.
        audio_policy: Audio crop policy.
        target_field: Record field holding the training target, per split.
    """

    instruction_template: ClassVar[str] = ""
    answer_format: ClassVar[str] = ""
    answer_keys: ClassVar[tuple[str, ...]] = ("answer",)
    reference: ClassVar[str] = ""
    chance_text: ClassVar[str] = ""
    audio_policy: ClassVar[AudioPolicy] = SEGMENTS_10
    target_field: ClassVar[str] = "label"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    # ------------------------------------------------------------------ records
    def _fields(self, record: dict[str, Any], index: int, split: str, task_dir: Path) -> Fields:
        return Fields(record, Path(task_dir) / f"{split}.json", index)

    def _target(self, f: Fields, split: str) -> str:
        if split == "train":
            return f.get(self.target_field, str)
        value = f.record.get(self.target_field, "")
        return value if isinstance(value, str) else ""

    def _sample(self, f: Fields, index: int, split: str, **kwargs: Any) -> Sample:
        return Sample(id=f"{self.name}/{split}/{index}", task=self.name, split=split, record=f.record, **kwargs)

    # ------------------------------------------------------------------ targets
    def answer(self, truth: dict[str, Any]) -> str:
        """The tagged answer for ``truth`` (without reasoning)."""
        raise NotImplementedError

    def format_target(self, truth: dict[str, Any], evidence: str | None = None, reasoning: bool = True) -> str:
        """Reasoning sentences (``evidence``, or ``truth["evidence"]``) then the tagged answer; the bare answer when
        ``reasoning`` is off or no evidence is known."""
        answer = self.answer(truth)
        evidence = evidence if evidence is not None else truth.get("evidence")
        if reasoning and isinstance(evidence, str) and evidence.strip():
            return f"{evidence.strip()} {answer}"
        return answer

    def answer_part(self, value: Any) -> Any:
        """The answer-bearing part of a truth or a prediction (what must round-trip through format -> parse)."""
        if isinstance(value, ParseFailure) or not isinstance(value, dict):
            return value
        return {k: value.get(k) for k in self.answer_keys}

    # ------------------------------------------------------------------ metrics
    def metric_info(self) -> tuple[str, dict[str, bool]]:
        """``(primary key, {key: higher_is_better})`` of this task's metric."""
        metric = self.make_metric()
        return metric.primary, dict(metric.higher_is_better)

    @property
    def primary(self) -> str:
        """Primary metric key."""
        return self.metric_info()[0]

    def baseline(self, truth: dict[str, Any], labels: Sequence[str] = ()) -> Any:
        """The trivial prediction for ``truth`` (ignores the media); ``labels`` is the task's label set."""
        return ParseFailure("no trivial baseline")

    def chance(self, truths: Sequence[dict[str, Any]] | None = None) -> dict[str, float]:
        """Chance level per metric key: analytic where it is defined, else the trivial baseline's score on
        ``truths``; ``{}`` when it depends on data that is not given."""
        if not truths:
            return {}
        labels = self.label_set(truths)
        metric = self.make_metric()
        metric.update([self.baseline(t, labels) for t in truths], list(truths))
        out = metric.compute()
        return {k: float(v) for k, v in out.items() if k not in ("n_total", "n_parsed")}

    def label_set(self, truths: Sequence[dict[str, Any]]) -> list[str]:
        """Sorted distinct answers of ``truths``."""
        return sorted({str(t.get("answer")) for t in truths if isinstance(t, dict) and "answer" in t})


class VideoTask(BaseTask):
    """A task whose media are videos (``<task_dir>/video/...``) and audio files (``<task_dir>/audio/...``)."""

    header: ClassVar[str] = H_AV
    media: ClassVar[tuple[str, ...]] = ("video", "audio")

    @staticmethod
    def video_path(task_dir: Path, value: str) -> Path:
        """Absolute path of a video field value."""
        return (Path(task_dir) / "video" / value).absolute()

    @staticmethod
    def audio_path(task_dir: Path, value: str) -> Path:
        """Absolute path of an audio field value."""
        return (Path(task_dir) / "audio" / value).absolute()

    def read_frames(self, path: Path, loader: Any) -> VisualClip:
        """``self.frames`` frames at native size, sampled endpoint-inclusive over the whole video
        (``round(linspace(0, n - 1, frames))``, see :func:`~crabzoo.tasks.policies.frame_indices`)."""
        frames, times = loader.read_video_frames(path, num_frames=self.frames)
        return VisualClip(np.asarray(frames, dtype=np.uint8), np.asarray(times, dtype=np.float64))

    def read_audio(self, path: Path, loader: Any, idx: int = 0) -> AudioClip:
        """Decoded audio cropped by :attr:`audio_policy`."""
        return self.audio_policy(loader.read_audio(path), idx=idx)

    def load_media(self, sample: Sample, loader: Any) -> dict[str, AudioClip | VisualClip]:
        """One video (``frames`` frames) and one cropped audio."""
        return {"visual": self.read_frames(sample.video[0], loader), "audio": self.read_audio(sample.audio[0], loader)}


class ImageTask(BaseTask):
    """A task whose media are one image and one audio file, both at paths below the task folder."""

    header: ClassVar[str] = H_IA
    media: ClassVar[tuple[str, ...]] = ("image", "audio")
    frames: ClassVar[int] = 1
    target_field: ClassVar[str] = "label_content"

    @staticmethod
    def media_path(task_dir: Path, value: str) -> Path:
        """Absolute path of an image-task media field value."""
        return (Path(task_dir) / value).absolute()

    def image_key(self, split: str) -> str:
        """``image_path`` in train, ``visual_path`` in test (AVSynth test files may use either)."""
        return "image_path" if split == "train" else "visual_path"

    def image_field(self, f: Fields, split: str) -> str:
        """The image path value of a record, accepting the other split's key as a fallback."""
        key = self.image_key(split)
        other = "visual_path" if key == "image_path" else "image_path"
        if key not in f.record and other in f.record:
            key = other
        return f.text(key)

    def load_media(self, sample: Sample, loader: Any) -> dict[str, AudioClip | VisualClip]:
        """The image as a one-frame clip and the audio cropped by the policy (chunk ``meta["audio_idx"]``)."""
        image = np.asarray(loader.read_image(sample.video[0]), dtype=np.uint8)
        clip = self.audio_policy(loader.read_audio(sample.audio[0]), idx=int(sample.meta.get("audio_idx", 0)))
        return {"visual": VisualClip(image[None], np.zeros(1)), "audio": clip}


def frame_index_from_name(path: str) -> int | None:
    """Integer stem of an image name (``.../frames/3.jpg`` -> 3), or ``None``."""
    stem = Path(path).stem
    return int(stem) if stem.isdigit() else None


def check_split(task: Task, split: str) -> None:
    """Raise CrabzooError for a split name other than train / test."""
    if split not in ("train", "test"):
        raise CrabzooError(f"{task.name}: unknown split {split!r}; use 'train' or 'test'")
