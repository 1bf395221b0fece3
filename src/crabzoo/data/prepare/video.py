"""The preparer of the video+audio tasks, driven by layout facts (:class:`VideoSource`), not code per dataset.

A record's clip is found by its id: the stem of the record's video name (or of a named record field, e.g. LLP's
``filename``), with zero padding of numbers ignored (``abc_000010`` matches ``abc_10``). The video is linked when
the raw file already has the extension the record names, otherwise re-encoded (CREMA-D's ``.flv`` -> ``.mp4``).
The audio is extracted (16 kHz mono, ``.wav`` or ``.mp3`` as the record names it) from the raw audio file where
the dataset ships one, else from the raw video. When only the full-length video is there and the clip id carries
its segment (``<id>_<start>_<end>`` as LLP, or ``<id>_<start>`` of a 10-s clip as VGGSound and Kinetics), the
segment is cut out of the full video.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from crabzoo.data.prepare.base import Catalogue, MediaJob, Preparer, RecordPlan, normalise_id

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".flv", ".mov")
AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".m4a")

_SEGMENT = re.compile(r"^(?P<id>.+?)_(?P<start>\d+(?:\.\d+)?)(?:_(?P<end>\d+(?:\.\d+)?))?$")


def _scan(src: Path, folders: tuple[str, ...], suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Files with ``suffixes`` below ``src/<folder>`` (recursively), by normalised stem; the first folder wins.

    A clip named ``<id>_<start>_<end>`` is also found as ``<id>_<start>``.
    """
    index: dict[str, Path] = {}
    for folder in folders:
        base = src / folder
        if not base.is_dir():
            continue
        for dirpath, _, names in sorted(os.walk(base, followlinks=True)):
            for name in sorted(names):
                path = Path(dirpath) / name
                if name.startswith(".") or path.suffix.lower() not in suffixes:
                    continue
                key = normalise_id(path.stem)
                index.setdefault(key, path)
                match = _SEGMENT.match(key)
                if match and match.group("end"):  # Kinetics' <id>_<start>_<end> also answers to <id>_<start>
                    index.setdefault(f"{match.group('id')}_{match.group('start')}", path)
    return index


@dataclass
class VideoSource(Preparer):
    """A video+audio source dataset described by where its files sit.

    Attributes:
        task: Task folder id.
        dataset: Source dataset name.
        video_dirs: Folders under ``--src`` holding the raw videos, by the first folder of the record's value
            (``""``: any value; MELD's ``train/`` values map to ``train_splits`` and ``dev_splits_complete``).
        audio_dirs: Folders holding raw audio files (same keys), or empty to extract the audio from the video.
        required: Paths under ``--src`` that must exist.
        catalogue: The official id list.
        gaps: Known gaps, by name.
        key_field: Record field holding the clip id (``None``: the stem of the record's video name).
        segment_seconds: Length of a clip named ``<id>_<start>``; ``None``: the names carry no segment, never cut.
        video_fields: Record fields naming videos (relative to ``video/``).
        audio_fields: Record fields naming audio files (relative to ``audio/``).
    """

    task: str
    dataset: str
    video_dirs: dict[str, tuple[str, ...]]
    audio_dirs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    catalogue: Catalogue | None = None
    gaps: tuple[str, ...] = ()
    key_field: str | None = None
    segment_seconds: float | None = None
    video_fields: tuple[str, ...] = ("video_path",)
    audio_fields: tuple[str, ...] = ("audio_path",)

    def __post_init__(self) -> None:
        self._videos: dict[str, dict[str, Path]] = {}
        self._audios: dict[str, dict[str, Path]] = {}
        self._listed: set[str] | None = None
        self._src = Path(".")

    def missing_layout(self, src: Path) -> list[str]:
        folders = sorted({f for group in self.video_dirs.values() for f in group})
        if not any((src / f).is_dir() for f in folders):
            return [f"a video folder ({' or '.join(folders)})"]
        return []

    def scan(self, src: Path) -> None:
        self._src = src
        self._videos = {key: _scan(src, dirs, VIDEO_SUFFIXES) for key, dirs in self.video_dirs.items()}
        self._audios = {key: _scan(src, dirs, AUDIO_SUFFIXES) for key, dirs in self.audio_dirs.items()}
        self._listed = self.catalogue.read(src) if self.catalogue is not None else None

    @staticmethod
    def _group(value: str, table: dict[str, Any]) -> str:
        first = PurePosixPath(value).parts[0] if len(PurePosixPath(value).parts) > 1 else ""
        return first if first in table else ""

    def _find(self, index: dict[str, Path], clip: str) -> tuple[Path | None, float | None, float | None]:
        """The raw file of ``clip``, or the full video it is cut from (with the cut)."""
        key = normalise_id(clip)
        if key in index:
            return index[key], None, None
        match = _SEGMENT.match(key)
        if self.segment_seconds is not None and match and match.group("id") in index:
            start = float(match.group("start"))
            end = float(match.group("end")) if match.group("end") else start + self.segment_seconds
            return index[match.group("id")], start, end
        return None, None, None

    def _clip_id(self, record: dict[str, Any], value: str) -> str:
        if self.key_field is not None and len(self.video_fields) == 1 and record.get(self.key_field) not in (None, ""):
            return str(record[self.key_field])
        return PurePosixPath(value).stem

    def _absent(self, what: str, value: str, clip: str, folders: tuple[str, ...]) -> str:
        where = ", ".join(str(self._src / f) for f in folders)
        line = f"{what} {value!r}: no raw file for clip {clip!r} under {where}"
        if self._listed is not None and self.catalogue is not None:
            listed = normalise_id(clip) in self._listed or (
                (m := _SEGMENT.match(normalise_id(clip))) is not None and m.group("id") in self._listed)
            line += (f" (listed in {self.catalogue.pattern}: a clip missing from the download)" if listed
                     else f" (not listed in {self.catalogue.pattern})")
        return line

    def plan(self, record: dict[str, Any], split: str) -> RecordPlan:
        out = RecordPlan()
        videos: dict[str, tuple[Path, float | None, float | None]] = {}
        for name in self.video_fields:
            value = str(record.get(name, ""))
            group = self._group(value, self.video_dirs)
            clip = self._clip_id(record, value)
            source, start, end = self._find(self._videos.get(group, {}), clip)
            if source is None:
                out.missing.append(self._absent("video", value, clip, self.video_dirs[group]))
                continue
            videos[PurePosixPath(value).stem] = (source, start, end)
            same = source.suffix.lower() == PurePosixPath(value).suffix.lower() and start is None
            out.jobs.append(MediaJob(f"video/{value}", source, "link" if same else "video", start, end))
        for name in self.audio_fields:
            value = str(record.get(name, ""))
            clip = self._clip_id(record, value)
            if self.audio_dirs:
                group = self._group(value, self.audio_dirs)
                source, start, end = self._find(self._audios.get(group, {}), clip)
                folders = self.audio_dirs[group]
            else:  # from the video of the same clip (v2a: the audio clips are other clips' soundtracks)
                group = self._group(value, self.video_dirs)
                found = videos.get(PurePosixPath(value).stem)
                source, start, end = found if found else self._find(self._videos.get(group, {}), clip)
                folders = self.video_dirs[group]
            if source is None:
                out.missing.append(self._absent("audio", value, clip, folders))
                continue
            out.jobs.append(MediaJob(f"audio/{value}", source, "audio", start, end))
        return out
