"""Cross-modal matching: a2v (which of two videos matches the audio) and v2a (which of two audio clips)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from crabzoo.data.schema import AudioClip, Sample, VisualClip
from crabzoo.tasks.common import H_A2V, H_V2A, VideoTask, check_split
from crabzoo.tasks.parsers import parse_choice
from crabzoo.tasks.policies import concat_clips


class _Matching(VideoTask):
    group: ClassVar[str] = "matching"
    answer_format: ClassVar[str] = "<answer>1</answer> or <answer>2</answer>"
    reference: ClassVar[str] = "accuracy (Crab+ test reference `<answer>{correct}</answer>.`)"
    chance_text: ClassVar[str] = "0.5 (two candidates)"
    correct_key: ClassVar[str]

    def answer(self, truth: dict[str, Any]) -> str:
        return f"<answer>{truth['answer']}</answer>"

    def parse(self, text: str) -> Any:
        return parse_choice(text)

    def make_metric(self) -> Any:
        from crabzoo.metrics import ClassificationMetric

        return ClassificationMetric(primary="accuracy", classes=["1", "2"])

    def baseline(self, truth: dict[str, Any], labels: Sequence[str] = ()) -> Any:
        """Always the first candidate."""
        return {"answer": "1"}

    def chance(self, truths: Sequence[dict[str, Any]] | None = None) -> dict[str, float]:
        return {"accuracy": 0.5, "uar": 0.5}

    def _truth(self, f: Any) -> dict[str, Any]:
        value = f.get(self.correct_key, (int, str))
        answer = str(value).strip()
        answer = {"one": "1", "two": "2"}.get(answer.lower(), answer)
        if answer not in ("1", "2"):
            raise f.error(f"field {self.correct_key!r} must be 1 or 2, got {value!r}")
        return {"answer": answer}


class A2VTask(_Matching):
    """a2v: listen to the audio, say which of two videos matches (the videos are joined into 20 frames)."""

    name: ClassVar[str] = "a2v"
    header: ClassVar[str] = H_A2V
    media: ClassVar[tuple[str, ...]] = ("audio", "video")
    instruction_template: ClassVar[str] = (
        "Please listen to the audio and indicate which of the two videos matches what you hear."
    )
    correct_key: ClassVar[str] = "correct_video"

    def sample_from_record(self, record: dict[str, Any], index: int, split: str, task_dir: Path) -> Sample:
        check_split(self, split)
        f = self._fields(record, index, split, task_dir)
        videos = [self.video_path(task_dir, f.text(k)) for k in ("video1_path", "video2_path")]
        audio = [self.audio_path(task_dir, f.text("audio_path"))]
        if split == "train":
            f.require("audio_event", "video1_event", "video2_event")
        meta = {k: record[k] for k in ("audio_event", "video1_event", "video2_event") if k in record}
        return self._sample(f, index, split, video=videos, audio=audio, instruction=self.instruction_template,
                            target=self._target(f, split), truth=self._truth(f), meta=meta)

    def load_media(self, sample: Sample, loader: Any) -> dict[str, AudioClip | VisualClip]:
        """The two 10-frame videos joined in time (20 frames; the second resized to the first's size if needed)."""
        first = self.read_frames(sample.video[0], loader)
        second = self.read_frames(sample.video[1], loader)
        frames2 = second.frames
        from PIL import Image

        if frames2.shape[1:3] != first.frames.shape[1:3]:
            h, w = first.frames.shape[1:3]
            frames2 = np.stack([np.asarray(Image.fromarray(fr).resize((w, h), Image.BILINEAR)) for fr in frames2])
        t1 = first.timestamps
        offset = float(t1[-1]) + float(t1[-1] - t1[0]) / max(1, len(t1) - 1)  # the second video follows the first
        visual = VisualClip(np.concatenate([first.frames, frames2]), np.concatenate([t1, second.timestamps + offset]))
        return {"audio": self.read_audio(sample.audio[0], loader), "visual": visual}


class V2ATask(_Matching):
    """v2a: watch the video, say which of two audio clips matches (the two crops are joined in time)."""

    name: ClassVar[str] = "v2a"
    header: ClassVar[str] = H_V2A
    instruction_template: ClassVar[str] = (
        "Please view the video and indicate which of the two audio clips matches what you see."
    )
    correct_key: ClassVar[str] = "correct_audio"

    def sample_from_record(self, record: dict[str, Any], index: int, split: str, task_dir: Path) -> Sample:
        check_split(self, split)
        f = self._fields(record, index, split, task_dir)
        video = [self.video_path(task_dir, f.text("video_path"))]
        audios = [self.audio_path(task_dir, f.text(k)) for k in ("audio1_path", "audio2_path")]
        if split == "train":
            f.require("audio1_event", "video_event", "audio2_event")
        meta = {k: record[k] for k in ("audio1_event", "video_event", "audio2_event") if k in record}
        return self._sample(f, index, split, video=video, audio=audios, instruction=self.instruction_template,
                            target=self._target(f, split), truth=self._truth(f), meta=meta)

    def load_media(self, sample: Sample, loader: Any) -> dict[str, AudioClip | VisualClip]:
        """One 10-frame video and the two 10-segment crops concatenated (20 rows)."""
        clips = [self.read_audio(path, loader) for path in sample.audio]
        return {"visual": self.read_frames(sample.video[0], loader), "audio": concat_clips(clips)}
