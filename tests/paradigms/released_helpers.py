"""Write tiny released weight files in the exact key layout and file names of the Crab and Crab+ releases.

The keys are built the way the original scripts name them (not through crabzoo's exporter): peft's
``PeftModel`` puts ``base_model.model.`` in front of the wrapped model's module paths, and each adapted linear
holds ``lora_A`` / ``lora_B<i>`` / ``lora_route`` as bias-free ``nn.Linear`` children. The wrapped model is
LLaMA's ``*ForCausalLM`` for Crab (``model.layers.*``) and, for Crab+, the thinker of the Qwen2.5-Omni code
the release was trained with: ``model.layers.*`` (text model), ``audio_tower.layers.*``, ``visual.blocks.*``
(newer transformers nest these under ``model.``; the release does not). Crab's projectors are LAVIS
``BertLMHeadModel`` Q-Formers under ``model.vl_projector`` / ``model.al_projector`` of the LLaMA model. Files
are written with ``torch.save`` of the state dict, as the releases are.

Crab's stage-3 files (``avs_finetune_weights.bin``) hold what its trainer's ``save_modules`` match: the
parameters of ``model.seg_module`` (no buffers), ``model.embed_tokens.weight`` and ``lm_head.weight``, whose rows
are LLaMA's vocabulary followed by the 17 tokens Crab adds, in Crab's order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import lightning as L
import torch
import yaml
from torch import Tensor

ROOT = Path(__file__).resolve().parents[2]
PEFT = "base_model.model."

TINY_OMNI = ROOT / "paradigms" / "tiny" / "omni.yaml"
TINY_QFORMER = ROOT / "paradigms" / "tiny" / "modular-qformer.yaml"
TINY_SEG = ROOT / "paradigms" / "tiny" / "modular-seg.yaml"

TINY_CRAB_SEG = {
    "class_path": "crabzoo.heads.crab_seg.CrabSegModule",
    "init_args": {"prompt_dim": 32, "depth": 1, "num_heads": 2, "mlp_dim": 64, "num_queries": 8, "query_layers": 2,
                  "query_ffn_dim": 48, "avss_classes": 3, "low_res_size": 28, "mask_size": 56},
}
"""Crab's segmentation module at tiny sizes (4 x 4 patch grids of the tiny CLIP -> 56 x 56 masks)."""

CRAB_ADDED = ["<image>", "<image_start>", "<image_end>", "<video>", "<video_start>", "<video_end>", "<audio>",
              "<audio_start>", "<audio_end>", "<mask_start>", "<mask_end>", *(f"<mask_{i}>" for i in range(6))]
"""The tokens Crab's ``initialize_MM_tokenizer`` appends to LLaMA's vocabulary, in that order."""


def tiny_override(tmp: Path, paradigm: Path, corpus: Path, extra: dict | None = None) -> Path:
    """A YAML that swaps a released recipe's full-size components for the tiny paradigm's (same classes)."""
    model = yaml.safe_load(paradigm.read_text())["model"]["init_args"]
    backbone = model["backbone"]["init_args"]
    backbone.update({"name_or_path": None, "torch_dtype": None, "tokenizer_corpus": str(corpus)})
    if "audio_encoder" in model:  # BEATs built from its tiny config, not the recipe's checkpoint file
        model["audio_encoder"]["init_args"]["checkpoint"] = None
    if "visual_encoder" in model:  # the recipe's CLIP layer indices do not exist in the 2-block tiny ViT
        model["visual_encoder"]["init_args"].setdefault("layers", [-1])
    out = tmp / f"tiny-{paradigm.stem}.yaml"
    out.write_text(yaml.safe_dump({"model": {"init_args": {**model, **(extra or {})}}}))
    return out


def tiny_seg_override(tmp: Path, corpus: Path, head: dict | None = None) -> Path:
    """:func:`tiny_override` of the tiny segmentation paradigm with ``head`` (default: the tiny Crab module) and
    the tiny CLIP built from its config (the recipe's hub name is dropped)."""
    out = tiny_override(tmp, TINY_SEG, corpus, {"released": None, "mask_decoder": head or TINY_CRAB_SEG})
    config = yaml.safe_load(out.read_text())
    config["model"]["init_args"]["visual_encoder"]["init_args"]["model"] = None
    out.write_text(yaml.safe_dump(config))
    return out


CRAB_PLUS_PATHS = {"llm": PEFT, "audio_encoder": PEFT + "audio_tower.", "visual_encoder": PEFT + "visual."}
"""Module group -> release path of the group's modules (Crab+: the thinker's towers under peft's wrapper)."""

CRAB_PATHS = {"llm": "base_model."}
"""Crab: the ``llm`` group is the backbone, whose ``model`` is the LLaMA ``*ForCausalLM`` peft wrapped."""


def release_layers(model, paths: dict[str, str]) -> dict[str, torch.nn.Module]:
    """Release module path -> the model's I-LoRA layer adapting it."""
    from crabzoo.adapters.ilora import ILoRALinear

    out = {}
    for group, module in model.module_groups().items():
        for name, m in module.named_modules():
            if isinstance(m, ILoRALinear):
                out[paths[group] + name] = m
    return out


def random_ilora(layers: dict[str, torch.nn.Module], seed: int, dtype: torch.dtype) -> dict[str, Tensor]:
    """Random ``lora_A`` / ``lora_B<i>`` / ``lora_route`` tensors of the official layer for each release path."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Tensor] = {}
    for key, layer in layers.items():
        out[f"{key}.lora_A.weight"] = torch.randn(layer.rank, layer.in_features, generator=gen).to(dtype)
        for i in range(layer.n_heads):
            out[f"{key}.lora_B{i}.weight"] = torch.randn(layer.out_features, layer.rank, generator=gen).to(dtype)
        out[f"{key}.lora_route.weight"] = torch.randn(layer.n_heads, layer.in_features, generator=gen).to(dtype)
    return out


def write_crab_plus_release(model, folder: Path, seed: int = 0) -> tuple[Path, dict[str, Tensor]]:
    """``folder/finetune_weights.bin`` for an omni model: the thinker's I-LoRA in bf16, as Crab+ trains it."""
    state = random_ilora(release_layers(model, CRAB_PLUS_PATHS), seed, torch.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "finetune_weights.bin"
    torch.save(state, path)
    return path, state


def crab_projector_state(connector, modality: str) -> dict[str, Tensor]:
    """Random weights of ``connector``'s shapes under Crab's projector names (with the unused text-side tensors)."""
    from crabzoo.connectors.qformer import _CRAB_LAYER_KEYS

    inverse = {v: k for k, v in _CRAB_LAYER_KEYS.items()}
    projector = f"{PEFT}model.{'vl' if modality == 'visual' else 'al'}_projector.{modality}_"
    gen = torch.Generator().manual_seed(7 if modality == "visual" else 8)
    out: dict[str, Tensor] = {}
    for key, value in connector.state_dict().items():
        if key.startswith("input_norm."):
            name = f"ln.{key.split('.')[-1]}"
        elif key == "qformer.queries":
            name = "query_tokens"
        elif key.startswith("qformer.embed_norm."):
            name = f"Qformer.bert.embeddings.LayerNorm.{key.split('.')[-1]}"
        elif key.startswith("qformer.layers."):
            _, _, i, rest = key.split(".", 3)
            module, param = rest.rsplit(".", 1)
            name = f"Qformer.bert.encoder.layer.{i}.{inverse[module]}.{param}"
        else:
            name = key  # proj.0.weight ... (Crab's build_mlp has the same Sequential indices)
        out[projector + name] = torch.randn(value.shape, generator=gen)
    hidden = connector.qformer.queries.shape[-1]
    out[projector + "Qformer.bert.embeddings.word_embeddings.weight"] = torch.randn(50, hidden, generator=gen)
    out[projector + "Qformer.bert.encoder.layer.0.intermediate.dense.weight"] = torch.randn(2 * hidden, hidden, generator=gen)
    out[projector + "Qformer.cls.predictions.bias"] = torch.randn(50, generator=gen)
    return out


def write_crab_release(model, folder: Path, seed: int = 0) -> tuple[Path, dict[str, Tensor]]:
    """``folder/finetune_weights.bin`` for a modular model: Crab's stage 2 (projectors + LLM I-LoRA), fp32."""
    state = random_ilora(release_layers(model, CRAB_PATHS), seed, torch.float32)
    state.update(crab_projector_state(model.visual_connector, "visual"))
    state.update(crab_projector_state(model.audio_connector, "audio"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "finetune_weights.bin"
    torch.save(state, path)
    return path, state


def crab_added_rows(model) -> tuple[int, list[int]]:
    """``(base, ids)``: the vocabulary size before Crab's 17 tokens, and each token's id in ``model``'s tokenizer
    (crabzoo adds the same tokens right after the base vocabulary, in its own order)."""
    tok = model.backbone.tokenizer
    ids = [int(tok.convert_tokens_to_ids(t)) for t in CRAB_ADDED]
    return min(ids), ids


def write_crab_seg_release(model, folder: Path, name: str = "avs_finetune_weights.bin", seed: int = 0) -> tuple[Path, dict[str, Tensor]]:
    """``folder/<name>``: Crab's stage 3 for a model with a ``CrabSegModule``, fp32 random tensors.

    The module's parameter names are Crab's (checked against Crab's sizes in test_crab_seg.py); the two
    embedding matrices have ``base + 17`` rows in Crab's vocabulary order.
    """
    gen = torch.Generator().manual_seed(seed)
    state = {
        f"{PEFT}model.seg_module.{k}": torch.randn(p.shape, generator=gen)
        for k, p in model.mask_decoder.named_parameters()
    }
    base, _ = crab_added_rows(model)
    width = model.backbone.model.get_input_embeddings().weight.shape[1]
    state[f"{PEFT}model.embed_tokens.weight"] = torch.randn(base + len(CRAB_ADDED), width, generator=gen)
    state[f"{PEFT}lm_head.weight"] = torch.randn(base + len(CRAB_ADDED), width, generator=gen)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    torch.save(state, path)
    return path, state


def assert_crab_seg_equals(model, state: dict[str, Tensor]) -> None:
    """``model`` holds every tensor of a stage-3 file: the module's parameters, and each embedding row under its
    token (Crab's row ``base + i`` is crabzoo's id of ``CRAB_ADDED[i]``)."""
    head = dict(model.mask_decoder.named_parameters())
    seg = {k.removeprefix(f"{PEFT}model.seg_module."): v for k, v in state.items() if ".seg_module." in k}
    assert set(seg) == set(head)
    for k, v in seg.items():
        assert torch.equal(head[k].detach().float(), v), k
    base, ids = crab_added_rows(model)
    llm = model.backbone.model
    for key, module in ((f"{PEFT}model.embed_tokens.weight", llm.get_input_embeddings()),
                        (f"{PEFT}lm_head.weight", llm.get_output_embeddings())):
        weight, rows = module.weight.detach().float(), state[key]
        assert torch.equal(weight[:base], rows[:base].to(weight.dtype)), key
        for i, token_id in enumerate(ids):
            assert torch.equal(weight[token_id], rows[base + i].to(weight.dtype)), (key, CRAB_ADDED[i])


def expected_counts(data_root: Path, tasks: tuple[str, ...]) -> dict[str, int]:
    """Test samples per task, capped at the runs' max_val_per_task of 2."""
    return {t: min(2, len(json.loads((data_root / "AVUIE_2" / t / "test.json").read_text()))) for t in tasks}


def run_test_command(recipe: Path, override: Path, weights: Path | str, data_root: Path, tasks: str, run_dir: Path) -> dict:
    """``crabzoo test`` of ``recipe`` + ``override`` on the tiny data (2 samples per task), weights from ``weights``
    (a path, or a YAML list of paths); returns its results.json."""
    from crabzoo.lightning_cli import run_lightning_cli

    KeepModel.models.clear()
    run_lightning_cli([
        "test", "--config", str(recipe), "--config", str(override), "--model.init_args.released", str(weights),
        "--model.init_args.max_new_tokens", "4", "--data.init_args.root", str(data_root),
        "--data.init_args.tasks", tasks, "--data.init_args.num_workers", "0", "--data.init_args.batch_size", "2",
        "--data.init_args.max_val_per_task", "2", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
        "--trainer.precision", "32", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(run_dir), "--trainer.callbacks+=released_helpers.KeepModel",
    ])
    (results,) = run_dir.rglob("results.json")
    return json.loads(results.read_text())


def assert_ilora_equals(model, paths: dict[str, str], state: dict[str, Tensor]) -> int:
    """Every adapted layer of ``model`` holds the written tensors exactly; returns the layer count."""
    layers = release_layers(model, paths)
    assert layers and len(state) >= len(layers) * 3
    for key, layer in layers.items():
        assert torch.equal(layer.lora_A.detach().float(), state[f"{key}.lora_A.weight"].float()), key
        assert torch.equal(layer.lora_route.detach().float(), state[f"{key}.lora_route.weight"].float()), key
        for i in range(layer.n_heads):
            assert torch.equal(layer.head(i).detach().float(), state[f"{key}.lora_B{i}.weight"].float()), (key, i)
    return len(layers)


class KeepModel(L.Callback):
    """Keeps the module a ``crabzoo test`` run tested (in :attr:`models`), so a test can read its weights."""

    models: ClassVar[list[L.LightningModule]] = []

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        KeepModel.models.append(pl_module)
