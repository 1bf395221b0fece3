"""Audio-visual segmentation: AVSBench s4 / ms3 and Ref-AVS, answered in the Crab+ text form.

The answer names the sounding object, its box ``[x1,y1,x2,y2]`` and three points ``[x,y]`` in the 224 x 224
frame; the prompt stage (:mod:`crabzoo.heads.sam2_prompt`) turns them into a mask, scored against the ground
truth with the AVSBench mIoU / F-score (and the Ref-AVS null-split S). A Crab v1 mask-token model passes
``{"mask": array}`` predictions, which are scored directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from crabzoo.data.schema import Sample
from crabzoo.tasks.common import Fields, ImageTask, check_split
from crabzoo.tasks.masks import avsbench_mask_path, refavs_mask_path
from crabzoo.tasks.parsers import format_box_points, parse_ref, parse_segmentation
from crabzoo.tasks.policies import ONE_OF_5, ONE_OF_10, AudioPolicy


def box_points_from_extra(f: Fields) -> dict[str, Any]:
    """``box`` / ``points`` from the record's ``avsynth`` extra when present (else ``None`` / ``[]``)."""
    extra = f.avsynth()
    box, points = extra.get("box"), extra.get("points")
    if box is not None and not (isinstance(box, list) and len(box) == 4):
        raise f.error("avsynth.box must be [x1, y1, x2, y2]")
    pairs = isinstance(points, list) and all(isinstance(p, list) and len(p) == 2 for p in points)
    if points is not None and not pairs:
        raise f.error("avsynth.points must be a list of [x, y]")
    return {"box": [int(v) for v in box] if box else None, "points": [[int(x), int(y)] for x, y in points or []]}


class _Segmentation(ImageTask):
    group: ClassVar[str] = "spatial"
    reference: ClassVar[str] = "OpenNLPLab/AVSBench utility.py mask_iou / Eval_Fmeasure (beta^2 = 0.3)"
    chance_text: ClassVar[str] = "the full-frame mask (mIoU = mean foreground share of the ground truth)"

    def make_metric(self, prompter: Any = None, protocol: str = "avsbench") -> Any:
        """mIoU / F-score through the prompt stage (``BoxFillPrompter`` unless ``prompter`` is given).

        Args:
            prompter: Prompt stage turning box + points into a mask.
            protocol: Mask protocol, ``avsbench`` or ``crab_plus`` (see :mod:`crabzoo.tasks.seg_metric`).
        """
        from crabzoo.tasks.seg_metric import RefAVSMetric, SegmentationMetric

        return (RefAVSMetric if self.name == "ref_avs" else SegmentationMetric)(prompter=prompter, protocol=protocol)

    def label_set(self, truths: Sequence[dict[str, Any]]) -> list[str]:
        """Categories (object names for ref_avs), most frequent first."""
        counts: dict[str, int] = {}
        for t in truths:
            name = t.get("category") or t.get("name")
            if name:
                counts[str(name)] = counts.get(str(name), 0) + 1
        return sorted(counts, key=lambda k: (-counts[k], k))

    def baseline(self, truth: dict[str, Any], labels: Sequence[str] = ()) -> Any:
        """The whole frame, named with the most frequent category."""
        return {"category": labels[0] if labels else None, "exists": True, "name": None,
                "box": [0, 0, 223, 223], "points": []}


class AVSBenchTask(_Segmentation):
    """s4 / ms3: ``The object making the sound is {category}. Its bounding box is [...] and three points ...``."""

    instruction_template: ClassVar[str] = (
        "Please identify the category of the object producing the sound in the video frame. Then, provide the "
        "bounding box and three pixel points of the object that is making the sound within the frame."
    )
    audio_policy: ClassVar[AudioPolicy] = ONE_OF_5
    answer_keys: ClassVar[tuple[str, ...]] = ("category", "box", "points")
    answer_format: ClassVar[str] = (
        "The object making the sound is {category}. Its bounding box is [x1,y1,x2,y2] and three points on it "
        "are [x,y], [x,y], [x,y]."
    )

    def _audio_idx(self, f: Fields, split: str) -> int:
        return f.integer("frame_idx")

    def sample_from_record(self, record: dict[str, Any], index: int, split: str, task_dir: Path) -> Sample:
        check_split(self, split)
        f = self._fields(record, index, split, task_dir)
        image = self.media_path(task_dir, self.image_field(f, split))
        audio = self.media_path(task_dir, f.text("audio_path"))
        f.require("vid")
        uid = f.get("uid", (str, int))
        idx = self._audio_idx(f, split)
        if not 0 <= idx < 5:
            raise f.error(f"frame index {idx} is not in 0..4")
        frame = f.integer("frame_idx") if "frame_idx" in record else idx
        truth = {
            "category": f.text("a_obj").strip(),
            **box_points_from_extra(f),
            "mask_path": str(avsbench_mask_path(image)),
            "image_path": str(image),
            "video": str(uid),
        }
        meta = {"vid": record.get("vid"), "uid": uid, "a_obj": truth["category"], "idx": frame, "tot": 5,
                "audio_idx": idx, "frame_idx": frame}
        return self._sample(f, index, split, video=[image], audio=[audio], instruction=self.instruction_template,
                            target=self._target(f, split), truth=truth, meta=meta)

    def answer(self, truth: dict[str, Any]) -> str:
        if truth.get("box") is None or len(truth.get("points") or []) != 3:
            from crabzoo.errors import CrabzooError

            raise CrabzooError(f"{self.name}: format_target needs truth['box'] and three truth['points']")
        return f"The object making the sound is {truth['category']}. {format_box_points(truth['box'], truth['points'])}"

    def parse(self, text: str) -> Any:
        return parse_segmentation(text)


class S4Task(AVSBenchTask):
    """AVSBench single-source (train audio is always segment 0; test uses ``frame_idx``)."""

    name: ClassVar[str] = "s4"

    def _audio_idx(self, f: Fields, split: str) -> int:
        return 0 if split == "train" else f.integer("frame_idx")


class MS3Task(AVSBenchTask):
    """AVSBench multi-source (audio segment ``frame_idx`` of 5)."""

    name: ClassVar[str] = "ms3"


class RefAVSTask(_Segmentation):
    """Ref-AVS: ``<answer>true</answer> The object is {name}. Its bounding box ...`` or ``<answer>false</answer>``."""

    name: ClassVar[str] = "ref_avs"
    audio_policy: ClassVar[AudioPolicy] = ONE_OF_10
    target_field: ClassVar[str] = "output"
    instruction_template: ClassVar[str] = (
        "Please analyze the video frame and audio to find the object described as <des>{expr}</des>. Answer with "
        '"true" or "false" whether the object exists. If it exists, respond with a sentence identifying the '
        "object's name, its bounding box, and three pixel points; if not, state that the object is absent."
    )
    answer_keys: ClassVar[tuple[str, ...]] = ("exists", "name", "box", "points")
    answer_format: ClassVar[str] = (
        "<answer>true</answer> The object is {name}. Its bounding box is [x1,y1,x2,y2] and three points on it are "
        "[x,y], [x,y], [x,y]. or <answer>false</answer> The object is absent."
    )
    reference: ClassVar[str] = (
        "AVSBench mIoU / F-score on test_s (seen) and test_u (unseen); GeWu-Lab/Ref-AVS metric_s_for_null on test_n"
    )
    chance_text: ClassVar[str] = "the full-frame mask (seen / unseen: GT foreground share; null: S = 1)"

    def sample_from_record(self, record: dict[str, Any], index: int, split: str, task_dir: Path) -> Sample:
        check_split(self, split)
        f = self._fields(record, index, split, task_dir)
        image = self.media_path(task_dir, self.image_field(f, split))
        audio = self.media_path(task_dir, f.text("audio_path"))
        fid = f.get("fid", (int, str))
        uid = f.get("uid", (str, int))
        vid = f.get("vid", (str, int))
        if split == "train":
            expr, idx, ref_split = f.text("description"), f.integer("idx"), "train"
        else:
            expr, idx, ref_split = f.text("object"), f.integer("frame_idx"), f.text("split")
        if not 0 <= idx < 10:
            raise f.error(f"frame index {idx} is not in 0..9")
        extra = f.avsynth()
        exists = extra.get("exists")
        if not isinstance(exists, bool):
            if split == "train":
                parsed = self.parse(str(f.record.get("output", "")))
                exists = bool(parsed["exists"]) if isinstance(parsed, dict) else True
            else:
                exists = ref_split != "test_n"
        name = extra.get("name")
        truth = {
            "exists": exists,
            "name": name if isinstance(name, str) else None,
            **(box_points_from_extra(f) if exists else {"box": None, "points": []}),
            "mask_path": str(refavs_mask_path(image, fid)) if exists else None,
            "image_path": str(image),
            "split": ref_split,
            "video": f"{uid}",
        }
        meta = {"vid": vid, "uid": uid, "fid": fid, "idx": idx, "split": ref_split, "object": expr, "audio_idx": idx}
        return self._sample(f, index, split, video=[image], audio=[audio],
                            instruction=self.instruction_template.format(expr=expr.lower()),
                            target=self._target(f, split), truth=truth, meta=meta)

    def answer(self, truth: dict[str, Any]) -> str:
        if not truth.get("exists"):
            return "<answer>false</answer> The object is absent."
        if truth.get("box") is None or len(truth.get("points") or []) != 3 or not truth.get("name"):
            from crabzoo.errors import CrabzooError

            raise CrabzooError("ref_avs: format_target needs truth['name'], truth['box'] and three truth['points']")
        where = format_box_points(truth["box"], truth["points"])
        return f"<answer>true</answer> The object is {truth['name']}. {where}"

    def parse(self, text: str) -> Any:
        return parse_ref(text)
