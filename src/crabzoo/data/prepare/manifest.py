"""The manifest of a prepared task folder: every media file written, with size, sha256, duration, decodable.

``<task>/prepare_manifest.json`` lists the files relative to the task folder. ``crabzoo data prepare`` reads it
back to resume (a file whose current sha256 matches its entry is not produced again) and ``crabzoo data check``
verifies a folder against it (``--deep`` also decodes every file).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from crabzoo.errors import CrabzooError

MANIFEST = "prepare_manifest.json"
"""Manifest file name inside each prepared task folder."""

REPORT = "prepare_report.json"
"""Report file name (records with missing or unreadable media, known gaps) inside each prepared task folder."""

VERSION = 1


@dataclass
class FileEntry:
    """One produced media file.

    Attributes:
        path: Path relative to the task folder (``video/abc.mp4``, ``AVS/v1s/<clip>/frames/0.jpg``).
        size: Bytes.
        sha256: Hex digest of the content.
        duration: Seconds (``None`` for images).
        decodable: The file decoded after it was written.
        source: The raw file it was made from.
        op: ``link``, ``audio`` (extraction), ``video`` (re-encode or cut) or ``frame`` (a frame taken from a video).
    """

    path: str
    size: int
    sha256: str
    duration: float | None
    decodable: bool
    source: str
    op: str


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(task_dir: Path) -> dict[str, FileEntry]:
    """Entries of ``task_dir/prepare_manifest.json`` by relative path (empty when there is none).

    Raises:
        CrabzooError: a manifest that is not valid JSON.
    """
    path = task_dir / MANIFEST
    if not path.is_file():
        return {}
    try:
        payload: Any = json.loads(path.read_text(encoding="utf-8"))
        return {row["path"]: FileEntry(**row) for row in payload["files"]}
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CrabzooError(f"manifest {path} is damaged ({err}); delete it and run `crabzoo data prepare` again") from None


def manifest_text(task: str, entries: dict[str, FileEntry], meta: dict[str, Any]) -> str:
    """The manifest as JSON text (files sorted by path, so two runs over the same input write the same text)."""
    files = [asdict(entries[key]) for key in sorted(entries)]
    payload = {"version": VERSION, "task": task, **meta, "files": files}
    return json.dumps(payload, indent=1, ensure_ascii=False) + "\n"


def check_manifest(task_dir: Path, deep: bool = False) -> tuple[int, list[str]]:
    """Verify the files of ``task_dir`` against its manifest.

    Args:
        task_dir: A prepared task folder.
        deep: Also decode every file (all frames of every video).

    Returns:
        ``(files checked, problems)``; a problem is ``"<path>: <what is wrong>"``.
    """
    from crabzoo.data.media import MediaError
    from crabzoo.data.prepare.ops import probe

    entries = read_manifest(task_dir)
    problems: list[str] = []
    for rel, entry in sorted(entries.items()):
        path = task_dir / rel
        if not path.is_file():
            problems.append(f"{path}: listed in {MANIFEST} but missing")
            continue
        size = path.stat().st_size
        if size != entry.size:
            problems.append(f"{path}: size {size} bytes, the manifest says {entry.size}")
            continue
        if sha256(path) != entry.sha256:
            problems.append(f"{path}: sha256 differs from the manifest (the file changed after it was prepared)")
            continue
        if deep:
            try:
                probe(path, deep=True)
            except MediaError as err:
                problems.append(f"{path}: does not decode: {err.reason}")
    return len(entries), problems
