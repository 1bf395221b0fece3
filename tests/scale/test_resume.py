"""Kill-and-resume equals the uninterrupted run, step by step (one process): data order across an epoch
boundary, RNG (adapter dropout), optimizer and scheduler state."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from tiny import TinyAV, TokenTasks, loader

from crabzoo.distributed import AtomicCheckpointIO, RNGCheckpoint
from crabzoo.monitor import TaskCounter, ThroughputMonitor

pytestmark = pytest.mark.slow


class Record(L.Callback):
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append(list(batch["index"]))
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def run(tmp, max_steps, ckpt_every=None, ckpt_path=None, seed=0):
    L.seed_everything(seed)
    model = TinyAV(dropout=0.2, seed=seed)
    rec, counter, monitor = Record(), TaskCounter(), ThroughputMonitor(window=2, log_every_n_steps=1)
    callbacks = [RNGCheckpoint(), rec, counter, monitor]
    if ckpt_every:
        callbacks.append(L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp, every_n_train_steps=ckpt_every, save_top_k=-1))
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=max_steps, callbacks=callbacks, logger=False,
        enable_checkpointing=bool(ckpt_every), enable_progress_bar=False, enable_model_summary=False,
        plugins=[AtomicCheckpointIO()], default_root_dir=str(tmp),
    )
    data = TokenTasks(n=24)  # 6 batches of 4 per epoch
    trainer.fit(model, loader(data, mixing="temperature", temperature=2.0), ckpt_path=ckpt_path)
    model.counts, model.perf = dict(counter.counts), monitor.last
    return model, rec


def test_resume_mid_epoch_matches_uninterrupted_run(tmp_path):
    torch.set_num_threads(1)
    full, rec_full = run(tmp_path / "full", 10)
    part, _ = run(tmp_path / "part", 4, ckpt_every=4)
    ckpt = tmp_path / "part" / "epoch=0-step=4.ckpt"
    assert ckpt.is_file() and not list((tmp_path / "part").glob(".*.tmp"))
    resumed, rec_res = run(tmp_path / "res", 10, ckpt_path=str(ckpt), seed=99)
    assert part.losses == full.losses[:4]
    assert rec_res.batches == rec_full.batches[4:]  # same data order, crossing into epoch 1
    assert rec_res.lrs == rec_full.lrs[4:]  # scheduler state
    assert resumed.losses == full.losses[4:]  # bit-identical: weights, AdamW moments and dropout RNG restored
    assert resumed.counts == full.counts and sum(full.counts.values()) == 10 * 4  # per-task counts survive resume
    assert full.perf["samples_per_s"] > 0 and full.perf["tokens_per_s"] == pytest.approx(10 * full.perf["samples_per_s"], rel=1e-12)
