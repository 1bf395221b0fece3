"""One rank of a 2-process CPU (gloo) run, started by test_distributed.py with LOCAL_RANK/WORLD_SIZE/MASTER_PORT.

Usage: python dist_worker.py {fsdp2|ddp|report} OUT_DIR. Rank 0 writes OUT_DIR/result.json.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
warnings.filterwarnings("ignore")

import lightning as L  # noqa: E402
import torch  # noqa: E402

from tiny import TinyAV, TokenTasks, loader  # noqa: E402

from crabzoo.distributed import RNGCheckpoint, export_adapter, full_tensor  # noqa: E402


class Record(L.Callback):
    def __init__(self) -> None:
        self.rows: list = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.rows.append((list(batch["index"]), trainer.optimizers[0].param_groups[0]["lr"]))


class GradProbe(L.Callback):
    """Records, per optimizer step, the global gradient norm of every adapter parameter (None: no gradient)."""

    def __init__(self) -> None:
        self.norms: list[dict[str, float | None]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        step = {}
        for name, p in pl_module.named_parameters():
            if "lora_" in name:
                step[name] = None if p.grad is None else float(full_tensor(p.grad).norm())
        self.norms.append(step)


def trainer(strategy, max_steps: int, out: Path, callbacks=(), ckpt_every: int | None = None) -> L.Trainer:
    cbs = [RNGCheckpoint(), *callbacks]
    if ckpt_every:
        cbs.append(L.pytorch.callbacks.ModelCheckpoint(dirpath=out / "ckpt", every_n_train_steps=ckpt_every, save_top_k=-1))
    return L.Trainer(
        accelerator="cpu", devices=2, strategy=strategy, max_steps=max_steps, callbacks=cbs, logger=False,
        enable_checkpointing=bool(ckpt_every), enable_progress_bar=False, enable_model_summary=False,
        use_distributed_sampler=False, default_root_dir=str(out), num_sanity_val_steps=0,
    )


def fsdp2(out: Path) -> dict:
    from lightning.pytorch.strategies import ModelParallelStrategy

    data = TokenTasks(n=32)
    result: dict = {}
    # uninterrupted: 4 steps
    L.seed_everything(0)
    model = TinyAV()
    probe, rec = GradProbe(), Record()
    trainer(ModelParallelStrategy(), 4, out / "a", [probe, rec]).fit(model, loader(data))
    result["rec_full"] = rec.rows
    result["full"] = model.losses
    result["grad_norms"] = probe.norms
    result["sharded"] = [type(m).__name__ for m in model.modules() if type(m).__name__.startswith("FSDP")][:3]
    lora_a = next(model.adapter.trainable_parameters())
    result["mesh_size"] = lora_a.device_mesh.size() if hasattr(lora_a, "device_mesh") else 1
    result["n_adapter_params"] = len(list(model.adapter.trainable_parameters()))
    # interrupted after 2 steps (sharded checkpoint), then resumed to 4
    L.seed_everything(0)
    model = TinyAV()
    trainer(ModelParallelStrategy(), 2, out / "b", ckpt_every=2).fit(model, loader(data))
    result["b"] = model.losses
    ckpt = out / "b" / "ckpt" / "epoch=0-step=2.ckpt"
    result["ckpt_is_dir"] = ckpt.is_dir()
    result["ckpt_files"] = sorted(p.name for p in ckpt.iterdir()) if ckpt.is_dir() else []
    L.seed_everything(123)
    model = TinyAV(seed=7)
    rec = Record()
    trainer(ModelParallelStrategy(), 4, out / "c", [rec]).fit(model, loader(data), ckpt_path=str(ckpt))
    result["rec_res"] = rec.rows
    result["resumed"] = model.losses
    export = export_adapter(model, out / "adapter")
    if export is not None:
        from safetensors.torch import load_file

        state = load_file(str(export / "adapter.safetensors"))
        result["export_keys"] = len(state)
        result["export_shapes_ok"] = all(
            tuple(state[k].shape) == tuple(v.shape) for k, v in model.adapter.adapter_state_dict().items()
        )
    return result


def ddp(out: Path) -> dict:
    L.seed_everything(0)
    model = TinyAV()
    data = TokenTasks(n=32)
    trainer("ddp", 3, out / "ddp").fit(model, loader(data))
    lora = torch.cat([p.detach().flatten() for p in model.adapter.trainable_parameters()])
    gathered = [torch.zeros_like(lora) for _ in range(2)]
    torch.distributed.all_gather(gathered, lora)
    return {"losses": model.losses, "ranks_equal": bool(torch.equal(gathered[0], gathered[1]))}


class Reported(TinyAV):
    """TinyAV holding a per-task results table, as a paradigm does after validation."""

    results = {"ks": {"accuracy": 0.5, "n_total": 2.0, "n_parsed": 1.0}}


def report(out: Path) -> dict:
    """A 1-step DDP fit whose ReportCallback writes the table into the logger's folder; nothing collective after."""
    from lightning.pytorch.loggers import CSVLogger

    from crabzoo.report import ReportCallback

    L.seed_everything(0)
    fit = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=1, callbacks=[ReportCallback()],
        logger=CSVLogger(str(out / "logs"), name="run"), enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, use_distributed_sampler=False, default_root_dir=str(out), num_sanity_val_steps=0,
    )
    fit.fit(Reported(), loader(TokenTasks(n=16)))
    written = sorted(str(p.relative_to(out)) for p in out.rglob("results.*"))
    table = json.loads((out / "logs" / "run" / "version_0" / "results.json").read_text()) if written else {}
    return {"written": written, "global_step": table.get("global_step"), "results": table.get("results")}


if __name__ == "__main__":
    torch.set_num_threads(1)
    scenario, out = sys.argv[1], Path(sys.argv[2])
    result = {"fsdp2": fsdp2, "ddp": ddp, "report": report}[scenario](out)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        (out / "result.json").write_text(json.dumps(result))
