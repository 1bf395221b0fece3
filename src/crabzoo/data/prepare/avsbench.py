"""s4 and ms3 from the original AVSBench release (AVSBench-object, "v1"), and the choice between its two layouts.

The original release keeps one folder per part, holding a meta CSV and a data folder::

    Single-source/s4_meta_data.csv                  name, (start), category, split
    Single-source/s4_data/visual_frames/<split>/<category>/<name>/<name>_<k>.png    k = 1..5
                         audio_wav/<split>/<category>/<name>.wav
                         gt_masks/<split>/<category>/<name>/<name>_<k>.png          train: k = 1 only
                         raw_videos/<split>/<category>/<name>.mp4
    Multi-sources/ms3_meta_data.csv                  name, split
    Multi-sources/ms3_data/visual_frames/<name>/<name>.mp4_<k>.png
                          audio_wav/<split>/<name>.wav
                          gt_masks/<split>/<name>/<name>_<k>.png                    k = 1..5
                          raw_videos/<name>.mp4

(``audio_log_mel/`` holds pickled tensors and is never read.) AV-UIE v2 names the AVSBench-semantic copy of the
same clips, ``AVS/v1s/<uid>/frames/<k>.jpg`` with ``k = 0..4``, whose ``vid`` is the original release's ``name``:
frame ``k`` of a record is the original's ``<name>_<k+1>.png``. The frames are linked (they are PNG under the
record's ``.jpg`` name; images are opened by content); a clip whose frames are absent but whose raw video is there
gets them extracted (:func:`~crabzoo.data.prepare.ops.extract_frames`), and its audio likewise.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from crabzoo.data.prepare.base import MediaJob, Preparer, RecordPlan
from crabzoo.data.prepare.frames import FrameSource, mask_of
from crabzoo.errors import CrabzooError

PART_FOLDERS = {"s4": "Single-source", "ms3": "Multi-sources"}
"""Folder of each part inside the release's ``avsbench_data``."""

_SEGMENT = re.compile(r"^(?P<name>.+)_\d+_\d+$")


@dataclass(frozen=True)
class ClipRow:
    """One row of the meta CSV: the clip's name, split and (S4) category."""

    name: str
    split: str
    category: str


def meta_csv(src: Path, part: str) -> Path | None:
    """``<part>_meta_data.csv`` directly in ``src`` or in its part folder (``Single-source/``), or ``None``."""
    for folder in (src, src / PART_FOLDERS[part]):
        if (folder / f"{part}_meta_data.csv").is_file():
            return folder / f"{part}_meta_data.csv"
    return None


def read_meta(path: Path, part: str) -> dict[str, ClipRow]:
    """The clips of a meta CSV by name.

    The clip name is the ``name`` column (the first column where there is none: the release's own loaders index
    it by position); ``split`` is read by name, and for S4 ``category`` too (it is a folder of every path).

    Raises:
        CrabzooError: a CSV without those columns.
    """
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        rows = list(csv.reader(fh))
    header = [c.strip() for c in rows[0]] if rows else []
    needed = ["split"] + (["category"] if part == "s4" else [])
    lacking = [c for c in needed if c not in header]
    if not header or lacking:
        raise CrabzooError(
            f"{path} does not have the official columns (missing {', '.join(lacking) or 'a header'}; "
            f"expected name,{'start,category,' if part == 's4' else ''}split); restore it from the AVSBench release"
        )
    at_name = header.index("name") if "name" in header else 0
    at_split, at_cat = header.index("split"), header.index("category") if part == "s4" else -1
    clips: dict[str, ClipRow] = {}
    for row in rows[1:]:
        if not row or not row[at_name].strip():
            continue
        cells = [c.strip() for c in row] + [""] * len(header)
        clips[cells[at_name]] = ClipRow(cells[at_name], cells[at_split], cells[at_cat] if at_cat >= 0 else "")
    return clips


@dataclass
class AVSBenchRelease(Preparer):
    """s4 / ms3 from the original AVSBench release's files.

    Attributes:
        task: ``s4`` or ``ms3`` (also the release's part name).
        dataset: Source dataset name.
        gaps: Known gaps, by name.
    """

    task: str
    dataset: str
    gaps: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._csv: Path | None = None
        self._clips: dict[str, ClipRow] = {}

    @property
    def data(self) -> Path:
        """The release's ``<part>_data`` folder (next to the meta CSV)."""
        assert self._csv is not None, "check_layout or scan first"
        return self._csv.parent / f"{self.task}_data"

    def missing_layout(self, src: Path) -> list[str]:
        self._csv = meta_csv(src, self.task)
        if self._csv is None:
            return [f"{self.task}_meta_data.csv (in --src or {PART_FOLDERS[self.task]}/)"]
        if not any((self.data / f).is_dir() for f in ("visual_frames", "raw_videos")):
            return [f"{self.data}/visual_frames or {self.data}/raw_videos"]
        return []

    def scan(self, src: Path) -> None:
        self._csv = meta_csv(src, self.task)
        if self._csv is None:
            raise CrabzooError(f"--src {src} holds no {self.task}_meta_data.csv")
        self._clips = read_meta(self._csv, self.task)

    # --------------------------------------------------------------------------------- the release's paths
    def _folder(self, kind: str, row: ClipRow, per_split: bool = True) -> Path:
        base = self.data / kind
        if per_split:
            base = base / row.split
        return base / row.category if self.task == "s4" else base

    def frame_file(self, row: ClipRow, k: int) -> Path:
        """Frame ``k`` (0-based, as the records count) of a clip."""
        if self.task == "s4":
            return self._folder("visual_frames", row) / row.name / f"{row.name}_{k + 1}.png"
        return self.data / "visual_frames" / row.name / f"{row.name}.mp4_{k + 1}.png"

    def mask_file(self, row: ClipRow, k: int) -> Path:
        """Ground-truth mask of frame ``k`` (0-based)."""
        return self._folder("gt_masks", row) / row.name / f"{row.name}_{k + 1}.png"

    def audio_file(self, row: ClipRow) -> Path:
        """The clip's 16 kHz WAV."""
        return self._folder("audio_wav", row) / f"{row.name}.wav"

    def video_file(self, row: ClipRow) -> Path:
        """The clip's raw (5-s, trimmed) video."""
        return self._folder("raw_videos", row, per_split=self.task == "s4") / f"{row.name}.mp4"

    # --------------------------------------------------------------------------------- records
    def _clip(self, record: dict[str, Any], uid: str) -> ClipRow | None:
        """The CSV row of a record: its ``vid``, else its clip folder, else that folder without ``_<start>_<end>``."""
        names = [str(record.get("vid") or ""), uid]
        if (match := _SEGMENT.match(uid)) is not None:
            names.append(match.group("name"))
        return next((self._clips[n] for n in names if n in self._clips), None)

    def plan(self, record: dict[str, Any], split: str) -> RecordPlan:
        out = RecordPlan()
        image = str(record.get("visual_path") or record.get("image_path") or "")
        path = PurePosixPath(image)
        parts = path.parts
        if len(parts) != 5 or parts[0] != "AVS" or parts[3] != "frames" or not path.stem.isdigit():
            out.missing.append(f"image {image!r}: not an AVSBench frame path (AVS/<part>/<clip>/frames/<k>.jpg)")
            return out
        uid, k = parts[2], int(path.stem)
        listed = f"{self.task}_meta_data.csv"
        row = self._clip(record, uid)
        if row is None:
            vid = record.get("vid")
            line = f"clip {uid!r}{f' (vid {vid!r})' if vid else ''} is not listed in {listed}"
            out.missing += [f"image {image!r}: {line}", f"audio {record.get('audio_path', '')!r}: {line}"]
            return out
        video = self.video_file(row)
        frame = self.frame_file(row, k)
        if frame.is_file():
            out.jobs.append(MediaJob(image, frame, "link"))
        elif video.is_file():
            out.jobs.append(MediaJob(image, video, "frame", start=float(k)))
        else:
            out.missing.append(f"image {image!r}: no file {frame} and no raw video {video} "
                               f"(clip {row.name!r} is listed in {listed})")
        audio_value = str(record.get("audio_path", ""))
        wav = self.audio_file(row)
        if wav.is_file():
            out.jobs.append(MediaJob(audio_value, wav, "link"))
        elif video.is_file():
            out.jobs.append(MediaJob(audio_value, video, "audio"))
        else:
            out.missing.append(f"audio {audio_value!r}: no file {wav} and no raw video {video} "
                               f"(clip {row.name!r} is listed in {listed})")
        mask = mask_of(self.task, image, None)
        source = self.mask_file(row, k)
        if mask is not None and source.is_file():
            out.jobs.append(MediaJob(mask, source, "link"))
        elif mask is not None and split == "test":
            out.missing.append(f"mask {mask!r}: no file {source} (the evaluation needs the test masks)")
        return out


class AVSBenchLayouts(Preparer):
    """s4 / ms3 from whichever AVSBench release ``--src`` holds: the original one or AVSBench-semantic.

    A ``<part>_meta_data.csv`` (in ``--src`` or its ``Single-source/`` / ``Multi-sources/`` folder) selects the
    original release; otherwise AVSBench-semantic's layout is expected. Before the choice, :attr:`dataset` and
    :attr:`gaps` name both.
    """

    def __init__(self, semantic: FrameSource, original: AVSBenchRelease) -> None:
        self.task = semantic.task
        self.semantic, self.original = semantic, original
        self.chosen: Preparer | None = None

    @property
    def dataset(self) -> str:  # type: ignore[override]
        return self.chosen.dataset if self.chosen else f"{self.semantic.dataset} or {self.original.dataset}"

    @property
    def gaps(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.chosen.gaps if self.chosen else self.semantic.gaps + self.original.gaps

    def check_layout(self, src: Path) -> None:
        """Choose the layout, then check it.

        Raises:
            CrabzooError: ``src`` holds neither layout (the message names both), or the chosen one incompletely.
        """
        if not src.is_dir():
            self.semantic.check_layout(src)  # names the folder that is not there
        if meta_csv(src, self.task) is not None:
            self.chosen = self.original
        elif any((src / p).exists() for p in self.semantic.required + ("metadata.csv",)):
            self.chosen = self.semantic
        else:
            part = PART_FOLDERS[self.task]
            raise CrabzooError(
                f"--src {src} holds neither AVSBench layout that `{self.task}` is prepared from: AVSBench-semantic "
                f"({', '.join(self.semantic.required)}/, metadata.csv) nor the original AVSBench release "
                f"({self.task}_meta_data.csv and {self.task}_data/, in --src or {part}/); see "
                f"docs/preparing-datasets.md#{self.task}"
            )
        self.chosen.check_layout(src)

    def scan(self, src: Path) -> None:
        assert self.chosen is not None, "check_layout first"
        self.chosen.scan(src)

    def plan(self, record: dict[str, Any], split: str) -> RecordPlan:
        assert self.chosen is not None, "check_layout first"
        return self.chosen.plan(record, split)
