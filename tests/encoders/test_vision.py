"""CLIP (open_clip, transformers) and timm ViT encoders: offline checkpoints, layer selection, preprocessing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from crabzoo.encoders.clip import ClipEncoder, HFClipEncoder
from crabzoo.encoders.common import CLIP_MEAN, CLIP_STD, frames_to_pixels
from crabzoo.encoders.timm_vit import TimmViTEncoder
from crabzoo.errors import CrabzooError

from .encoders_helpers import TINY_CLIP_VISION, TINY_OPEN_CLIP, visual_clip


def test_open_clip_local_dir_and_state_dict_file(open_clip_dir) -> None:
    import open_clip

    enc = ClipEncoder(f"local-dir:{open_clip_dir}", layers=[1, 2, 3])
    x = enc.preprocess(visual_clip(3))
    assert x.shape == (3, 3, 32, 32) and enc.mean == pytest.approx(CLIP_MEAN)
    feats = enc(x.unsqueeze(0))
    assert feats.tokens.shape == (1, 3, 16, 64) and sorted(feats.extra_layers) == [1, 2]
    # hidden state i = output of block i, CLS dropped
    ref = open_clip.create_model(f"local-dir:{open_clip_dir}").visual.eval()
    out = ref.forward_intermediates(x, indices=[0, 2], intermediates_only=True, output_fmt="NLC", output_extra_tokens=True)
    assert torch.allclose(feats.tokens[0], out["image_intermediates"][1], atol=1e-6)
    assert torch.allclose(feats.extra_layers[1][0], out["image_intermediates"][0], atol=1e-6)
    # a named architecture built with pretrained=None, then the same weights from a state-dict file
    config_file = open_clip_dir / "crabzoo-tiny-vit.json"
    config_file.write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(config_file)  # registers the architecture "crabzoo-tiny-vit"
    ckpt = open_clip_dir / "weights.pt"
    torch.save(ref_state(open_clip_dir), ckpt)
    named = ClipEncoder("crabzoo-tiny-vit", pretrained=str(ckpt), layers=[1, 2, 3])
    assert torch.allclose(named(x.unsqueeze(0)).tokens, feats.tokens, atol=1e-6)


def ref_state(folder) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "open_clip_model.safetensors"))


def test_open_clip_rejects_embedding_layer(open_clip_dir) -> None:
    with pytest.raises(CrabzooError, match="index 0"):
        ClipEncoder(f"local-dir:{open_clip_dir}", layers=[0, -1])
    with pytest.raises(CrabzooError, match="out of range"):
        ClipEncoder(f"local-dir:{open_clip_dir}", layers=[7])


def test_hf_clip_save_and_reload(tmp_path) -> None:
    torch.manual_seed(0)
    enc = HFClipEncoder(config=TINY_CLIP_VISION, layers=[0, 2, -1])
    x = enc.preprocess(visual_clip(2)).unsqueeze(0)
    feats = enc(x)
    assert feats.tokens.shape == (1, 2, 16, 32) and sorted(feats.extra_layers) == [0, 2]
    with torch.no_grad():
        hidden = enc.clip(pixel_values=x[0], output_hidden_states=True).hidden_states
    assert len(hidden) == 4
    assert torch.allclose(feats.tokens[0], hidden[3][:, 1:]) and torch.allclose(feats.extra_layers[0][0], hidden[0][:, 1:])
    enc.save_pretrained(str(tmp_path / "clip"))
    reloaded = HFClipEncoder.from_pretrained(str(tmp_path / "clip"), layers=[0, 2, -1])
    assert torch.equal(reloaded(x).tokens, feats.tokens)


def test_timm_vit_checkpoints(tmp_path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    kwargs = {"depth": 2}
    enc = TimmViTEncoder("vit_tiny_patch16_224", image_size=32, model_kwargs=kwargs, layers=[1, 2])
    x = enc.preprocess(visual_clip(2)).unsqueeze(0)
    feats = enc(x)
    assert feats.tokens.shape == (1, 2, 4, 192) and sorted(feats.extra_layers) == [1]
    state = {k: v.contiguous() for k, v in enc.vit.state_dict().items()}
    save_file(state, str(tmp_path / "vit.safetensors"))
    torch.save(state, tmp_path / "vit.pt")
    for name in ("vit.safetensors", "vit.pt"):
        reloaded = TimmViTEncoder("vit_tiny_patch16_224", str(tmp_path / name), image_size=32, model_kwargs=kwargs, layers=[1, 2])
        assert torch.equal(reloaded(x).tokens, feats.tokens)
    state.pop("blocks.1.mlp.fc1.weight")
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CrabzooError, match="blocks.1.mlp.fc1.weight"):
        TimmViTEncoder("vit_tiny_patch16_224", str(tmp_path / "bad.pt"), image_size=32, model_kwargs=kwargs)


def test_frames_to_pixels() -> None:
    frames = np.full((1, 8, 8, 3), 255, dtype=np.uint8)
    frames[..., 1] = 0
    pixels = frames_to_pixels(frames, 8, CLIP_MEAN, CLIP_STD)  # no resize at the native size
    expected = [(1 - CLIP_MEAN[0]) / CLIP_STD[0], (0 - CLIP_MEAN[1]) / CLIP_STD[1], (1 - CLIP_MEAN[2]) / CLIP_STD[2]]
    assert torch.allclose(pixels[0, :, 0, 0], torch.tensor(expected))
    resized = frames_to_pixels(frames, (4, 6), CLIP_MEAN, CLIP_STD)  # a constant image stays constant
    assert resized.shape == (1, 3, 4, 6) and torch.allclose(resized[0, :, 2, 3], torch.tensor(expected), atol=1e-5)
    with pytest.raises(ValueError, match="RGB"):
        frames_to_pixels(np.zeros((2, 8, 8), dtype=np.uint8), 8, CLIP_MEAN, CLIP_STD)
