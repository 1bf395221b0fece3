"""Running a preparer: plan every record, produce each media file once in parallel, write manifest and report.

The output is ``<out>/AVUIE_2/<task>/`` holding the release's ``train.json``/``test.json`` (byte for byte, or
without the incomplete records with ``drop_incomplete``), the media the records name, ``prepare_manifest.json``
and ``prepare_report.json``. A second run reuses every file whose content still matches its manifest entry
(resumable); it rewrites the same manifest and report (idempotent). Files are produced under temporary names
and renamed into place, so an interrupted run leaves only complete files.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import sys
import time
import zipfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from crabzoo.data.prepare.base import MediaJob, Preparer, RecordPlan
from crabzoo.data.prepare.manifest import MANIFEST, REPORT, FileEntry, manifest_text, read_manifest, sha256
from crabzoo.errors import CrabzooError

SPLITS = ("train", "test")

PARTIAL = re.compile(r"^\..+\.[^.]+\.tmp(\.[A-Za-z0-9]+)?$")
"""Names of the temporary files of :func:`crabzoo.data.prepare.ops.atomic_target` and of the atomic text writes."""

CHECKPOINT_SECONDS = 10.0
"""How often the manifest is saved while files are produced, so that an interrupted run resumes."""


@dataclass
class Problem:
    """A record whose media are missing or unreadable.

    Attributes:
        split: Annotation file stem.
        index: Position of the record in that file.
        kind: ``missing`` (no raw file) or ``unreadable`` (the raw file does not decode).
        detail: Which file and why.
    """

    split: str
    index: int
    kind: str
    detail: str

    def line(self) -> str:
        """``train[3] missing: video 'x.mp4': ...``."""
        return f"{self.split}[{self.index}] {self.kind}: {self.detail}"


@dataclass
class PrepareResult:
    """Summary of one ``crabzoo data prepare`` run.

    Attributes:
        task: Task folder id.
        dataset: Source dataset name.
        task_dir: The prepared task folder.
        records: Records per split in the release's annotation files.
        complete: Records per split whose media were all produced.
        files: Media files in the manifest.
        written: Files produced by this run.
        reused: Files kept from an earlier run (content matched the manifest).
        problems: Records with missing or unreadable media.
        gaps: Known gaps of the source dataset.
        seconds: Wall-clock time.
    """

    task: str
    dataset: str
    task_dir: Path
    records: dict[str, int] = field(default_factory=dict)
    complete: dict[str, int] = field(default_factory=dict)
    files: int = 0
    written: int = 0
    reused: int = 0
    problems: list[Problem] = field(default_factory=list)
    gaps: tuple[str, ...] = ()
    seconds: float = 0.0


def read_annotations(annotations: Path, task: str) -> tuple[str, dict[str, str]]:
    """The release's annotation texts of ``task`` by split, and where they were read.

    ``annotations`` is the release zip (``AVUIE_2.zip``), its extracted ``AVUIE_2`` folder, or a folder holding
    that one. Train-only tasks have no ``test.json``.

    Raises:
        CrabzooError: no ``<task>/train.json`` there.
    """
    hint = ("point --annotations at the AV-UIE v2 release (AVUIE_2.zip, its extracted AVUIE_2 folder, or the "
            "folder holding it)")
    if annotations.is_file() and annotations.suffix == ".zip":
        with zipfile.ZipFile(annotations) as archive:
            names = {Path(n).as_posix(): n for n in archive.namelist()}
            for prefix in (f"AVUIE_2/{task}", task):
                if f"{prefix}/train.json" in names:
                    return f"{annotations}:{prefix}", {
                        split: archive.read(names[f"{prefix}/{split}.json"]).decode("utf-8")
                        for split in SPLITS if f"{prefix}/{split}.json" in names}
        raise CrabzooError(f"--annotations {annotations} holds no {task}/train.json; {hint}")
    for base in (annotations / "AVUIE_2" / task, annotations / task):
        if (base / "train.json").is_file():
            return str(base), {split: (base / f"{split}.json").read_text(encoding="utf-8")
                               for split in SPLITS if (base / f"{split}.json").is_file()}
    raise CrabzooError(f"--annotations {annotations} has no {task}/train.json; {hint}")


def _parse_records(where: str, text: str) -> list[dict[str, Any]]:
    try:
        records = json.loads(text)
    except json.JSONDecodeError as err:
        raise CrabzooError(f"annotation file {where} is not valid JSON ({err}); extract it again from the release") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise CrabzooError(f"annotation file {where} must hold a JSON array of records (objects)")
    return records


def produce(job: MediaJob, task_dir: Path, copy: bool) -> tuple[str, FileEntry | None, str | None]:
    """Make one output file and probe it; returns ``(dest, entry, None)`` or ``(dest, None, reason)``.

    A failed job leaves nothing at its destination (no stale or partial file).
    """
    from crabzoo.data.media import MediaError
    from crabzoo.data.prepare import ops

    dest = task_dir / job.dest
    try:
        if job.op == "link":
            duration = ops.probe(job.source)  # a raw file that does not decode is not linked
            ops.link(job.source, dest, copy=copy)
        else:
            if job.op == "audio":
                ops.extract_audio(job.source, dest, job.start, job.end)
            elif job.op == "frame":
                ops.extract_frames(job.source, [dest], [int(job.start or 0)])
            else:
                ops.transcode_video(job.source, dest, job.start, job.end)
            duration = ops.probe(dest)
    except MediaError as err:
        dest.unlink(missing_ok=True)
        return job.dest, None, f"{err.path}: {err.reason}"
    entry = FileEntry(path=job.dest, size=dest.stat().st_size, sha256=sha256(dest),
                      duration=None if duration is None else round(duration, 3), decodable=True,
                      source=str(job.source), op=job.op)
    return job.dest, entry, None


def _produce_star(args: tuple[MediaJob, Path, bool]) -> tuple[str, FileEntry | None, str | None]:
    return produce(*args)


def _progress(items: Iterable[Any], total: int, enabled: bool, task: str) -> Iterator[Any]:
    if not enabled:
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, total=total, desc=f"prepare {task}", unit="file", file=sys.stderr, dynamic_ncols=True)


def _run(jobs: list[MediaJob], task_dir: Path, copy: bool, workers: int, progress: bool, task: str) -> Iterator[Any]:
    args = [(job, task_dir, copy) for job in jobs]
    if workers <= 1 or len(jobs) <= 1:
        yield from _progress(map(_produce_star, args), len(args), progress, task)
        return
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
        yield from _progress(pool.map(_produce_star, args, chunksize=4), len(args), progress, task)


def remove_partial_files(task_dir: Path) -> int:
    """Delete the temporary files an interrupted run left in ``task_dir`` (``.<stem>.<random>.tmp<suffix>``)."""
    removed = 0
    for path in task_dir.rglob(".*.tmp*"):
        if path.is_file() and PARTIAL.match(path.name):
            path.unlink()
            removed += 1
    return removed


def _reusable(entry: FileEntry | None, job: MediaJob, path: Path) -> bool:
    return (entry is not None and entry.source == str(job.source) and entry.op == job.op and path.is_file()
            and path.stat().st_size == entry.size and sha256(path) == entry.sha256)


def _collect_jobs(plans: dict[tuple[str, int], RecordPlan]) -> dict[str, MediaJob]:
    """Every output file once (shared files are planned by several records); unsafe paths become problems."""
    jobs: dict[str, MediaJob] = {}
    for plan in plans.values():
        for job in list(plan.jobs):
            dest = PurePosixPath(job.dest)
            if dest.is_absolute() or ".." in dest.parts:  # a record must not write outside its task folder
                plan.jobs.remove(job)
                plan.missing.append(f"{job.dest!r}: the path leaves the task folder; the record is not served")
                continue
            jobs.setdefault(job.dest, job)
    return jobs


def _problems(plans: dict[tuple[str, int], RecordPlan], failed: dict[str, str]) -> list[Problem]:
    """One problem per media file of a record that has no source or could not be produced, in record order."""
    problems: list[Problem] = []
    for (split, i), plan in plans.items():
        problems += [Problem(split, i, "missing", m) for m in plan.missing]
        problems += [Problem(split, i, "unreadable", f"{j.dest}: {failed[j.dest]}") for j in plan.jobs if j.dest in failed]
    return problems


def prepare(
    preparer: Preparer,
    src: str | Path,
    annotations: str | Path,
    out: str | Path,
    workers: int = 1,
    progress: bool = False,
    copy: bool = False,
    drop_incomplete: bool = False,
) -> PrepareResult:
    """Prepare one AV-UIE v2 task folder from its source dataset.

    Args:
        preparer: The task's :class:`~crabzoo.data.prepare.base.Preparer` (from
            :func:`~crabzoo.data.prepare.registry.get_preparer`).
        src: The raw source dataset, in its official layout.
        annotations: The release: ``AVUIE_2.zip``, its extracted ``AVUIE_2/`` or the folder holding it.
        out: Output folder; ``AVUIE_2/<task>/`` is written inside.
        workers: Worker processes (started with ``forkserver``: a script that calls this with ``workers > 1``
            needs the usual ``if __name__ == "__main__":`` guard; the ``crabzoo`` command has it).
        progress: Show a progress bar on stderr.
        copy: Copy files instead of hard-linking them.
        drop_incomplete: Write the annotation files without the records whose media could not be produced (they
            stay listed in the report); by default the release's files are written unchanged.

    Returns:
        The run's :class:`PrepareResult` (also written as ``prepare_report.json``).

    Raises:
        CrabzooError: a ``--src`` without the dataset's layout, missing or malformed annotation files, or a bad
            ``workers`` value.
    """
    from crabzoo.report import atomic_write_text  # here, so that worker processes do not import Lightning

    start = time.perf_counter()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise CrabzooError(f"--workers must be a positive integer, got {workers!r}")
    src, annotations, out = Path(src).expanduser(), Path(annotations).expanduser(), Path(out).expanduser()
    task = preparer.task
    ann, texts = read_annotations(annotations, task)
    preparer.check_layout(src)
    records = {split: _parse_records(f"{ann}/{split}.json", text) for split, text in texts.items()}
    preparer.scan(src)
    task_dir = out / "AVUIE_2" / task
    task_dir.mkdir(parents=True, exist_ok=True)
    remove_partial_files(task_dir)

    plans = {(split, i): preparer.plan(rec, split) for split, recs in records.items() for i, rec in enumerate(recs)}
    jobs = _collect_jobs(plans)
    previous = read_manifest(task_dir)
    entries: dict[str, FileEntry] = {}
    todo: list[MediaJob] = []
    for dest, job in jobs.items():
        if _reusable(previous.get(dest), job, task_dir / dest):
            entries[dest] = previous[dest]
        else:
            todo.append(job)
    failed: dict[str, str] = {}
    meta = {"dataset": preparer.dataset, "src": str(src), "annotations": ann}
    saved = time.monotonic()
    for dest, entry, reason in _run(todo, task_dir, copy, workers, progress, task):
        if entry is None:
            failed[dest] = reason or "failed"
        else:
            entries[dest] = entry
        if time.monotonic() - saved >= CHECKPOINT_SECONDS:  # an interrupted run resumes from here
            atomic_write_text(task_dir / MANIFEST, manifest_text(task, {**previous, **entries}, meta))
            saved = time.monotonic()

    result = PrepareResult(task=task, dataset=preparer.dataset, task_dir=task_dir, gaps=preparer.gaps,
                           files=len(entries), written=len(todo) - len(failed), reused=len(jobs) - len(todo))
    result.problems = _problems(plans, failed)
    incomplete = {(p.split, p.index) for p in result.problems}
    for split, recs in records.items():
        result.records[split] = len(recs)
        result.complete[split] = sum((split, i) not in incomplete for i in range(len(recs)))
        if drop_incomplete:
            kept = [r for i, r in enumerate(recs) if (split, i) not in incomplete]
            atomic_write_text(task_dir / f"{split}.json", json.dumps(kept, indent=1, ensure_ascii=False) + "\n")
        else:
            atomic_write_text(task_dir / f"{split}.json", texts[split])
    atomic_write_text(task_dir / MANIFEST, manifest_text(task, entries, meta))
    result.seconds = time.perf_counter() - start
    atomic_write_text(task_dir / REPORT, report_text(result, drop_incomplete))
    return result


def report_text(result: PrepareResult, dropped: bool) -> str:
    """The report as JSON text (no timings, so a rerun over the same input writes the same file)."""
    payload = {
        "task": result.task,
        "dataset": result.dataset,
        "records": result.records,
        "complete": result.complete,
        "files": result.files,
        "incomplete_records_dropped": dropped,
        "known_gaps": list(result.gaps),
        "problems": [{"split": p.split, "index": p.index, "kind": p.kind, "detail": p.detail} for p in result.problems],
    }
    return json.dumps(payload, indent=1, ensure_ascii=False) + "\n"
