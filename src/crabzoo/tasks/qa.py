"""Audio-visual question answering: MUSIC-AVQA (avqa) and the multiple-choice AVQA set (avqa_thu)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from crabzoo.data.schema import Sample
from crabzoo.tasks.common import VideoTask, check_split
from crabzoo.tasks.parsers import parse_answer
from crabzoo.tasks.policies import AVQA_WINDOWS, AudioPolicy


class AVQATask(VideoTask):
    """MUSIC-AVQA: open answers scored per question type; audio is ten 2-s windows around 0, 6, ..., 54 s."""

    name: ClassVar[str] = "avqa"
    group: ClassVar[str] = "qa"
    audio_policy: ClassVar[AudioPolicy] = AVQA_WINDOWS
    instruction_template: ClassVar[str] = "Please answer this question: {question}"
    answer_format: ClassVar[str] = "<answer>{answer}</answer> (test reference: the raw answer)"
    reference: ClassVar[str] = "GeWu-Lab/MUSIC-AVQA net_grd_avst/main_avst.py (per-type accuracy, Avg)"
    chance_text: ClassVar[str] = "1/|answers| (uniform guess over the answer vocabulary)"

    def sample_from_record(self, record: dict[str, Any], index: int, split: str, task_dir: Path) -> Sample:
        check_split(self, split)
        f = self._fields(record, index, split, task_dir)
        video = [self.video_path(task_dir, f.text("video_path"))]
        audio = [self.audio_path(task_dir, f.text("audio_path"))]
        question = f.text("question")
        kind = f.get("type", (str, list))
        meta = {"vid": f.get("video_id", (str, int)), "qid": f.get("question_id", (str, int)), "type": kind}
        truth = {"answer": f.text("answer").strip(), "type": kind}
        return self._sample(f, index, split, video=video, audio=audio,
                            instruction=self.instruction_template.format(question=question),
                            target=self._target(f, split), truth=truth, meta=meta)

    def answer(self, truth: dict[str, Any]) -> str:
        return f"<answer>{truth['answer']}</answer>"

    def parse(self, text: str) -> Any:
        return parse_answer(text)

    def make_metric(self) -> Any:
        from crabzoo.metrics import MusicAVQAMetric

        return MusicAVQAMetric()

    def baseline(self, truth: dict[str, Any], labels: Sequence[str] = ()) -> Any:
        """Always the first answer (sorted) of the vocabulary."""
        return {"answer": labels[0] if labels else ""}

    def chance(self, truths: Sequence[dict[str, Any]] | None = None) -> dict[str, float]:
        labels = self.label_set(truths or [])
        return {"Avg": 1.0 / len(labels)} if labels else {}


class AVQAThuTask(VideoTask):
    """AVQA (multiple choice): the answer is the chosen option's text."""

    name: ClassVar[str] = "avqa_thu"
    group: ClassVar[str] = "qa"
    instruction_template: ClassVar[str] = (
        "Please answer the question based on the options: {question_text}, options:{multi_choice}"
    )
    answer_format: ClassVar[str] = "<answer>{chosen option text}</answer> (test reference: the raw answer)"
    reference: ClassVar[str] = "accuracy (exact option text, case-insensitive)"
    chance_text: ClassVar[str] = "1/|options| (0.25 with four options)"

    def sample_from_record(self, record: dict[str, Any], index: int, split: str, task_dir: Path) -> Sample:
        check_split(self, split)
        f = self._fields(record, index, split, task_dir)
        video = [self.video_path(task_dir, f.text("video_path"))]
        audio = [self.audio_path(task_dir, f.text("audio_path"))]
        options = f.get("multi_choice", list)
        if not options or not all(isinstance(o, str) for o in options):
            raise f.error("field 'multi_choice' must be a non-empty list of strings")
        f.require("id")
        instruction = self.instruction_template.format(question_text=f.text("question_text"), multi_choice=options)
        meta = {
            "vid": f.get("video_id", (str, int)),
            "name": f.get("video_name", str),
            "type": f.get("question_type", str),
            "relation": f.get("question_relation", str),
        }
        truth = {"answer": f.text("answer").strip(), "options": list(options)}
        return self._sample(f, index, split, video=video, audio=audio, instruction=instruction,
                            target=self._target(f, split), truth=truth, meta=meta)

    def answer(self, truth: dict[str, Any]) -> str:
        return f"<answer>{truth['answer']}</answer>"

    def parse(self, text: str) -> Any:
        return parse_answer(text)

    def make_metric(self) -> Any:
        from crabzoo.metrics import ClassificationMetric

        return ClassificationMetric(primary="accuracy")

    def baseline(self, truth: dict[str, Any], labels: Sequence[str] = ()) -> Any:
        """Always the first option."""
        options = truth.get("options") or [""]
        return {"answer": options[0]}

    def chance(self, truths: Sequence[dict[str, Any]] | None = None) -> dict[str, float]:
        if not truths:
            return {"accuracy": 0.25}
        sizes = [len(t.get("options") or []) for t in truths]
        return {"accuracy": sum(1.0 / n for n in sizes if n) / len(sizes)}
