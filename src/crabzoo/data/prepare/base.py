"""The preparer contract: which raw layout a source dataset has, where each record's media come from, what to write.

A :class:`Preparer` turns one AV-UIE v2 task folder's annotations (``train.json``/``test.json`` of the release)
plus the raw source dataset into the media files those records name. It never decodes or writes anything
itself: :meth:`Preparer.plan` returns :class:`MediaJob` objects (link, audio extraction, video re-encode or cut)
and the reasons a record cannot be served; the engine (:mod:`crabzoo.data.prepare.engine`) runs the jobs.
"""

from __future__ import annotations

import csv
import glob
import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from crabzoo.errors import CrabzooError


@dataclass(frozen=True)
class MediaJob:
    """One output file and how to make it.

    Attributes:
        dest: Path relative to the task folder, exactly as the records name it (``video/x.mp4``).
        source: The raw file.
        op: ``link`` (same bytes), ``audio`` (decode, resample to 16 kHz mono, cut), ``video`` (re-encode, cut) or
            ``frame`` (one frame of a video, written as an image: :func:`~crabzoo.data.prepare.ops.extract_frames`).
        start: Cut start in seconds of the source (``None``: from the beginning); for ``frame``, the second whose
            frame is taken.
        end: Cut end in seconds (``None``: to the end).
    """

    dest: str
    source: Path
    op: str
    start: float | None = None
    end: float | None = None


@dataclass
class RecordPlan:
    """What one record needs: the jobs that produce its media, and why any of its media cannot be produced.

    Attributes:
        jobs: Output files of the record (shared files appear in several records' plans; the engine runs each once).
        missing: One line per media file that has no source (``video 'x.mp4': no file ... in <src>``).
    """

    jobs: list[MediaJob] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


_NUMBER = re.compile(r"_0*(\d+)(?=_|$)")


def normalise_id(stem: str) -> str:
    """A clip id with the zero padding of its ``_<number>`` groups removed (``abc_000010`` -> ``abc_10``)."""
    return _NUMBER.sub(lambda m: f"_{m.group(1)}", stem)


@dataclass(frozen=True)
class Catalogue:
    """The official list of clip ids of a source dataset, read from its annotation files.

    A record whose clip is absent from the raw folder is reported either as *not in the catalogue* (the release
    names a clip the source dataset does not list) or as *listed but missing* (a dead download).

    Attributes:
        pattern: Glob under ``--src`` of the annotation files (``Annotations.txt``, ``**/AVVP_*.csv``).
        reader: ``csv`` (delimiter detected; ``&`` for AVE), ``csv-noheader``, ``list`` (the file stem of each
            line's first word, as UCF101's split lists), ``json-list`` or ``json-keys``.
        template: Format string of one id from a row (``{VideoID}``, ``dia{Dialogue_ID}_utt{Utterance_ID}``;
            ``{0}_{1}`` by column position for ``csv-noheader``); for ``json-keys`` the key holding the mapping.
        required: A missing annotation file is a layout error (otherwise the report just has no catalogue).
    """

    pattern: str
    reader: str
    template: str
    required: bool = True

    def files(self, src: Path) -> list[Path]:
        """The annotation files found under ``src``."""
        return sorted(Path(p) for p in glob.glob(str(src / self.pattern), recursive=True))

    def read(self, src: Path) -> set[str]:
        """Every listed id, normalised with :func:`normalise_id`.

        Raises:
            CrabzooError: an annotation file without the expected columns.
        """
        ids: set[str] = set()
        for path in self.files(src):
            text = path.read_text(encoding="utf-8", errors="replace")
            try:
                ids.update(normalise_id(i) for i in self._ids(text))
            except (KeyError, IndexError, ValueError, json.JSONDecodeError, AttributeError, TypeError) as err:
                raise CrabzooError(
                    f"{path} does not have the official format ({type(err).__name__}: {err}); expected ids as "
                    f"{self.template!r} ({self.reader}); restore the file from the dataset's release"
                ) from None
        return ids

    def _ids(self, text: str) -> list[str]:
        if self.reader == "csv":
            first = text.splitlines()[0] if text else ""
            delimiter = "&" if "&" in first else "\t" if "\t" in first else ","
            rows = csv.DictReader(text.splitlines(), delimiter=delimiter)
            return [self.template.format(**{k.strip(): (v or "").strip() for k, v in row.items() if k}) for row in rows]
        if self.reader == "csv-noheader":
            return [self.template.format(*[c.strip() for c in row]) for row in csv.reader(text.splitlines()) if row]
        if self.reader == "list":
            return [PurePosixPath(line.split()[0]).stem for line in text.splitlines() if line.strip()]
        data: Any = json.loads(text)
        if self.reader == "json-list":
            return [self.template.format(**row) for row in data]
        if self.reader == "json-keys":
            return list(data[self.template].keys())
        raise ValueError(f"unknown catalogue reader {self.reader}")


class Preparer(ABC):
    """Prepares one AV-UIE v2 task folder from its source dataset.

    Attributes:
        task: Task folder id (``ave``).
        dataset: Source dataset name, as the docs and the report name it (``AVE``).
        required: Paths under ``--src`` that the official layout always has (checked before anything runs).
        catalogue: The dataset's official id list, or ``None``.
        gaps: Known gaps of the source dataset, written into the report by name.
    """

    task: str
    dataset: str
    required: tuple[str, ...] = ()
    catalogue: Catalogue | None = None
    gaps: tuple[str, ...] = ()

    def check_layout(self, src: Path) -> None:
        """Raise one error naming every expected path missing under ``src``.

        Raises:
            CrabzooError: ``src`` is not a folder or lacks the official layout.
        """
        if not src.is_dir():
            raise CrabzooError(f"--src {src} is not a folder; point it at the extracted {self.dataset} release")
        missing = [p for p in self.required if not (src / p).exists()]
        if self.catalogue is not None and self.catalogue.required and not self.catalogue.files(src):
            missing.append(self.catalogue.pattern)
        missing += self.missing_layout(src)
        if missing:
            raise CrabzooError(
                f"--src {src} does not have the {self.dataset} layout that `{self.task}` is prepared from: "
                f"missing {', '.join(missing)}; see docs/preparing-datasets.md#{self.task}"
            )

    def missing_layout(self, src: Path) -> list[str]:
        """Further layout checks of a subclass (descriptions of what is missing)."""
        return []

    @abstractmethod
    def scan(self, src: Path) -> None:
        """Index the raw files under ``src`` (called once, after :meth:`check_layout`)."""

    @abstractmethod
    def plan(self, record: dict[str, Any], split: str) -> RecordPlan:
        """The media jobs of one annotation record of ``split``."""
