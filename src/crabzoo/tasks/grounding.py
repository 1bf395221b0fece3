"""Audio-referred image grounding (arig) on AVSBench-S4 frames: category and box ``<obj>(x1,y1)(x2,y2)</obj>``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from crabzoo.data.schema import Sample
from crabzoo.tasks.base import ParseFailure
from crabzoo.tasks.common import ImageTask, check_split, frame_index_from_name
from crabzoo.tasks.parsers import parse_grounding
from crabzoo.tasks.policies import SEGMENTS_5, AudioPolicy


class ARIGTask(ImageTask):
    """arig: the whole clip's audio (5 segments), one frame, a box in the 224 x 224 frame (cIoU, AUC)."""

    name: ClassVar[str] = "arig"
    group: ClassVar[str] = "spatial"
    audio_policy: ClassVar[AudioPolicy] = SEGMENTS_5
    instruction_template: ClassVar[str] = (
        "Please recognize the category of object that makes the sound and then output its bounding box."
    )
    answer_keys: ClassVar[tuple[str, ...]] = ("category", "box")
    answer_format: ClassVar[str] = (
        "The sounding object is {category}. Its coordinates are <obj>({x1},{y1})({x2},{y2})</obj>."
    )
    reference: ClassVar[str] = "stoneMo/EZ-VSL cIoU (share of IoU >= 0.5) and AUC"
    chance_text: ClassVar[str] = "the whole-frame box (cIoU = share of boxes covering >= half the frame)"

    def sample_from_record(self, record: dict[str, Any], index: int, split: str, task_dir: Path) -> Sample:
        check_split(self, split)
        f = self._fields(record, index, split, task_dir)
        image_value = self.image_field(f, split)
        image = self.media_path(task_dir, image_value)
        audio = self.media_path(task_dir, f.text("audio_path"))
        category = f.text("a_obj").strip()
        box = None
        if "top_left" in record or split == "test":
            tl, br = f.get("top_left", list), f.get("bottom_right", list)
            numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in tl + br)
            if len(tl) != 2 or len(br) != 2 or not numbers:
                raise f.error("fields 'top_left' / 'bottom_right' must be [x, y] numbers")
            box = [int(tl[0]), int(tl[1]), int(br[0]), int(br[1])]
        else:
            extra = f.avsynth().get("box")
            if isinstance(extra, list) and len(extra) == 4:
                box = [int(v) for v in extra]
            else:
                parsed = self.parse(str(record.get(self.target_field, "")))
                box = None if isinstance(parsed, ParseFailure) else parsed["box"]
        idx = f.integer("frame_idx") if "frame_idx" in record else frame_index_from_name(image_value)
        truth = {"category": category, "box": box}
        meta = {"frame_path": str(image), "idx": idx, "tot": 5, "a_obj": category}
        return self._sample(f, index, split, video=[image], audio=[audio], instruction=self.instruction_template,
                            target=self._target(f, split), truth=truth, meta=meta)

    def answer(self, truth: dict[str, Any]) -> str:
        x1, y1, x2, y2 = (int(v) for v in truth["box"])
        return f"The sounding object is {truth['category']}. Its coordinates are <obj>({x1},{y1})({x2},{y2})</obj>."

    def parse(self, text: str) -> Any:
        return parse_grounding(text)

    def make_metric(self) -> Any:
        from crabzoo.metrics import ARIGMetric

        return ARIGMetric()

    def baseline(self, truth: dict[str, Any], labels: Sequence[str] = ()) -> Any:
        """The whole 224 x 224 frame."""
        return {"category": labels[0] if labels else None, "box": [0, 0, 224, 224]}

    def label_set(self, truths: Sequence[dict[str, Any]]) -> list[str]:
        return sorted({str(t.get("category")) for t in truths})
