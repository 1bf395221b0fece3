"""The AV-UIE v2 reader: ``<root>/<task>/<split>.json`` -> :class:`~crabzoo.data.schema.Sample` objects.

The same code reads the real release and AVSynth (which writes the release's layout). Each record goes through
``crabzoo.tasks.get_task(task).sample_from_record``; a malformed record is skipped and counted (file, index,
reason), or, with ``strict=True``, the whole read fails with one error listing the bad records.
:func:`check_media` decodes every media file a sample refers to (and the ground-truth masks of the segmentation
tasks), which ``crabzoo data check`` and the data module use to find corrupt or missing media.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crabzoo.data.schema import Sample
from crabzoo.errors import CrabzooError, MalformedRecordError

log = logging.getLogger(__name__)

RELEASE_DIR = "AVUIE_2"
"""Name of the release folder that may sit between ``root`` and the task folders."""

AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".m4a", ".aac", ".ogg")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MAX_LISTED = 20
"""Problems listed in one error message (the rest are counted)."""


@dataclass
class ReadResult:
    """Samples read from one annotation file, and the records that were skipped.

    Attributes:
        task: Task folder.
        split: Annotation file stem.
        path: The annotation file.
        samples: Samples in file order.
        skipped: ``(file, index, reason)`` of every malformed record.
        missing: True when the annotation file does not exist (train-only tasks have no ``test.json``).
    """

    task: str
    split: str
    path: Path
    samples: list[Sample] = field(default_factory=list)
    skipped: list[tuple[str, int, str]] = field(default_factory=list)
    missing: bool = False


def resolve_root(root: str | Path) -> Path:
    """The folder holding the task folders: ``root/AVUIE_2`` when it exists, else ``root``.

    Raises:
        CrabzooError: ``root`` does not exist.
    """
    root = Path(root).expanduser()
    if (root / RELEASE_DIR).is_dir():
        return root / RELEASE_DIR
    if not root.is_dir():
        raise CrabzooError(
            f"data directory {root} does not exist; generate AVSynth there with `crabzoo data synth --out {root}` "
            "or point it at an AV-UIE v2 release (the folder holding AVUIE_2/)"
        )
    return root


def list_tasks(root: str | Path) -> list[str]:
    """Task folders present under ``root`` that crabzoo knows, sorted."""
    from crabzoo.tasks import TASKS

    base = resolve_root(root)
    return sorted(p.name for p in base.iterdir() if p.is_dir() and p.name in TASKS)


def _format_problems(header: str, problems: Sequence[str]) -> str:
    shown = "; ".join(problems[:MAX_LISTED])
    more = f"; ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return f"{header}: {shown}{more}"


def read_split(root: str | Path, task: str, split: str, strict: bool = False) -> ReadResult:
    """Read ``<root>/<task>/<split>.json``.

    Args:
        root: Folder holding the task folders, or a parent holding ``AVUIE_2/``.
        task: Task folder name (``ave``, ``s4``, ..., ``emotion``).
        split: Annotation file stem (``train`` or ``test``).
        strict: Raise on malformed records instead of skipping and counting them.

    Returns:
        A :class:`ReadResult`; a missing annotation file gives an empty result with ``missing=True`` (the release
        ships no ``test.json`` for its train-only tasks), or an error when the task folder itself is missing.

    Raises:
        CrabzooError: missing data directory or task folder, an annotation file that is not a JSON array, or
            (strict) malformed records.
    """
    from crabzoo.tasks import TASKS, get_task

    if task not in TASKS:
        raise CrabzooError(f"unknown task {task!r}; known tasks: {sorted(TASKS)}")
    base = resolve_root(root)
    task_dir = base / task
    if not task_dir.is_dir():
        raise CrabzooError(
            f"task folder {task_dir} not found; generate it with `crabzoo data synth --out {base.parent if base.name == RELEASE_DIR else base} "
            f"--tasks {task}` or remove {task!r} from the task list"
        )
    path = task_dir / f"{split}.json"
    result = ReadResult(task=task, split=split, path=path)
    if not path.is_file():
        if strict:
            raise CrabzooError(f"annotation file {path} not found (task {task!r} has no {split!r} split here)")
        log.warning("no %s; task %s is skipped for split %s", path, task, split)
        result.missing = True
        return result
    try:
        records: Any = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CrabzooError(f"annotation file {path} is not valid JSON ({err}); regenerate or restore it") from None
    if not isinstance(records, list):
        raise CrabzooError(f"annotation file {path} must hold a JSON array of records, got {type(records).__name__}")
    spec = get_task(task)
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            result.skipped.append((str(path), index, f"record is a {type(record).__name__}, not an object"))
            continue
        try:
            result.samples.append(spec.sample_from_record(record, index, split, task_dir))
        except MalformedRecordError as err:
            result.skipped.append((str(path), index, err.reason))
    if strict and result.skipped:
        problems = [f"[{i}] {reason}" for _, i, reason in result.skipped]
        raise CrabzooError(_format_problems(f"{len(result.skipped)} malformed record(s) in {path}", problems))
    if result.skipped:
        log.warning("%s: skipped %d malformed record(s)", path, len(result.skipped))
    return result


def read_tasks(root: str | Path, tasks: Sequence[str] | None, split: str, strict: bool = False) -> dict[str, ReadResult]:
    """:func:`read_split` for several tasks (``None``: every known task folder under ``root``)."""
    names = list(tasks) if tasks is not None else list_tasks(root)
    return {task: read_split(root, task, split, strict=strict) for task in names}


def mask_paths(sample: Sample) -> list[Path]:
    """Ground-truth mask files of a segmentation sample (s4/ms3: ``labels_rgb``; ref_avs: ``gt_mask``)."""
    if not sample.video:
        return []
    image = Path(sample.video[0])
    if sample.task in ("s4", "ms3"):
        return [Path(str(image).replace("/frames/", "/labels_rgb/")).with_suffix(".png")]
    if sample.task == "ref_avs":
        fid = sample.record.get("fid")
        parts = image.parts
        if fid is None or "media" not in parts:
            return []
        at = len(parts) - 1 - parts[::-1].index("media")
        clip = parts[at + 1]
        base = Path(*parts[:at])
        return [base / "gt_mask" / clip / f"fid_{fid}" / f"0000{image.stem}.png"]
    return []


def _check_file(path: Path, loader: Any, kind: str) -> None:
    suffix = path.suffix.lower()
    if kind == "mask":
        loader.read_mask(path)
    elif suffix in IMAGE_SUFFIXES:
        loader.read_image(path)
    elif kind == "audio" or suffix in AUDIO_SUFFIXES:
        loader.read_audio(path)
    else:
        loader.read_video_frames(path, indices=[0])


def check_media(samples: Sequence[Sample], loader: Any = None, masks: bool = True) -> list[str]:
    """Decode every media file (and ground-truth mask) of ``samples``; returns one problem line per failure.

    Files shared by several samples are decoded once.

    Args:
        samples: Samples from :func:`read_split`.
        loader: A :class:`~crabzoo.data.media.MediaLoader` (default: a new one at 16 kHz).
        masks: Also decode the segmentation ground-truth masks.

    Returns:
        ``"<sample id>: <path>: <reason>"`` lines, empty when everything decodes.
    """
    from crabzoo.data.media import MediaError, MediaLoader

    loader = loader or MediaLoader()
    seen: dict[Path, str | None] = {}
    problems: list[str] = []
    for sample in samples:
        files = [(Path(p), "visual") for p in sample.video] + [(Path(p), "audio") for p in sample.audio]
        if masks:
            files += [(p, "mask") for p in mask_paths(sample)]
        for path, kind in files:
            if path not in seen:
                try:
                    _check_file(path, loader, kind)
                    seen[path] = None
                except MediaError as err:
                    seen[path] = err.reason
            if seen[path] is not None:
                problems.append(f"{sample.id}: {path}: {seen[path]}")
    return problems
