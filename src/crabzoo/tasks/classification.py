"""Classification: action recognition (ks, ucf) and emotion recognition (meld, mer24, cremad, mafw, dfew and the
AVSynth ``emotion`` folder)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from crabzoo.data.schema import Sample
from crabzoo.tasks.common import VideoTask, check_split
from crabzoo.tasks.parsers import parse_answer
from crabzoo.tasks.policies import FIRST_4S, AudioPolicy


class ClassificationTask(VideoTask):
    """One label per clip, answered as ``<answer>{label}</answer>``.

    Attributes:
        label_key: Record field holding the label (the test reference).
        lower: Lower-case the reference (ucf builds its reference from the lower-cased label).
        primary_key: Headline metric key.
    """

    label_key: ClassVar[str] = "label"
    lower: ClassVar[bool] = False
    primary_key: ClassVar[str] = "accuracy"
    reference: ClassVar[str] = "top-1 accuracy (sklearn accuracy_score)"
    chance_text: ClassVar[str] = "1/|labels| (constant guess: UAR 1/|labels|; accuracy = that label's share)"

    def sample_from_record(self, record: dict[str, Any], index: int, split: str, task_dir: Path) -> Sample:
        check_split(self, split)
        f = self._fields(record, index, split, task_dir)
        video = [self.video_path(task_dir, f.text("video_path"))]
        audio = [self.audio_path(task_dir, f.text("audio_path"))]
        label = f.text(self.label_key).strip()
        truth = {"answer": label.lower() if self.lower else label}
        return self._sample(f, index, split, video=video, audio=audio, instruction=self.instruction_template,
                            target=self._target(f, split), truth=truth, meta={})

    def answer(self, truth: dict[str, Any]) -> str:
        return f"<answer>{truth['answer']}</answer>"

    def parse(self, text: str) -> Any:
        return parse_answer(text)

    def make_metric(self) -> Any:
        from crabzoo.metrics import ClassificationMetric

        return ClassificationMetric(primary=self.primary_key)

    def baseline(self, truth: dict[str, Any], labels: Sequence[str] = ()) -> Any:
        """Always the first label (sorted) of the label set."""
        return {"answer": labels[0] if labels else ""}

    def chance(self, truths: Sequence[dict[str, Any]] | None = None) -> dict[str, float]:
        """``1/|labels|`` for accuracy, UAR and WAR of a uniform guess (labels from ``truths``)."""
        labels = self.label_set(truths or [])
        if not labels:
            return {}
        p = 1.0 / len(labels)
        return {"accuracy": p, "uar": p, "war": p}


class _Action(ClassificationTask):
    group: ClassVar[str] = "action"
    instruction_template: ClassVar[str] = "Please identify the action taking place in the video."
    answer_format: ClassVar[str] = "<answer>{action}</answer>"


class KSTask(_Action):
    """Kinetics-Sounds action recognition (label field ``action``; target ``label``)."""

    name: ClassVar[str] = "ks"
    label_key: ClassVar[str] = "action"


class UCFTask(_Action):
    """UCF-101 action recognition (reference: the lower-cased ``label``; target ``new_label``)."""

    name: ClassVar[str] = "ucf"
    label_key: ClassVar[str] = "label"
    target_field: ClassVar[str] = "new_label"
    lower: ClassVar[bool] = True


class EmotionTask(ClassificationTask):
    """Emotion recognition: 4 frames and the first 4 s of audio (accuracy, weighted F1, UAR, WAR)."""

    group: ClassVar[str] = "emotion"
    frames: ClassVar[int] = 4
    audio_policy: ClassVar[AudioPolicy] = FIRST_4S
    label_key: ClassVar[str] = "emotion"
    instruction_template: ClassVar[str] = "Please judge the person's emotion at the moment."
    answer_format: ClassVar[str] = "<answer>{emotion}</answer>"
    reference: ClassVar[str] = "accuracy; weighted F1 (MELD); UAR / WAR (DFEW, MAFW)"


class MELDTask(EmotionTask):
    """MELD (label field ``Emotion`` with a capital E; headline weighted F1)."""

    name: ClassVar[str] = "meld"
    label_key: ClassVar[str] = "Emotion"
    primary_key: ClassVar[str] = "weighted_f1"


class MER24Task(EmotionTask):
    """MER2024 (train only; label field ``discrete``)."""

    name: ClassVar[str] = "mer24"
    label_key: ClassVar[str] = "discrete"
    splits: ClassVar[tuple[str, ...]] = ("train",)


class CREMADTask(EmotionTask):
    """CREMA-D."""

    name: ClassVar[str] = "cremad"


class MAFWTask(EmotionTask):
    """MAFW (headline UAR)."""

    name: ClassVar[str] = "mafw"
    primary_key: ClassVar[str] = "uar"


class DFEWTask(EmotionTask):
    """DFEW (headline UAR)."""

    name: ClassVar[str] = "dfew"
    primary_key: ClassVar[str] = "uar"


class AVSynthEmotionTask(EmotionTask):
    """The AVSynth ``emotion`` folder: cremad's fields, prompt, media policy and metrics."""

    name: ClassVar[str] = "emotion"
