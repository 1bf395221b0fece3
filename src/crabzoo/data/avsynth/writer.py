"""Generating an AVSynth dataset: parallel clip building, annotation files and the manifest.

The output is ``<out>/AVUIE_2/<task>/{train,test}.json`` plus media, exactly the layout of the AV-UIE v2 release,
and ``<out>/AVUIE_2/avsynth_manifest.json`` recording the options and a hash of every annotation file.
:func:`ensure_avsynth` regenerates only when the manifest is missing or was written with other options.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from crabzoo.data.avsynth.tasks import AVSYNTH_TASKS, Job, build_clip
from crabzoo.data.avsynth.world import Knobs
from crabzoo.errors import CrabzooError

MANIFEST = "avsynth_manifest.json"
"""Manifest file name, written in the ``AVUIE_2`` folder."""

VERSION = 1
"""Generator version; bumping it invalidates existing datasets in :func:`ensure_avsynth`."""


def _resolve_tasks(tasks: Sequence[str] | str | None) -> tuple[str, ...]:
    if tasks is None:
        return AVSYNTH_TASKS
    if isinstance(tasks, str):
        tasks = [t for t in tasks.replace(",", " ").split() if t]
    unknown = [t for t in tasks if t not in AVSYNTH_TASKS]
    if unknown:
        raise CrabzooError(f"unknown AVSynth task(s) {unknown}; choose from {list(AVSYNTH_TASKS)}")
    if not tasks:
        raise CrabzooError("no AVSynth task selected; pass task names or leave --tasks out for all of them")
    return tuple(t for t in AVSYNTH_TASKS if t in set(tasks))  # canonical order, no duplicates


def clips_per_task(clips: int, tasks: Sequence[str]) -> dict[str, int]:
    """Split ``clips`` evenly over ``tasks`` (the first tasks get the remainder), at least 2 per task."""
    base, rest = divmod(int(clips), len(tasks))
    return {t: max(2, base + (1 if i < rest else 0)) for i, t in enumerate(tasks)}


def _options(clips: int, seed: int, tasks: Sequence[str], reasoning: bool, knobs: Knobs) -> dict[str, Any]:
    return {"version": VERSION, "clips": int(clips), "seed": int(seed), "tasks": list(tasks),
            "reasoning": bool(reasoning), "knobs": knobs.as_dict()}


def _dump(path: Path, payload: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _run(job: Job) -> tuple[str, int, list[tuple[str, dict[str, Any]]], int, float]:
    """Build one clip; also report the worker's process id and its CPU seconds so far (for the summary)."""
    return job.task, job.index, build_clip(job), os.getpid(), time.process_time()


def _context() -> multiprocessing.context.BaseContext:
    """A forkserver context (spawn where there is none) whose server has already imported the clip builders.

    Workers fork from the server, so they start without importing numpy, PyAV and the renderers again.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["__main__", "crabzoo.data.avsynth.tasks"])  # the default list plus the builders
    return ctx


def _progress(items: Iterable[Any], total: int, enabled: bool) -> Iterable[Any]:
    if not enabled:
        yield from items
        return
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with lightning
        yield from items
        return
    yield from tqdm(items, total=total, desc="avsynth", unit="clip", file=sys.stderr, dynamic_ncols=True)


def _prepare_root(out: Path) -> Path:
    root = out / "AVUIE_2"
    if root.is_dir() and not (root / MANIFEST).is_file() and any(root.iterdir()):
        raise CrabzooError(
            f"{root} holds data that AVSynth did not write (no {MANIFEST}); pick an empty --out folder"
        )
    root.mkdir(parents=True, exist_ok=True)
    return root


def synthesize(
    out: str | Path,
    clips: int,
    seed: int = 0,
    tasks: Sequence[str] | str | None = None,
    workers: int = 1,
    reasoning: bool = True,
    progress: bool = False,
    **knobs: Any,
) -> dict[str, Any]:
    """Generate an AVSynth dataset under ``<out>/AVUIE_2``.

    Args:
        out: Output folder (created if needed; existing AVSynth task folders are replaced).
        clips: Total clips, split evenly over the tasks (at least 2 per task; the last ``test_fraction`` of each
            task's clips form its test split).
        seed: Dataset seed: the same seed and options give byte-identical annotation files.
        tasks: Task folders to write (default: all of :data:`~crabzoo.data.avsynth.tasks.AVSYNTH_TASKS`).
        workers: Worker processes.
        reasoning: Write explicit reasoning before each answer (``False``: bare answers, the ablation).
        progress: Show a progress bar on stderr.
        **knobs: :class:`~crabzoo.data.avsynth.world.Knobs` fields (``noise``, ``size``, ``fps``, ...).

    Returns:
        Summary: ``root``, ``clips`` (per task), ``records`` (per task and split), ``seconds`` (wall clock) and
        ``cpu_seconds`` (CPU time of this process and of the worker processes, start-up included).

    Raises:
        CrabzooError: unknown task or knob, invalid value, or an ``out`` folder holding other data.
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    if isinstance(clips, bool) or not isinstance(clips, int) or clips < 1:
        raise CrabzooError(f"AVSynth clips must be a positive integer, got {clips!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise CrabzooError(f"AVSynth workers must be a positive integer, got {workers!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise CrabzooError(f"AVSynth seed must be a non-negative integer, got {seed!r}")
    chosen = _resolve_tasks(tasks)
    knob = Knobs.from_options(knobs)
    root = _prepare_root(Path(out))
    (root / MANIFEST).unlink(missing_ok=True)
    counts = clips_per_task(clips, chosen)
    for task in chosen:
        target = root / task
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
    if "arig" in chosen and "s4" in chosen:
        (root / "arig" / "AVS").mkdir(parents=True, exist_ok=True)
        os.symlink(Path("..") / ".." / "s4" / "AVS" / "v1s", root / "arig" / "AVS" / "v1s", target_is_directory=True)
    jobs = [Job(t, i, counts[t], int(seed), knob, bool(reasoning), root, chosen) for t in chosen for i in range(counts[t])]
    results: dict[tuple[str, int], list[tuple[str, dict[str, Any]]]] = {}
    worker_cpu: dict[int, float] = {}  # CPU seconds of each worker process (cumulative, so keep the latest)
    if workers == 1:
        for task, index, recs, _, _ in _progress(map(_run, jobs), len(jobs), progress):
            results[(task, index)] = recs
    else:
        with _context().Pool(workers) as pool:
            for task, index, recs, pid, cpu in _progress(pool.imap_unordered(_run, jobs, chunksize=4), len(jobs),
                                                          progress):
                results[(task, index)] = recs
                worker_cpu[pid] = max(cpu, worker_cpu.get(pid, 0.0))
    summary: dict[str, Any] = {"root": str(root), "clips": counts, "records": {}}
    hashes: dict[str, str] = {}
    for task in chosen:
        splits: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
        for index in range(counts[task]):
            for split, rec in results[(task, index)]:
                splits[split].append(rec)
        for split, recs in splits.items():
            path = root / task / f"{split}.json"
            _dump(path, recs)
            hashes[f"{task}/{split}.json"] = hashlib.sha256(path.read_bytes()).hexdigest()
            summary["records"][f"{task}/{split}"] = len(recs)
    manifest = _options(clips, seed, chosen, reasoning, knob)
    manifest["annotations_sha256"] = hashes
    _dump(root / MANIFEST, manifest)
    summary["seconds"] = time.perf_counter() - start
    summary["cpu_seconds"] = time.process_time() - cpu_start + sum(worker_cpu.values())
    return summary


def read_manifest(out: str | Path) -> dict[str, Any] | None:
    """The manifest of an AVSynth dataset under ``out`` (or ``out/AVUIE_2``), or ``None``."""
    out = Path(out)
    for path in (out / "AVUIE_2" / MANIFEST, out / MANIFEST):
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                return None
    return None


def ensure_avsynth(
    out: str | Path,
    clips: int = 400,
    seed: int = 0,
    tasks: Sequence[str] | str | None = None,
    workers: int = 1,
    reasoning: bool = True,
    progress: bool = False,
    **knobs: Any,
) -> bool:
    """Generate AVSynth under ``out`` unless a dataset with the same options (and intact annotations) is there.

    Returns:
        True when data was generated, False when the existing dataset matched.
    """
    chosen = _resolve_tasks(tasks)
    wanted = _options(clips, seed, chosen, reasoning, Knobs.from_options(knobs))
    found = read_manifest(out)
    if found is not None:
        same = {k: found.get(k) for k in wanted} == wanted
        root = Path(out) / "AVUIE_2"
        hashes = found.get("annotations_sha256", {})
        intact = same and all(
            (root / name).is_file() and hashlib.sha256((root / name).read_bytes()).hexdigest() == digest
            for name, digest in hashes.items()
        )
        if intact:
            return False
    synthesize(out, clips, seed, chosen, workers, reasoning, progress, **knobs)
    return True
