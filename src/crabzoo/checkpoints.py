"""A ``last.ckpt`` that is always there: refreshed every few steps, at epoch ends, on stops and on SIGTERM.

Every ``crabzoo fit`` keeps ``<run dir>/checkpoints/last.ckpt`` (:class:`LastCheckpoint`), so a run stopped by
``max_steps`` or ``max_time`` before its first validation, killed by a scheduler (SIGTERM) or crashed still
leaves something to resume, predict or export. A ``kill -9`` loses at most ``every_n_steps`` optimizer steps:
the file is written next to its final name and renamed over it, so it is never half-written.

``--ckpt_path last`` resolves to the newest ``last.ckpt`` under ``trainer.default_root_dir``
(:func:`find_last_checkpoint`); the resumed run logs into a new ``version_N`` folder.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import lightning as L

LAST_NAME = "last.ckpt"
"""File name of the always-there checkpoint, in the run's ``checkpoints/`` folder."""


def replace_path(tmp: Path, path: Path) -> None:
    """Move the finished checkpoint ``tmp`` onto ``path`` (atomic ``os.replace`` for files).

    A sharded checkpoint is a directory; ``os.replace`` cannot put a directory over another, so the old one is
    moved aside first and removed after (the one moment without ``path`` is two renames long).
    """
    if tmp.is_file():
        with open(tmp, "rb") as fh:  # the data reaches the disk before the name points at it
            os.fsync(fh.fileno())
    if tmp.is_dir() or path.is_dir():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
        return
    os.replace(tmp, path)


def run_checkpoint_dir(trainer: L.Trainer) -> Path:
    """``<run dir>/checkpoints``: where Lightning's ``ModelCheckpoint`` also writes by default."""
    return Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"


def find_last_checkpoint(root: str | Path) -> Path | None:
    """The newest ``last.ckpt`` of the runs under ``root`` (``root/version_*/checkpoints/`` or ``root/checkpoints/``).

    Args:
        root: The ``trainer.default_root_dir`` of the runs.

    Returns:
        The most recently written one, or ``None`` when no run under ``root`` has one.
    """
    root = Path(root)
    found = [p for p in [*root.glob(f"version_*/checkpoints/{LAST_NAME}"), root / "checkpoints" / LAST_NAME] if p.exists()]
    if not found:
        return None
    return max(found, key=lambda p: (p.stat().st_mtime_ns, p.parent.parent.name))


def checkpoint_step(path: str | Path) -> int:
    """The ``global_step`` stored in a (single-file) checkpoint."""
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["global_step"])


class LastCheckpoint(L.Callback):
    """Keep ``<run dir>/checkpoints/last.ckpt`` up to date during ``fit``.

    It is written every ``every_n_steps`` optimizer steps, after the last training batch of every epoch, when
    ``max_steps`` or ``max_time`` stops the run, and when training is interrupted by an
    exception or SIGTERM (Lightning turns SIGTERM into an exception raised after the current step). Each write
    goes to a temporary name in the same folder, then is renamed over ``last.ckpt``, so a ``kill -9`` at any
    moment leaves the previous complete file: at most ``every_n_steps`` steps are lost.

    A ``ModelCheckpoint(save_last=True)`` writing to the same folder would write its own ``last.ckpt`` (or
    ``last-v1.ckpt``) beside this one; its ``save_last`` is switched off while this callback is enabled, and its
    other files (``save_top_k``, ``every_n_train_steps``) are kept.

    Args:
        every_n_steps: Refresh ``last.ckpt`` every this many optimizer steps (``0``: only at epoch ends, stops and
            interruptions). Each refresh writes the whole checkpoint: raise it for large models.
        enabled: Keep ``last.ckpt`` at all.
        filename: File name inside the run's ``checkpoints/`` folder.
    """

    def __init__(self, every_n_steps: int = 100, enabled: bool = True, filename: str = LAST_NAME) -> None:
        if every_n_steps < 0:
            from crabzoo.errors import CrabzooError

            raise CrabzooError(f"last_checkpoint.every_n_steps must be >= 0 (0: epoch ends only), got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.enabled = enabled
        self.filename = filename
        self._saved_step = -1

    def path(self, trainer: L.Trainer) -> Path:
        """Where ``last.ckpt`` goes for this trainer."""
        return run_checkpoint_dir(trainer) / self.filename

    # ------------------------------------------------------------------ saving
    def save(self, trainer: L.Trainer) -> Path:
        """Write the checkpoint now (every rank calls this; rank 0 renames the finished file into place)."""
        path = self.path(trainer)
        tmp = path.with_name(f".{path.name}.tmp")
        if trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
            if tmp.is_dir():
                shutil.rmtree(tmp)
        trainer.strategy.barrier("crabzoo.last_checkpoint.start")
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:
            replace_path(tmp, path)
        trainer.strategy.barrier("crabzoo.last_checkpoint.end")
        self._saved_step = trainer.global_step
        return path

    def _active(self, trainer: L.Trainer) -> bool:
        return self.enabled and not trainer.sanity_checking and trainer.state.fn == "fit"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not self.enabled:
            return
        from lightning.pytorch.callbacks import ModelCheckpoint

        ours = run_checkpoint_dir(trainer).resolve()
        for cb in trainer.callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.save_last and (cb.dirpath is None or Path(cb.dirpath).resolve() == ours):
                cb.save_last = None  # this callback keeps last.ckpt in that folder

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self._active(trainer):
            return
        step = trainer.global_step
        if step == self._saved_step or step == 0:
            return
        periodic = self.every_n_steps > 0 and step % self.every_n_steps == 0
        stopping = 0 < trainer.max_steps <= step or trainer.should_stop
        # the epoch's last batch is saved here rather than at epoch end: a checkpoint written after the epoch
        # loop has finished resumes into the old epoch's data position (Lightning restarts that epoch)
        epoch_end = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if periodic or stopping or epoch_end:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._active(trainer) and trainer.global_step not in (0, self._saved_step):  # loaders without a length
            self.save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._active(trainer) and trainer.global_step not in (0, self._saved_step):
            self.save(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if not self._active(trainer) or trainer.global_step in (0, self._saved_step):
            return
        # saving is collective: only when every rank raised (SIGTERM is broadcast) or there is one rank
        if trainer.world_size > 1 and not isinstance(exception, SIGTERMException):
            return
        try:
            path = self.save(trainer)
        except Exception as err:  # the original exception matters more than this checkpoint
            warnings.warn(f"crabzoo: could not write {self.filename} after {type(exception).__name__}: {err}", stacklevel=1)
            return
        if trainer.is_global_zero:
            print(f"crabzoo: interrupted ({type(exception).__name__}) at step {trainer.global_step}; wrote {path}")
