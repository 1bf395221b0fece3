"""SegmentationAVLLM: Crab's mask-token branch on a tiny model and a small AVSynth s4 set."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

TINY_LLAMA = {
    "model_type": "llama", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024,
}
TINY_BEATS = {
    "encoder_layers": 2, "embed_dim": 32, "encoder_embed_dim": 64, "encoder_ffn_embed_dim": 128,
    "encoder_attention_heads": 4, "conv_pos": 16, "conv_pos_groups": 4, "finetuned_model": False,
}
TINY_CLIP = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 2,
             "image_size": 64, "patch_size": 16}
MASK_SIZE = 56


@pytest.fixture(scope="module")
def s4_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from crabzoo.data.avsynth import synthesize

    out = tmp_path_factory.mktemp("segdata")
    synthesize(out, clips=8, seed=0, tasks=["s4"], soundtrack=False)
    return out


@pytest.fixture(scope="module")
def tokenizer_dir(s4_root: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tokenizer trained once on the s4 set's text, saved for every model of this module."""
    from crabzoo.backbones.tokenizer import avsynth_corpus, train_tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(avsynth_corpus(str(s4_root / "AVUIE_2")), vocab_size=512).save_pretrained(str(out))
    return str(out)


def build_model(tokenizer_dir: str, **kwargs):
    from crabzoo.backbones.hf_causal_lm import HFCausalLM
    from crabzoo.connectors import MLPConnector
    from crabzoo.encoders.beats import BEATsEncoder
    from crabzoo.encoders.clip import HFClipEncoder
    from crabzoo.heads.mask_decoder import MaskDecoder
    from crabzoo.paradigms.modular import SegmentationAVLLM

    torch.manual_seed(0)
    backbone = HFCausalLM(config=TINY_LLAMA, tokenizer=tokenizer_dir, mask_tokens=True)
    decoder = functools.partial(MaskDecoder, prompt_dim=32, depth=1, num_heads=2, mlp_dim=64, mask_size=MASK_SIZE)
    return SegmentationAVLLM(
        backbone,
        audio_encoder=BEATsEncoder(config=TINY_BEATS),
        visual_encoder=HFClipEncoder(config=TINY_CLIP, layers=[1, 2, 3]),
        audio_connector=functools.partial(MLPConnector, pool=8),
        visual_connector=functools.partial(MLPConnector, pool=2, pool_mode="2d"),
        mask_decoder=decoder,
        **{"max_new_tokens": 8, **kwargs},
    )


@pytest.fixture(scope="module")
def model(tokenizer_dir: str):
    return build_model(tokenizer_dir)


@pytest.fixture(scope="module")
def samples(s4_root: Path):
    from crabzoo.data.avuie import read_split

    return read_split(s4_root, "s4", "test").samples[:2]


@pytest.fixture(scope="module")
def batch(model, samples):
    processor = model.make_processor()
    return processor.collate([processor(s) for s in samples])


def suffix_ids(model) -> list[int]:
    tok = model.backbone.tokenizer
    return tok.convert_tokens_to_ids(["<mask_start>", *[f"<mask_{i}>" for i in range(6)], "<mask_end>"])


def test_processor_appends_suffix_and_loads_gt_mask(model, samples):
    from PIL import Image

    from crabzoo.data.collate import Processor

    processor = model.make_processor()
    plain = Processor(backbone=model.backbone, audio_encoder=model.audio_encoder, visual_encoder=model.visual_encoder)
    sample = samples[0]
    item = processor(sample)
    base = plain(sample)
    ids = item["target_ids"].tolist()
    eos = model.backbone.tokenizer.eos_token_id
    # the task's own target text, unchanged, then the eight mask tokens, then EOS
    assert ids[: len(base["target_ids"]) - 1] == base["target_ids"][:-1].tolist()
    assert ids[len(base["target_ids"]) - 1 :] == suffix_ids(model) + [eos]
    assert torch.equal(item["prompt_ids"], base["prompt_ids"])
    # the mask equals the ground-truth PNG (non-zero = foreground), nearest-resized to the decoder's size
    with Image.open(sample.truth["mask_path"]) as img:
        gt = np.asarray(img.convert("L").resize((MASK_SIZE, MASK_SIZE), Image.NEAREST)) != 0
    assert item["has_mask"] is True
    assert item["mask"].dtype == torch.bool and item["mask"].shape == (MASK_SIZE, MASK_SIZE)
    assert np.array_equal(item["mask"].numpy(), gt)
    assert 0 < gt.sum() < gt.size
    # collate stacks masks and flags; a sample without a mask gets a zero mask and has_mask False
    no_mask = {**base, "mask": None, "has_mask": False}
    batch = processor.collate([item, no_mask])
    assert batch["masks"].shape == (2, MASK_SIZE, MASK_SIZE)
    assert batch["has_mask"].tolist() == [True, False]
    assert not batch["masks"][1].any()


def test_suffix_survives_truncation(model, samples):
    processor = model.make_processor()
    processor.max_target_tokens = 12
    ids = processor(samples[0])["target_ids"].tolist()
    assert len(ids) == 12 + 1
    assert ids[-9:-1] == suffix_ids(model)


def test_spliced_positions_point_at_the_tokens(model, batch):
    raw = model.encode_raw(batch)
    media = model._embeddings(raw)
    inputs, _, _ = model.splice(batch["input_ids"], batch["labels"], media)
    positions = model._spliced_positions(batch["input_ids"], media, inputs.shape[1])
    for b, seq in enumerate(batch["input_ids"]):
        keep = torch.ones_like(seq, dtype=torch.bool)
        for kind in ("video", "image", "audio"):
            keep &= seq != model.backbone.placeholder_id(kind)
        expected = model.backbone.embed(seq[keep].unsqueeze(0))[0]
        assert torch.equal(inputs[b, positions[b][keep]], expected)


def test_training_step_losses_and_gradients(model, batch):
    model.train()
    model.zero_grad()
    out = model(batch)
    assert torch.isfinite(out["lm_loss"]) and out["lm_loss"] > 0
    assert torch.isfinite(out["mask_loss"]) and out["mask_loss"] > 0
    torch.testing.assert_close(out["loss"], out["lm_loss"] + model.mask_weight * out["mask_loss"])
    out["loss"].backward()
    decoder_grads = [p.grad for p in model.mask_decoder.parameters() if p.requires_grad]
    assert decoder_grads and all(g is not None for g in decoder_grads)
    assert sum(float(g.abs().sum()) for g in decoder_grads) > 0
    # the prompt MLP sees the mask tokens' hidden states, so the LLM path feeds the decoder
    assert float(model.mask_decoder.prompt_mlp[0].weight.grad.abs().sum()) > 0
    assert float(model.visual_connector.parameters().__next__().grad.abs().sum()) > 0
    assert all(p.grad is None for p in model.visual_encoder.parameters())
    assert all(p.grad is None for p in model.backbone.parameters())
    assert set(model.module_groups()) >= {"llm", "connector", "head"}
    model.zero_grad()


def test_mask_loss_zero_without_masks(model, batch):
    no_masks = {**batch, "has_mask": torch.zeros(len(batch["tasks"]), dtype=torch.bool)}
    model.zero_grad()
    out = model(no_masks)
    assert float(out["mask_loss"]) == 0.0
    torch.testing.assert_close(out["loss"], out["lm_loss"])
    out["loss"].backward()  # every decoder weight gets a (zero) gradient, as DDP requires
    grads = [p.grad for p in model.mask_decoder.parameters()]
    assert all(g is not None and not g.any() for g in grads)
    model.zero_grad()


def test_decode_masks_from_hand_built_generation(model, batch):
    tok = model.backbone.tokenizer
    text = tok("The object making the sound is engine.", add_special_tokens=False)["input_ids"]
    eos, pad = tok.eos_token_id, tok.pad_token_id
    with_tokens = text + suffix_ids(model) + [eos, pad]
    without = text + [eos] + [pad] * (len(with_tokens) - len(text) - 1)
    model.eval()
    masks, found = model.decode_masks(batch, torch.tensor([with_tokens, without]))
    assert masks.shape == (2, MASK_SIZE, MASK_SIZE) and masks.dtype == torch.bool
    assert found.tolist() == [True, False]
    assert not masks[1].any()
    # the decoded mask is the decoder's prediction on the same hidden states as a teacher-forced pass
    forced = {**batch, "input_ids": [torch.cat([p, torch.tensor(with_tokens[:-2])]) for p in batch["prompt_ids"]]}
    raw = model.encode_raw(forced)
    media = model._embeddings(raw)
    inputs, attention, _ = model.splice(forced["input_ids"], None, media)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        _, hidden = model.backbone(inputs, attention, positions, output_hidden_states=True)
        spliced = model._spliced_positions(forced["input_ids"], media, inputs.shape[1])
        states = model._mask_states(forced["input_ids"], spliced, hidden, [0])
        layers = [layer[:1] for layer in model.visual_layers(raw)]
        expected = model.mask_decoder.predict(model.mask_decoder(states, layers))
    assert torch.equal(masks[:1], expected)


def test_mask_prediction_scored_directly(model, batch):
    """Mask predictions go straight to the AVSBench metric: a full-size GT mask scores 1, a coarse one its IoU."""
    from crabzoo.tasks import get_task
    from crabzoo.tasks.masks import read_mask, resize_mask

    truths = batch["truths"]
    gts = [read_mask(t["mask_path"], (224, 224)) for t in truths]
    metric = get_task("s4").make_metric()
    metric.update([{"exists": True, "category": t["category"], "mask": g} for t, g in zip(truths, gts)], truths)
    out = metric.compute()
    assert float(out["miou"]) == pytest.approx(1.0, abs=1e-6)
    assert int(out["n_total"]) == int(out["n_parsed"]) == 2
    # the decoder-size masks of the batch, upsampled (nearest) to 224: mIoU = mean of the frames' IoU
    coarse = [m.numpy() for m in batch["masks"]]
    ious = []
    for m, g in zip(coarse, gts):
        up = resize_mask(m, (224, 224))
        ious.append((up & g).sum() / (up | g).sum())
    metric = get_task("s4").make_metric()
    metric.update([{"exists": True, "category": t["category"], "mask": m} for t, m in zip(truths, coarse)], truths)
    assert float(metric.compute()["miou"]) == pytest.approx(float(np.mean(ious)), abs=1e-5)
    assert float(np.mean(ious)) < 1.0


def test_stage_checkpoint_loads_without_mask_decoder(model, tokenizer_dir, tmp_path):
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("mask_decoder.")}
    path = tmp_path / "stage2.ckpt"
    torch.save({"state_dict": state}, path)
    other = build_model(tokenizer_dir, init_checkpoint=str(path), train_groups=["head"], train_embeddings=True)
    for name, value in state.items():
        assert torch.equal(other.state_dict()[name], value), name
    trainable = {n.split(".")[0] for n, p in other.named_parameters() if p.requires_grad}
    assert trainable == {"backbone", "mask_decoder"}
    emb = other.backbone.model.get_input_embeddings().weight
    assert emb.requires_grad and not other.backbone.model.get_decoder().layers[0].self_attn.q_proj.weight.requires_grad


def test_missing_extra_layers_is_a_clear_error(tokenizer_dir):
    from crabzoo.errors import CrabzooError

    with pytest.raises(CrabzooError, match="seg_layers"):
        build_model(tokenizer_dir, seg_layers=[3])


@pytest.mark.slow
def test_fit_and_validate_end_to_end(s4_root, tokenizer_dir, tmp_path):
    import lightning as L

    from crabzoo.data.datamodule import AVUIEDataModule
    from crabzoo.paradigms.modular import StageWeights

    model = build_model(tokenizer_dir)
    dm = AVUIEDataModule(str(s4_root), tasks=["s4"], batch_size=2, max_val_per_task=4)
    trainer = L.Trainer(max_steps=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=2, default_root_dir=str(tmp_path), callbacks=[StageWeights()])
    trainer.fit(model, dm)
    metrics = trainer.validate(model, dm, verbose=False)[0]
    assert np.isfinite(metrics["val/loss"]) and np.isfinite(metrics["val/mask_loss"])
    result = model.results["s4"]
    assert result["n_total"] == 4
    assert 0 <= result["n_parsed"] <= 4
    assert 0.0 <= result["miou"] <= 1.0
    assert "val/s4/miou" in metrics
    assert 0.0 <= metrics["val/s4/mask_decoded"] <= 1.0
    # the run's trainable weights, written by StageWeights, are the next stage's init_checkpoint
    weights = tmp_path / "weights.safetensors"
    assert weights.is_file()
    from safetensors.torch import load_file

    saved = load_file(str(weights))
    assert set(saved) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(k.startswith("mask_decoder.") for k in saved) and any(k.startswith("visual_connector.") for k in saved)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.mask_decoder.parameters():
            p.zero_()
    model.load_stage(str(weights))
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    # a file holding pickled objects (here a function) is refused with a pointer to the safetensors file
    from crabzoo.errors import CrabzooError

    unsafe = tmp_path / "unsafe.pt"
    torch.save({"state_dict": saved, "optimizer": build_model}, unsafe)
    with pytest.raises(CrabzooError, match="weights.safetensors"):
        model.load_stage(str(unsafe))
