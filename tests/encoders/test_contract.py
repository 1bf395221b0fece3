"""One contract test for every encoder at tiny size: shapes, time axis, padding, freezing, gradients, YAML."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from crabzoo.encoders.base import AudioEncoder, MediaEncoder, VisualEncoder

from .encoders_helpers import TINY_CLIP_VISION, TINY_WHISPER, audio_clip, visual_clip

# name -> (class path, init args builder (gets the fixtures), modality, tokens per step, width)
CASES = {
    "beats": ("crabzoo.encoders.BEATsEncoder", lambda d: {"config": {"encoder_layers": 2, "embed_dim": 32, "encoder_embed_dim": 64,
              "encoder_ffn_embed_dim": 128, "encoder_attention_heads": 4, "conv_pos": 16, "conv_pos_groups": 4,
              "encoder_layerdrop": 0.0, "finetuned_model": False}}, "audio", 48, 64),
    "whisper": ("crabzoo.encoders.WhisperAudioEncoder", lambda d: {"model": str(d["whisper"])}, "audio", 50, 32),
    "whisper-crop": ("crabzoo.encoders.WhisperAudioEncoder", lambda d: {"config": TINY_WHISPER, "mode": "crop"}, "audio", 50, 32),
    "open_clip": ("crabzoo.encoders.ClipEncoder", lambda d: {"model_name": f"local-dir:{d['open_clip']}", "layers": [1, 3]}, "visual", 16, 64),
    "hf_clip": ("crabzoo.encoders.HFClipEncoder", lambda d: {"config": TINY_CLIP_VISION, "layers": [1, -1]}, "visual", 16, 32),
    "timm": ("crabzoo.encoders.TimmViTEncoder", lambda d: {"model_name": "vit_tiny_patch16_224", "image_size": 32,
             "model_kwargs": {"depth": 2}, "layers": [1, -1]}, "visual", 4, 192),
    "dinov2": ("crabzoo.encoders.Dinov2Encoder", lambda d: {"config": {"hidden_size": 32, "num_hidden_layers": 2,
               "num_attention_heads": 4, "mlp_ratio": 2, "patch_size": 8, "image_size": 16}, "image_size": 32,
               "layers": [1, -1], "cls_token": True}, "visual", 17, 32),  # positions for 2x2 patches, resized to 4x4
}  # fmt: skip


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, whisper_dir, open_clip_dir):
    """(encoder built from YAML-style init args, modality, N, D)."""
    from jsonargparse import ArgumentParser

    class_path, args, modality, n, d = CASES[request.param]
    base = AudioEncoder if modality == "audio" else VisualEncoder
    parser = ArgumentParser()
    parser.add_argument("--encoder", type=base)
    torch.manual_seed(0)
    cfg = parser.parse_object({"encoder": {"class_path": class_path, "init_args": args({"whisper": whisper_dir, "open_clip": open_clip_dir})}})
    encoder = parser.instantiate(cfg).encoder
    return encoder, modality, n, d


def clip_of(modality: str, t: int, seed: int = 0):
    return audio_clip(t, seed=seed) if modality == "audio" else visual_clip(t, seed=seed)


def test_contract_attributes(case) -> None:
    enc, modality, n, d = case
    assert isinstance(enc, MediaEncoder) and enc.modality == modality
    assert enc.module_group == f"{modality}_encoder" and enc.out_dim == d
    json.dumps(enc.preprocess_config())
    assert isinstance(enc.block_cls, type) and any(isinstance(m, enc.block_cls) for m in enc.modules())
    names = [name.rsplit(".", 1)[-1] for name, m in enc.named_modules() if isinstance(m, nn.Linear)]
    assert enc.adapter_targets and all(t in names for t in enc.adapter_targets)
    assert len(enc.fingerprint()) == 16


def test_preprocess_and_forward_shapes(case) -> None:
    enc, modality, n, d = case
    x = enc.preprocess(clip_of(modality, 3))
    assert x.dtype == torch.float32 and x.device.type == "cpu" and x.shape[0] == 3
    times = torch.tensor([[0.0, 1.0, 2.0]]) + 5
    feats = enc(x.unsqueeze(0), times)
    assert feats.tokens.shape == (1, 3, n, d) and feats.tokens.dtype == torch.float32
    assert torch.equal(feats.timestamps, times) and feats.mask.all()
    assert torch.equal(enc(x.unsqueeze(0)).timestamps, torch.tensor([[0.0, 1.0, 2.0]]))


def test_frozen_by_default_and_deterministic(case) -> None:
    enc, modality, *_ = case
    assert not any(p.requires_grad for p in enc.parameters()) and not enc.training
    x = enc.preprocess(clip_of(modality, 2)).unsqueeze(0)
    a, b = enc(x).tokens, enc(x).tokens
    assert not a.requires_grad and torch.equal(a, b)


def test_padded_batch_matches_single_samples(case) -> None:
    enc, modality, n, d = case
    long, short = enc.preprocess(clip_of(modality, 3, seed=1)), enc.preprocess(clip_of(modality, 2, seed=2))
    batch = long.new_zeros(2, *long.shape)
    batch[0], batch[1, :2] = long, short
    mask = torch.tensor([[True, True, True], [True, True, False]])
    feats = enc(batch, torch.tensor([[0.0, 1, 2], [0, 1, 0]]), mask)
    assert feats.tokens.shape == (2, 3, n, d) and torch.equal(feats.mask, mask)
    assert torch.allclose(feats.tokens[0], enc(long.unsqueeze(0)).tokens[0], atol=1e-5)
    assert torch.allclose(feats.tokens[1, :2], enc(short.unsqueeze(0)).tokens[0], atol=1e-5)
    assert feats.tokens[1, 2].abs().sum() == 0
    assert enc(batch, mask=torch.zeros(2, 3, dtype=torch.bool)).tokens.abs().sum() == 0


def test_gradients_flow_when_unfrozen(case) -> None:
    enc, modality, *_ = case
    x = enc.preprocess(clip_of(modality, 2)).unsqueeze(0)
    enc.requires_grad_(True)
    try:
        enc(x).tokens.square().mean().backward()
        blocks = [m for m in enc.modules() if isinstance(m, enc.block_cls)]
        first = [p for p in blocks[0].parameters() if p.grad is not None]
        assert first and any(p.grad.abs().sum() > 0 for p in first)
    finally:
        enc.zero_grad(set_to_none=True)
        enc.requires_grad_(False)


def test_bfloat16_weights(case) -> None:
    import copy

    enc, modality, n, d = case
    x = enc.preprocess(clip_of(modality, 2)).unsqueeze(0)  # float32 inputs are cast to the weights' dtype
    reference = enc(x).tokens
    half = copy.deepcopy(enc).to(torch.bfloat16)
    tokens = half(x).tokens
    assert tokens.dtype == torch.bfloat16 and tokens.shape == (1, 2, n, d)
    rel = (tokens.float() - reference).norm() / reference.norm()
    assert rel < 0.1


def test_accepts_the_collators_batch(case) -> None:
    from crabzoo.data.collate import Processor

    enc, modality, n, d = case
    items = []
    for i, t in enumerate((3, 1)):
        clip = clip_of(modality, t, seed=i)
        times = clip.starts if modality == "audio" else clip.timestamps
        items.append({
            "id": str(i), "task": "ave", "truth": {}, "meta": {}, "prompt_ids": torch.ones(2, dtype=torch.long),
            "target_ids": torch.ones(1, dtype=torch.long),
            "media": {modality: {"inputs": enc.preprocess(clip), "timestamps": torch.as_tensor(times, dtype=torch.float32)}},
        })  # fmt: skip
    media = Processor.collate(items)["media"][modality]
    feats = enc(media["inputs"], media["timestamps"], media["mask"])
    assert feats.tokens.shape == (2, 3, n, d)
    assert feats.mask.tolist() == [[True, True, True], [True, False, False]]
    assert torch.equal(feats.timestamps, media["timestamps"])
    assert torch.allclose(feats.tokens[1, 0], enc(items[1]["media"][modality]["inputs"].unsqueeze(0)).tokens[0, 0], atol=1e-5)
