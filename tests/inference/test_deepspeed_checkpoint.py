"""``crabzoo export`` and ``crabzoo predict`` from a DeepSpeed ZeRO-2 checkpoint folder, without DeepSpeed installed.

The folder is written in the exact layout of Lightning's DeepSpeed strategy (see deepspeed_helpers.py) from a
tiny Qwen2.5-Omni thinker with I-LoRA on its three towers (the Crab+ placement, as recipes/crab_plus and
recipes/scale/deepspeed-zero2.yaml train it); both commands run through the real CLI.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml
from deepspeed_helpers import lightning_client_state, write_deepspeed_checkpoint
from export_helpers import ROOT, run_main

ADAPTER = {"class_path": "crabzoo.adapters.ILoRA",
           "init_args": {"groups": ["llm", "audio_encoder", "visual_encoder"], "n_heads": 3, "rank": 4, "alpha": 8}}
TEXTS = [
    ("Please describe the events in the video.", "A dog is visible and a bark is audible."),
    ("What is making the sound in the video?", "The sound comes from the guitar. <answer>guitar</answer>"),
    ("Which object makes the sound? Give its box.", "The sounding object is cat. <obj>(12,30)(100,180)</obj>"),
]


OMNI = ROOT / "paradigms" / "tiny" / "omni.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[object, dict, list[Path]]:
    """A tiny omni model with random (non-zero) adapter weights, the ``hyper_parameters`` ``crabzoo fit`` stores
    and the configuration files that build it."""
    from crabzoo.export.config import tree_from_configs
    from crabzoo.inference.loading import model_from_configs

    root = tmp_path_factory.mktemp("ds")
    corpus = root / "corpus"
    (corpus / "ks").mkdir(parents=True)
    records = [{"id": f"s{i}", "instruction": q, "output": a} for i, (q, a) in enumerate(TEXTS * 4)]
    (corpus / "ks" / "train.json").write_text(json.dumps(records))
    override = root / "override.yaml"
    init = {"backbone": {"init_args": {"tokenizer_corpus": str(corpus)}}, "adapter": ADAPTER, "task_names": ["ks"],
            "max_new_tokens": 8}
    override.write_text(yaml.safe_dump({"model": {"init_args": init}}))
    configs = [OMNI, override]
    torch.manual_seed(0)
    model, _ = model_from_configs(configs)
    with torch.no_grad():
        for p in model.adapter.trainable_parameters():
            p.normal_(0, 0.05)
    tree = tree_from_configs(configs)
    return model, {"_class_path": tree["class_path"], **tree["init_args"]}, configs


def exported_adapter(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter" / "adapter.safetensors"))


@pytest.mark.parametrize(
    ("exclude_frozen", "prefix"),
    [(False, ""), (True, "_forward_module.")],
    ids=["deepspeed_stage_2", "exclude_frozen-lightning_2_0_wrapper"],
)
def test_export_from_a_zero2_folder_gives_the_adapter(trained, tmp_path, exclude_frozen, prefix):
    model, hparams, _ = trained
    ckpt = tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt"
    write_deepspeed_checkpoint(ckpt, model, lightning_client_state(hparams, global_step=7),
                               exclude_frozen=exclude_frozen, prefix=prefix)
    out = tmp_path / "export"
    result = run_main(["export", "--ckpt_path", str(ckpt), "--out", str(out)])
    assert result.code == 0, result.err
    assert "I-LoRA beside the base LLM" in result.out
    if exclude_frozen:  # the frozen thinker keeps what its configuration builds
        assert "lacks" in result.err and "frozen weights" in result.err
    got = exported_adapter(out)
    want = model.adapter.adapter_state_dict()
    assert set(got) == set(want) and len(want) > 20
    for name, value in want.items():  # the folder holds the bf16 working copy DeepSpeed trains in
        assert torch.equal(got[name].float(), value.to(torch.bfloat16).float()), name
    assert any(float(v.abs().max()) > 0 for k, v in got.items() if "lora_B" in k)
    manifest = json.loads((out / "crabzoo_export.json").read_text())
    assert manifest["source"] == str(ckpt)


def test_read_checkpoint_gives_lightnings_dictionary(trained, tmp_path):
    from crabzoo.inference.loading import read_checkpoint

    model, hparams, _ = trained
    ckpt = write_deepspeed_checkpoint(tmp_path / "epoch=0-step=7.ckpt", model, lightning_client_state(hparams, 7))
    data = read_checkpoint(ckpt)
    assert data["global_step"] == 7 and data["hyper_parameters"]["_class_path"] == hparams["_class_path"]
    assert "module" not in data and "ds_config" not in data and "frozen_param_fragments" not in data
    assert set(data["state_dict"]) == set(model.state_dict())
    assert all(v.dtype == torch.bfloat16 for v in data["state_dict"].values() if v.is_floating_point())


def test_the_fp32_file_lightning_consolidates_is_read(trained, tmp_path):
    """``convert_zero_checkpoint_to_fp32_state_dict`` (needs DeepSpeed) saves the model-states file without the
    engine keys it lists, plus the fp32 state dict from the optimizer shards: crabzoo reads it with weights_only."""
    from crabzoo.deepspeed_checkpoint import MODEL_STATES
    from crabzoo.inference.loading import read_checkpoint

    model, hparams, _ = trained
    folder = write_deepspeed_checkpoint(tmp_path / "last.ckpt", model, lightning_client_state(hparams, 7))
    states = torch.load(folder / "checkpoint" / MODEL_STATES, map_location="cpu", weights_only=True)
    dropped = ("module", "optimizer", "lr_scheduler", "csr_tensor_module_names", "skipped_steps", "global_steps",
               "dp_world_size", "mp_world_size")
    consolidated = {k: v for k, v in states.items() if k not in dropped}
    consolidated["state_dict"] = {k: v.clone() for k, v in model.state_dict().items()}  # fp32
    torch.save(consolidated, tmp_path / "last-fp32.ckpt")
    data = read_checkpoint(tmp_path / "last-fp32.ckpt")
    assert data["global_step"] == 7 and isinstance(data["sparse_tensor_module_names"], set)
    want = model.state_dict()
    assert all(torch.equal(data["state_dict"][k], v) for k, v in want.items())


def test_zero3_and_incomplete_folders_are_one_line_errors(trained, tmp_path):
    model, hparams, _ = trained
    ckpt = write_deepspeed_checkpoint(tmp_path / "z3.ckpt", model, lightning_client_state(hparams, 7))
    states = ckpt / "checkpoint" / "mp_rank_00_model_states.pt"
    states.rename(ckpt / "checkpoint" / "zero_pp_rank_0_mp_rank_00_model_states.pt")
    result = run_main(["export", "--ckpt_path", str(ckpt), "--out", str(tmp_path / "out")])
    assert result.code == 2 and "ZeRO stage 3" in result.err and "convert_zero_checkpoint_to_fp32" in result.err
    assert "Traceback" not in result.err and not (tmp_path / "out").exists()
    (ckpt / "latest").write_text("global_step9")
    result = run_main(["export", "--ckpt_path", str(ckpt), "--out", str(tmp_path / "out")])
    assert result.code == 2 and "'global_step9'" in result.err and "incomplete" in result.err


def test_load_deepspeed_weights_fills_the_model(trained, tmp_path):
    import lightning as L

    from crabzoo.lightning_cli import load_deepspeed_weights

    model, hparams, _ = trained
    folder = write_deepspeed_checkpoint(tmp_path / "last.ckpt", model, lightning_client_state(hparams, 3))
    fresh = copy.deepcopy(model)
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    assert load_deepspeed_weights(trainer, fresh, str(folder)) is None
    loaded = fresh.state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(loaded[name], value.to(torch.bfloat16).to(value.dtype)), name
    single = tmp_path / "single.ckpt"
    single.write_bytes(b"")
    assert load_deepspeed_weights(trainer, fresh, str(single)) == str(single)  # a file is left to Lightning
    assert load_deepspeed_weights(trainer, fresh, None) is None


def predictions(configs: list[Path], data: Path, runs: Path, ckpt: Path) -> list[dict]:
    """Records of ``crabzoo predict --ckpt_path CKPT`` (real CLI, in process) on the ks, a2v and s4 test clips."""
    from crabzoo.lightning_cli import run_lightning_cli

    args = ["predict"]
    for c in configs:
        args += ["--config", str(c)]
    args += [
        "--data", "crabzoo.data.datamodule.AVUIEDataModule", "--data.init_args.root", str(data),
        "--data.init_args.synth", "null", "--data.init_args.tasks", '["ks", "a2v", "s4"]',
        "--data.init_args.num_workers", "0", "--data.init_args.batch_size", "2",
        "--trainer.accelerator", "cpu", "--trainer.devices", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(runs), "--ckpt_path", str(ckpt),
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_lightning_cli(args)
    finally:
        torch.set_num_threads(threads)
    (path,) = runs.glob("version_*/predictions.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_predict_from_the_folder_equals_predict_from_one_file(trained, avsynth_root, tmp_path):
    """The folder's weights and stored model configuration (as Lightning applies a file's) reach the command."""
    from crabzoo.deepspeed_checkpoint import read_deepspeed_checkpoint

    model, hparams, configs = trained
    folder = write_deepspeed_checkpoint(tmp_path / "ds" / "last.ckpt", model, lightning_client_state(hparams, 3))
    single = tmp_path / "single.ckpt"
    torch.save(read_deepspeed_checkpoint(folder), single)  # the same dictionary as one Lightning checkpoint file
    plain = [OMNI]  # the command line builds the untrained model; both checkpoints bring their configuration
    from_folder = predictions(plain, avsynth_root, tmp_path / "runs_folder", folder)
    from_file = predictions(plain, avsynth_root, tmp_path / "runs_file", single)
    assert len(from_folder) >= 3 and from_folder == from_file
    assert len({r["generation"] for r in from_folder}) > 1
