"""Write a checkpoint folder in the layout Lightning's DeepSpeed strategy (ZeRO-2, bf16-mixed) produces.

Lightning's ``DeepSpeedStrategy.save_checkpoint`` drops ``state_dict`` and ``optimizer_states`` from its
checkpoint and passes the rest as client state to ``DeepSpeedEngine.save_checkpoint(dir, tag="checkpoint")``.
The engine writes ``<tag>/mp_rank_00_model_states.pt`` (its own keys, the module's state dict, the client state),
one ``<tag>/bf16_zero_pp_rank_<r>_mp_rank_00_optim_states.pt`` per data-parallel rank, its ``zero_to_fp32.py``
script and ``latest`` (the tag). Under bf16 the engine has cast the module to bf16, so ``module`` holds bf16
tensors; with ``exclude_frozen_parameters`` the frozen parameters are left out of it. The real optimizer shards
pickle DeepSpeed classes; here they hold plain tensors in the same keys (crabzoo never reads them).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

TAG = "checkpoint"


def lightning_client_state(hyper_parameters: dict[str, Any], global_step: int) -> dict[str, Any]:
    """Lightning's checkpoint without ``state_dict`` / ``optimizer_states`` (real loop and callback states)."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from crabzoo.distributed import RNGCheckpoint

    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    loops = {"fit_loop": trainer.fit_loop.state_dict(), "validate_loop": trainer.validate_loop.state_dict(),
             "test_loop": trainer.test_loop.state_dict(), "predict_loop": trainer.predict_loop.state_dict()}
    every = ModelCheckpoint(every_n_train_steps=500)
    callbacks = {"RNGCheckpoint": RNGCheckpoint().state_dict(), every.state_key: every.state_dict()}
    return {
        "epoch": 0, "global_step": global_step, "pytorch-lightning_version": L.__version__, "loops": loops,
        "callbacks": callbacks, "lr_schedulers": [{"last_epoch": global_step, "base_lrs": [1e-4]}],
        "hparams_name": "kwargs", "hyper_parameters": hyper_parameters,
    }


def write_deepspeed_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    client_state: dict[str, Any],
    exclude_frozen: bool = False,
    prefix: str = "",
    world_size: int = 2,
) -> Path:
    """Write ``directory`` (``<name>.ckpt``) as a ZeRO-2 bf16 run of ``model`` on ``world_size`` GPUs would.

    Args:
        directory: The checkpoint folder to create.
        model: The LightningModule (the engine's module); its floating tensors are saved in bf16.
        client_state: Lightning's part (see :func:`lightning_client_state`).
        exclude_frozen: The strategy's ``exclude_frozen_parameters``: frozen parameters are left out of
            ``module`` (else ZeRO-2 also keeps them in ``frozen_param_fragments``).
        prefix: Prefix of every module key (``"_forward_module."`` for Lightning < 2.1's wrapper).
        world_size: Data-parallel ranks (one optimizer shard each).
    """
    def bf16(value: torch.Tensor) -> torch.Tensor:
        return value.detach().to(torch.bfloat16) if value.is_floating_point() else value.detach()

    params = dict(model.named_parameters())
    frozen = {n for n, p in params.items() if not p.requires_grad}
    module = OrderedDict(
        (prefix + n, bf16(v)) for n, v in model.state_dict().items() if not (exclude_frozen and n in frozen)
    )
    trained = OrderedDict((prefix + n, p.shape) for n, p in params.items() if p.requires_grad)
    fragments = None if exclude_frozen else OrderedDict((prefix + n, bf16(params[n])) for n in sorted(frozen))
    buffers = [prefix + n for n in model.state_dict() if n not in params]  # the persistent buffers
    folder = directory / TAG
    folder.mkdir(parents=True)
    engine = {
        "module": module,
        "buffer_names": buffers,
        "optimizer": None,
        "param_shapes": [trained],
        "frozen_param_shapes": None if fragments is None else OrderedDict((n, v.shape) for n, v in fragments.items()),
        "shared_params": {},
        "frozen_param_fragments": fragments,
        "lr_scheduler": None,
        "data_sampler": None,
        "random_ltd": None,
        "sparse_tensor_module_names": set(),
        "skipped_steps": 0,
        "global_steps": client_state["global_step"],
        "global_samples": client_state["global_step"] * 4 * world_size,
        "dp_world_size": world_size,
        "mp_world_size": 1,
        "ds_config": {"zero_optimization": {"stage": 2, "contiguous_gradients": True, "overlap_comm": True},
                      "bf16": {"enabled": True}, "train_micro_batch_size_per_gpu": 1,
                      "zero_allow_untested_optimizer": True, "gradient_clipping": 1.0},
        "ds_version": "0.16.4",
    }
    torch.save({**engine, **client_state}, folder / "mp_rank_00_model_states.pt")
    part = -(-sum(shape.numel() for shape in trained.values()) // world_size)
    for rank in range(world_size):
        shard = {"optimizer_state_dict": {"zero_stage": 2, "partition_count": world_size,
                                          "single_partition_of_fp32_groups": [torch.zeros(part)]},
                 "ds_config": engine["ds_config"], "ds_version": engine["ds_version"]}
        torch.save(shard, folder / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
    (directory / "zero_to_fp32.py").write_text("# DeepSpeed's consolidation script is copied here by the engine\n")
    (directory / "latest").write_text(TAG)
    return directory
