"""Sequence packing: packed rows give the per-sample losses, gradients and router statistics of unpacked ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from crabzoo.backbones.loss import IGNORE_INDEX
from crabzoo.data.packing import PACKING_KEY, block_causal_mask, pack_plan, pack_rows
from crabzoo.errors import CrabzooError

ROOT = Path(__file__).resolve().parents[2]
TASKS = ["ks", "emotion"]
ADAPTERS = {
    "lora": {"class_path": "crabzoo.adapters.LoRA", "init_args": {"rank": 4, "alpha": 8}},
    "ilora": {
        "class_path": "crabzoo.adapters.ILoRA", "init_args": {"n_heads": 3, "rank": 4, "alpha": 8, "dropout": 0.0},
    },
    "ilora-task": {
        "class_path": "crabzoo.adapters.ILoRA",
        "init_args": {"n_heads": 3, "rank": 4, "alpha": 8, "dropout": 0.0, "routing": "task", "n_tasks": 2},
    },
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """AVSynth with three training clips of ``ks`` and of ``emotion`` (real MP4 and WAV files)."""
    from crabzoo.data.avsynth.writer import synthesize

    root = tmp_path_factory.mktemp("packing")
    synthesize(root, clips=8, seed=0, tasks=TASKS, soundtrack=False, reasoning=False)
    return root


def tiny_model(root: Path, tmp_path: Path, adapter: str, paradigm: str = "mlp"):
    """paradigms/tiny/<paradigm>.yaml with ``adapter`` on the LLM, connectors and adapter training, in eval mode.

    The trained parameters are moved off their initial values, as after some training steps.
    """
    from crabzoo.inference.loading import model_from_configs

    config = yaml.safe_load((ROOT / "paradigms" / "tiny" / f"{paradigm}.yaml").read_text())
    init = config["model"]["init_args"]
    init["adapter"] = ADAPTERS[adapter]
    init["train_groups"] = ["connector"]
    init["task_names"] = TASKS
    init["backbone"]["init_args"]["tokenizer_corpus"] = str(root / "AVUIE_2")
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(config))
    torch.manual_seed(0)
    model, _ = model_from_configs([path])
    with torch.no_grad():  # as after some training: LoRA's B starts at zero, which would zero A's gradients
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def mixed_batch(model, root: Path) -> dict:
    """Every training sample of both tasks in one batch, through the data module's processor and collate."""
    from crabzoo.data.datamodule import AVUIEDataModule

    dm = AVUIEDataModule(str(root), tasks=TASKS)
    dm.processor = model.make_processor()
    dm.setup("fit")
    return dm.processor.collate([dm.processor(s) for s in dm.splits["train"]])


def loss_and_grads(model, batch: dict) -> tuple[dict, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    out = model(batch)
    out["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    return out, grads


def test_pack_plan_takes_first_fit_row_count_and_balances_the_rows():
    assert pack_plan([5, 3, 8, 2, 4], 10) == [[2], [0, 3], [4, 1]]  # first fit: 3 rows of 10, 9, 3; balanced: 8, 7, 7
    assert pack_plan([5, 3, 8, 2, 4]) == [[2], [0, 3], [4, 1]]  # capacity: the longest sample
    assert pack_plan([3, 3, 2, 2, 2], 6) == [[0, 1], [2, 3, 4]]  # dealing longest first would give rows of 7 and 5
    assert pack_plan([12, 3], 10) == [[0], [1]]  # too long for a row: a row of its own, nothing cut
    with pytest.raises(CrabzooError, match="pack_length"):
        pack_plan([3], 0)


def test_pack_rows_restart_positions_and_keep_samples_apart():
    rows = [torch.full((n, 2), float(i + 1)) for i, n in enumerate([3, 2, 4])]
    labels = [torch.tensor([7, 8, 9]), torch.tensor([5, 6]), torch.tensor([IGNORE_INDEX, 1, 2, 3])]
    packed = pack_rows(rows, labels, pack_length=6)
    assert packed.plan == [[2], [0, 1]] and packed.num_samples == 3
    assert packed.segments.tolist() == [[2, 2, 2, 2, -1], [0, 0, 0, 1, 1]]
    assert packed.positions.tolist() == [[0, 1, 2, 3, 0], [0, 1, 2, 0, 1]]
    assert packed.labels.tolist() == [
        [IGNORE_INDEX, 1, 2, 3, IGNORE_INDEX], [IGNORE_INDEX, 8, 9, IGNORE_INDEX, 6],
    ]
    assert packed.inputs[:, :, 0].tolist() == [[3, 3, 3, 3, 0], [1, 1, 1, 2, 2]]
    allowed = block_causal_mask(packed.segments, torch.float32)[:, 0] == 0
    assert allowed.shape == (2, 5, 5)
    assert allowed[1, 4].tolist() == [False, False, False, True, True]  # sample 1 sees only itself
    assert allowed[1, 2].tolist() == [True, True, True, False, False]
    assert allowed[0, 4].tolist() == [False, False, False, False, True]  # padding: earlier padding only
    assert bool(allowed.any(-1).all())  # no fully masked query row (NaN in SDPA)


@pytest.mark.parametrize(
    ("paradigm", "adapter"), [("mlp", "lora"), ("mlp", "ilora"), ("mlp", "ilora-task"), ("interleaved", "ilora")]
)
def test_packed_batch_gives_the_unpacked_losses_and_gradients(paradigm, adapter, data_root, tmp_path):
    model = tiny_model(data_root, tmp_path, adapter, paradigm)
    batch = mixed_batch(model, data_root)
    assert batch["tasks"] == ["ks"] * 3 + ["emotion"] * 3
    ref, ref_grads = loss_and_grads(model, batch)

    with torch.no_grad():  # a capacity of two spliced samples: rows hold two samples, of one task or both
        rows, _ = model.splice_rows(batch["input_ids"], batch["labels"], model.media_embeddings(batch))
    lengths = [r.shape[0] for r in rows]
    pack_length = 2 * max(lengths) if adapter != "lora" else sum(lengths)  # LoRA: all six samples in one row
    plan = pack_plan(lengths, pack_length)
    assert len(plan) == (3 if adapter != "lora" else 1)
    assert any({batch["tasks"][i] for i in row} == set(TASKS) for row in plan)  # a row holds samples of both tasks
    out, grads = loss_and_grads(model, {**batch, PACKING_KEY: {"pack_length": pack_length}})

    assert out["per_sample"].shape == (6,)
    torch.testing.assert_close(out["per_sample"], ref["per_sample"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["loss"], ref["loss"], atol=1e-5, rtol=0)
    assert set(grads) == set(ref_grads) and any("lora" in n for n in grads) and any("connector" in n for n in grads)
    for name, g in ref_grads.items():
        assert g.abs().max() > 0, name
        torch.testing.assert_close(grads[name], g, atol=1e-5, rtol=1e-4, msg=name)


def test_router_telemetry_of_packed_rows_counts_each_token_for_its_sample(data_root, tmp_path):
    model = tiny_model(data_root, tmp_path, "ilora")
    batch = mixed_batch(model, data_root)
    summaries = []
    for packing in (None, {"pack_length": 10_000}):
        model.telemetry.reset()
        model.telemetry.enable()
        with torch.no_grad():
            model({**batch, PACKING_KEY: packing})
        summaries.append(model.telemetry.summary())
    unpacked, packed = summaries
    assert packed["tasks"] == unpacked["tasks"] == TASKS
    assert packed["tokens"] == unpacked["tokens"]
    for task in TASKS:
        for layer, gates in unpacked["mean_gate"][task].items():
            assert packed["mean_gate"][task][layer] == pytest.approx(gates, abs=1e-5)


def test_only_training_batches_are_marked_for_packing(data_root, tmp_path):
    from crabzoo.data.datamodule import AVUIEDataModule

    model = tiny_model(data_root, tmp_path, "lora")
    dm = AVUIEDataModule(str(data_root), tasks=TASKS, batch_size=3, packing=True, pack_length=512)
    dm.processor = model.make_processor()
    dm.setup("fit")
    train = list(dm.train_dataloader())
    assert len(train) == 2 and all(b[PACKING_KEY] == {"pack_length": 512} for b in train)
    assert all(PACKING_KEY not in b for b in dm.val_dataloader())
    with pytest.raises(CrabzooError, match="pack_length"):
        AVUIEDataModule(str(data_root), packing=True, pack_length=0)


def test_a_paradigm_that_cannot_pack_stops_at_setup(data_root, tmp_path):
    import lightning as L

    from crabzoo.data.datamodule import AVUIEDataModule
    from crabzoo.paradigms.modular import SegmentationAVLLM
    from crabzoo.paradigms.omni import OmniAVLLM

    assert not SegmentationAVLLM.packs_sequences and not OmniAVLLM.packs_sequences
    model = tiny_model(data_root, tmp_path, "lora")
    assert model.supports_packing
    model.packs_sequences = False  # as in the segmentation and omni paradigms
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    dm = AVUIEDataModule(str(data_root), tasks=TASKS, packing=True)
    dm.trainer = trainer
    with pytest.raises(CrabzooError, match="does not support sequence packing"):
        dm.setup("fit")
    with pytest.raises(CrabzooError, match="packing: false"):
        model.packed_forward(mixed_batch(model, data_root))


@pytest.mark.slow
def test_fit_with_packing_through_the_cli(tmp_path):
    import math

    from ckpt_helpers import fit_args, make_data, run_cli, train_losses

    root = make_data(tmp_path / "data")
    run_dir = tmp_path / "run"
    packing = ["--data.init_args.packing", "true", "--data.init_args.pack_length", "1024"]
    validation = [  # validation stays unpacked and generates
        "--trainer.val_check_interval", "3", "--trainer.check_val_every_n_epoch", "1",
        "--trainer.limit_val_batches", "1",
    ]
    run_cli(fit_args(root, run_dir, 3, 100, *packing, *validation))
    (version,) = run_dir.glob("version_*")
    report = json.loads((version / "results.json").read_text())
    assert report["global_step"] == 3 and report["results"]
    config = yaml.safe_load((version / "config.yaml").read_text())
    assert config["data"]["init_args"]["packing"] is True and config["data"]["init_args"]["pack_length"] == 1024
    losses = train_losses(version)
    assert sorted(losses) == [1, 2, 3] and all(math.isfinite(v) and v > 0 for v in losses.values())
