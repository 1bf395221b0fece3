"""The preparer of the image+audio tasks (s4, ms3, arig, ref_avs), whose sources already ship frames and masks.

AVSBench-semantic keeps ``v1s/<clip>/{audio.wav, frames/<k>.jpg, labels_rgb/<k>.png, labels_semantic/<k>.png}``
and Ref-AVS keeps ``media/<clip>/{audio.wav, frames/<k>.jpg}`` with ``gt_mask/<clip>/fid_<fid>/0000<k>.png``:
the AV-UIE v2 records name the same files below ``AVS/`` and ``REFAVS/``. Every file is linked; test records
also need their ground-truth mask (the evaluation reads it); train records get theirs where the source has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from crabzoo.data.prepare.base import Catalogue, MediaJob, Preparer, RecordPlan


def mask_of(task: str, image: str, fid: Any) -> str | None:
    """The ground-truth mask path (relative to the task folder) of a frame path, or ``None``."""
    path = PurePosixPath(image)
    if task in ("s4", "ms3"):
        return str(path.parent.parent / "labels_rgb" / f"{path.stem}.png")
    if task == "ref_avs" and fid is not None and "media" in path.parts:
        at = path.parts.index("media")
        clip = path.parts[at + 1]
        return str(PurePosixPath(*path.parts[:at], "gt_mask", clip, f"fid_{fid}", f"0000{path.stem}.png"))
    return None


@dataclass
class FrameSource(Preparer):
    """An image+audio source whose clip folders the records name below a fixed prefix.

    Attributes:
        task: Task folder id.
        dataset: Source dataset name.
        prefix: Folder the records put in front of the source's own paths (``AVS``, ``REFAVS``).
        required: Paths under ``--src`` that must exist (``metadata.csv``, ``v1s``).
        catalogue: The official id list (clip folder names).
        gaps: Known gaps, by name.
        clip_part: Position of the clip folder in a record path after the prefix (``v1s/<clip>/...``: 1).
        masks: Link the ground-truth masks (required for test records, where present for train records).
    """

    task: str
    dataset: str
    prefix: str
    required: tuple[str, ...] = ()
    catalogue: Catalogue | None = None
    gaps: tuple[str, ...] = ()
    clip_part: int = 1
    masks: bool = True

    def __post_init__(self) -> None:
        self._src = Path(".")
        self._listed: set[str] | None = None

    def scan(self, src: Path) -> None:
        self._src = src
        self._listed = self.catalogue.read(src) if self.catalogue is not None else None

    def _job(self, value: str, what: str, out: RecordPlan) -> None:
        path = PurePosixPath(value)
        if not path.parts or path.parts[0] != self.prefix:
            out.missing.append(f"{what} {value!r}: not below {self.prefix}/ as the {self.dataset} layout needs")
            return
        inner = PurePosixPath(*path.parts[1:])
        source = self._src / inner
        if not source.is_file():
            clip = inner.parts[self.clip_part] if len(inner.parts) > self.clip_part else str(inner)
            line = f"{what} {value!r}: no file {source}"
            if self._listed is not None and self.catalogue is not None:
                line += (f" (clip {clip!r} is listed in {self.catalogue.pattern})" if clip in self._listed
                         else f" (clip {clip!r} is not listed in {self.catalogue.pattern})")
            out.missing.append(line)
            return
        out.jobs.append(MediaJob(value, source, "link"))

    def plan(self, record: dict[str, Any], split: str) -> RecordPlan:
        out = RecordPlan()
        image = str(record.get("visual_path") or record.get("image_path") or "")
        self._job(image, "image", out)
        self._job(str(record.get("audio_path", "")), "audio", out)
        mask = mask_of(self.task, image, record.get("fid")) if self.masks else None
        if mask is not None and (split == "test" or self._source(mask).is_file()):
            self._job(mask, "mask", out)  # train clips may be annotated on some frames only: linked when there
        return out

    def _source(self, value: str) -> Path:
        return self._src / PurePosixPath(*PurePosixPath(value).parts[1:])
