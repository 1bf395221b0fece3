"""OmniAVLLM: the native omni paradigm (Crab+ on a tiny Qwen2.5-Omni thinker) on a small AVSynth set.

The thinker is the shipped tiny config (paradigms/tiny/omni.yaml); the adapter is the Crab+ recipe's
(recipes/crab_plus/omni-ilora.yaml), both read from the YAML files.
"""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
TINY_YAML = ROOT / "paradigms" / "tiny" / "omni.yaml"
RECIPE_YAML = ROOT / "recipes" / "crab_plus" / "omni-ilora.yaml"
FRAME = 56  # tiny frame size: 4 x 4 patches of 14 px, merged 2 x 2 -> 4 tokens per pair of frames
LLM = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from crabzoo.data.avsynth import synthesize

    out = tmp_path_factory.mktemp("omnidata")
    synthesize(out, clips=12, seed=0, tasks=["ks", "s4", "a2v"], soundtrack=False)
    return out


def tiny_backbone(root: Path):
    from crabzoo.backbones.qwen_omni import QwenOmniThinker

    args = yaml.safe_load(TINY_YAML.read_text())["model"]["init_args"]["backbone"]["init_args"]
    return QwenOmniThinker(**{**args, "tokenizer_corpus": str(root / "AVUIE_2")})


def crab_plus_adapter():
    from crabzoo.adapters import ILoRA

    args = yaml.safe_load(RECIPE_YAML.read_text())["model"]["init_args"]["adapter"]["init_args"]
    return ILoRA(**args)


def build(root: Path, **kwargs):
    from crabzoo.paradigms.omni import OmniAVLLM

    torch.manual_seed(0)
    return OmniAVLLM(tiny_backbone(root), frame_size=FRAME, **{"max_new_tokens": 8, **kwargs})


@pytest.fixture(scope="module")
def plain(root: Path):
    return build(root)


def adapted_by_group(model) -> dict[str, Counter]:
    from crabzoo.adapters.ilora import ILoRALinear

    found: dict[str, Counter] = {}
    for group, module in model.module_groups().items():
        kinds = Counter(name.rsplit(".", 1)[-1] for name, m in module.named_modules() if isinstance(m, ILoRALinear))
        if kinds:
            found[group] = kinds
    return found


def test_crab_plus_placement_on_tiny_thinker(root):
    from crabzoo.backbones.params import count_ilora_parameters

    backbone = tiny_backbone(root)
    expected = count_ilora_parameters(backbone.thinker, n_heads=3, rank=128)
    from crabzoo.paradigms.omni import OmniAVLLM

    model = OmniAVLLM(backbone, adapter=crab_plus_adapter(), frame_size=FRAME)
    assert set(model.module_groups()) == {"llm", "audio_encoder", "visual_encoder"}
    # 2 decoder layers x 7 projections; 2 audio layers x q/k/v; 2 vision blocks x gate/up/down; nothing else
    assert adapted_by_group(model) == {
        "llm": Counter({k: 2 for k in LLM}),
        "audio_encoder": Counter({"q_proj": 2, "k_proj": 2, "v_proj": 2}),
        "visual_encoder": Counter({"gate_proj": 2, "up_proj": 2, "down_proj": 2}),
    }
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in n for n in trainable)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected["total"]
    # the paradigm's defaults are the thinker's per-group Crab+ targets (AVLLM defers to the backbone)
    assert {g: tuple(v) for g, v in model.default_adapter_targets().items()} == {
        "llm": LLM,
        "audio_encoder": ("q_proj", "k_proj", "v_proj"),
        "visual_encoder": ("gate_proj", "up_proj", "down_proj"),
    }


def _sample(root: Path, task: str):
    from crabzoo.data.avuie import read_split

    return read_split(root, task, "train").samples[0]


@pytest.mark.parametrize(
    ("task", "layout"),
    [
        ("ks", [("vision", "<|VIDEO|>", 20), ("audio", "<|AUDIO|>", 250)]),  # 10 frames; 10 x 1-s segments
        ("s4", [("vision", "<|IMAGE|>", 4), ("audio", "<|AUDIO|>", 25)]),  # one image; one 1-s segment
        ("a2v", [("audio", "<|AUDIO|>", 250), ("vision", "<|VIDEO|>", 40)]),  # audio first; 20 joined frames
    ],
)
def test_processor_layout_and_labels(plain, root, task, layout):
    from crabzoo.backbones.qwen_omni import IGNORE_INDEX, SYSTEM_PROMPT
    from crabzoo.tasks import get_task

    sample = _sample(root, task)
    spec = get_task(task)
    processor = plain.make_processor()
    item = processor(sample)
    tok = plain.backbone.tokenizer
    media = "".join(f"<|{w}_bos|>{ph * n}<|{w}_eos|>" for w, ph, n in layout)
    prompt = (
        f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{spec.header}{media}{sample.instruction}"
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tok.decode(item["prompt"]["input_ids"][0]) == prompt
    ids, labels = item["inputs"]["input_ids"][0], item["inputs"]["labels"][0]
    assert tok.decode(ids) == prompt + sample.target + "<|im_end|>\n"
    supervised = (labels != IGNORE_INDEX).nonzero().flatten()
    begin, end = int(supervised[0]), int(supervised[-1])
    assert supervised.tolist() == list(range(begin, end + 1))  # one contiguous span: the assistant turn
    assert tok.decode(ids[begin : end + 1]) == "\n" + sample.target + "<|im_end|>"
    assert torch.equal(labels[begin : end + 1], ids[begin : end + 1])
    assert end == ids.shape[0] - 2  # the template's trailing newline is not supervised
    n_prompt = item["prompt"]["input_ids"].shape[1]
    assert torch.equal(item["prompt"]["input_ids"][0, :begin], ids[:begin]) and n_prompt >= begin
    # the thinker's own media inputs: Whisper frames (100 per second) and Qwen2-VL grids
    n_audio = dict((ph, n) for _, ph, n in layout)["<|AUDIO|>"]
    assert int(item["inputs"]["feature_attention_mask"].sum()) == n_audio * 4
    grid = item["inputs"]["image_grid_thw" if task == "s4" else "video_grid_thw"].tolist()
    assert grid == {"ks": [[5, 4, 4]], "s4": [[1, 4, 4]], "a2v": [[10, 4, 4]]}[task]


def test_collate_pads_training_right_and_prompts_left(plain, root):
    from crabzoo.data.avuie import read_split

    processor = plain.make_processor()
    samples = read_split(root, "s4", "train").samples[:2]
    items = [processor(s) for s in samples]
    batch = processor.collate([items[0], None, items[1]])
    assert batch["n_skipped"] == 1 and batch["tasks"] == ["s4", "s4"]
    pad = plain.backbone.pad_token_id
    lengths = [it["inputs"]["input_ids"].shape[1] for it in items]
    inputs, prompt = batch["inputs"], batch["prompt"]
    assert inputs["input_ids"].shape == (2, max(lengths))
    for b, n in enumerate(lengths):
        assert int(inputs["attention_mask"][b].sum()) == n and bool((inputs["input_ids"][b, n:] == pad).all())
        m = items[b]["prompt"]["input_ids"].shape[1]
        assert int(prompt["attention_mask"][b].sum()) == m
        width = prompt["input_ids"].shape[1]
        assert torch.equal(prompt["input_ids"][b, width - m :], items[b]["prompt"]["input_ids"][0])
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 4], [1, 4, 4]] and inputs["input_features"].shape[0] == 2
    out = plain(batch)
    assert out["per_sample"].shape == (2,) and torch.isfinite(out["loss"])
    texts = plain.generate(batch, max_new_tokens=3)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_a_test_record_without_reference_text_is_prompted_not_supervised(plain, root):
    # the release's s4 test records hold a mask path, no box and points: no answer can be written for them
    import dataclasses

    from crabzoo.backbones.qwen_omni import IGNORE_INDEX
    from crabzoo.errors import CrabzooError
    from crabzoo.paradigms.base import AVLLM

    processor = plain.make_processor()
    sample = _sample(root, "s4")
    truth = {k: v for k, v in sample.truth.items() if k not in ("box", "points")}
    bare = dataclasses.replace(sample, split="test", target="", truth=truth)
    item = processor(bare)
    assert bool((item["inputs"]["labels"] == IGNORE_INDEX).all())
    tok = plain.backbone.tokenizer
    assert tok.decode(item["prompt"]["input_ids"][0]).endswith("<|im_end|>\n<|im_start|>assistant\n")
    batch = processor.collate([item])
    assert AVLLM._has_target(batch) == [False]
    assert len(plain.generate(batch, max_new_tokens=2)) == 1
    with pytest.raises(CrabzooError, match="box"):  # a training sample still needs its answer
        processor(dataclasses.replace(bare, split="train"))


def test_rejects_a_text_only_backbone():
    from crabzoo.errors import CrabzooError
    from crabzoo.paradigms.omni import OmniAVLLM

    with pytest.raises(CrabzooError, match="native omni backbone"):
        OmniAVLLM(torch.nn.Linear(2, 2))


@pytest.mark.slow
def test_fit_and_validate_tiny_omni(root, tmp_path):
    import lightning as L

    from crabzoo.adapters import ILoRA
    from crabzoo.data.datamodule import AVUIEDataModule

    model = build(root, adapter=ILoRA(groups=["llm", "audio_encoder", "visual_encoder"], n_heads=3, rank=4, alpha=8),
                  optimizer=functools.partial(torch.optim.AdamW, lr=1e-2, weight_decay=0.0))
    frozen = model.backbone.thinker.lm_head.weight.detach().clone()
    dm = AVUIEDataModule(root=str(root), tasks=["ks", "s4"], batch_size=2, max_train_per_task=4, max_val_per_task=2)
    trainer = L.Trainer(
        max_steps=3, accelerator="cpu", limit_val_batches=1, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )
    trainer.fit(model, dm)
    assert trainer.global_step == 3
    assert torch.equal(model.backbone.thinker.lm_head.weight, frozen)  # the base model stays frozen
    heads = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert heads and any(bool(p.abs().sum() > 0) for p in heads)  # zero-init up-projections have moved
    assert torch.isfinite(torch.tensor(float(trainer.callback_metrics["train/loss"])))
    trainer.validate(model, dm)
    assert model.results, "validation produced no metrics"
    task, scores = next(iter(model.results.items()))
    assert task in ("ks", "s4")
    n_val = sum(s.task == task for s in dm.splits["val"])  # one task-homogeneous batch of at most 2 samples
    assert 1 <= n_val <= 2 and scores["n_total"] == n_val and 0 <= scores["n_parsed"] <= n_val
    assert "val/loss" in trainer.callback_metrics and task in model.chance
