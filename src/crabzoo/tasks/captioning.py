"""Audio-visual captioning (avcap, VALOR): reasoning then ``<answer>{caption}</answer>``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from crabzoo.data.schema import Sample
from crabzoo.tasks.base import ParseFailure
from crabzoo.tasks.common import VideoTask, check_split
from crabzoo.tasks.parsers import parse_caption


class AVCapTask(VideoTask):
    """avcap: the caption is the ``<answer>`` content (or the whole text); CIDEr-D, BLEU-4, ROUGE-L."""

    name: ClassVar[str] = "avcap"
    group: ClassVar[str] = "captioning"
    splits: ClassVar[tuple[str, ...]] = ("train",)
    instruction_template: ClassVar[str] = "Please describe this video and audio."
    target_field: ClassVar[str] = "label_content"
    answer_keys: ClassVar[tuple[str, ...]] = ("caption",)
    answer_format: ClassVar[str] = "<answer>{caption}</answer> (bare form: the caption alone)"
    reference: ClassVar[str] = "tylin/coco-caption pycocoevalcap (CIDEr-D, BLEU-4, ROUGE-L)"
    chance_text: ClassVar[str] = "the most frequent reference caption of the set, given to every clip"

    def sample_from_record(self, record: dict[str, Any], index: int, split: str, task_dir: Path) -> Sample:
        check_split(self, split)
        f = self._fields(record, index, split, task_dir)
        video = [self.video_path(task_dir, f.text("video_path"))]
        audio = [self.audio_path(task_dir, f.text("audio_path"))]
        extra = f.avsynth()
        captions = extra.get("captions")
        if not (isinstance(captions, list) and captions and all(isinstance(c, str) for c in captions)):
            caption = extra.get("caption")
            if isinstance(caption, str) and caption.strip():
                captions = [caption]
            else:
                parsed = parse_caption(f.get(self.target_field, str))
                if isinstance(parsed, ParseFailure):
                    raise f.error(f"no caption: {parsed.reason}")
                captions = [parsed["caption"]]
        truth = {"caption": captions[0], "captions": list(captions)}
        return self._sample(f, index, split, video=video, audio=audio, instruction=self.instruction_template,
                            target=self._target(f, split), truth=truth,
                            meta={"video_id": f.get("video_id", (str, int))})

    def answer(self, truth: dict[str, Any]) -> str:
        return f"<answer>{truth['caption']}</answer>"

    def format_target(self, truth: dict[str, Any], evidence: str | None = None, reasoning: bool = True) -> str:
        """Reasoning then ``<answer>{caption}</answer>``; the bare caption when reasoning is off."""
        evidence = evidence if evidence is not None else truth.get("evidence")
        if reasoning and isinstance(evidence, str) and evidence.strip():
            return f"{evidence.strip()} {self.answer(truth)}"
        return str(truth["caption"])

    def parse(self, text: str) -> Any:
        return parse_caption(text)

    def make_metric(self) -> Any:
        from crabzoo.metrics import CaptionMetric

        return CaptionMetric()

    def baseline(self, truth: dict[str, Any], labels: Sequence[str] = ()) -> Any:
        """The set's most frequent reference caption."""
        return {"caption": labels[0] if labels else ""}

    def label_set(self, truths: Sequence[dict[str, Any]]) -> list[str]:
        counts: dict[str, int] = {}
        for t in truths:
            for c in t.get("captions") or [t.get("caption", "")]:
                counts[c] = counts.get(c, 0) + 1
        return sorted(counts, key=lambda k: (-counts[k], k))
