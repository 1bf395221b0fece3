"""Qwen2.5-Omni thinker: Crab+ rendering, the model's own media inputs, multimodal forward/generate, round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from backbones_helpers import AV_USER, IMAGE_USER, TINY_OMNI, tiny_omni

from crabzoo.backbones.qwen_omni import IGNORE_INDEX, audio_token_count
from crabzoo.errors import CrabzooError

SYSTEM = {"role": "system", "content": "You are Qwen."}


@pytest.fixture(scope="module")
def omni(corpus_dir):
    return tiny_omni(corpus_dir).eval()


@pytest.fixture(scope="module")
def media():
    rng = np.random.default_rng(0)
    return {
        "audio3": rng.standard_normal(3 * 16000).astype(np.float32),
        "audio2": rng.standard_normal(2 * 16000).astype(np.float32),
        "video": rng.integers(0, 256, (4, 56, 56, 3), dtype=np.uint8),
        "image": rng.integers(0, 256, (56, 84, 3), dtype=np.uint8),
    }


def test_crab_plus_rendering(omni):
    text = omni.render([SYSTEM, AV_USER], add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are Qwen.<|im_end|>\n<|im_start|>user\nThis is a video and an audio:"
        "<|vision_bos|><|VIDEO|><|vision_eos|><|audio_bos|><|AUDIO|><|audio_eos|>Please describe the events."
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    assert omni.placeholders == {"video": "<|VIDEO|>", "image": "<|IMAGE|>", "audio": "<|AUDIO|>"}
    cfg = omni.thinker.config
    assert cfg.audio_token_id == omni.placeholder_id("audio")
    assert cfg.video_token_id == omni.placeholder_id("video")
    assert omni.use_audio_in_video is False


def test_audio_token_count_matches_spec():
    # 10 s -> 1000 mel frames -> 250 tokens; 4 s -> 100; 1 s -> 25 (AVUIE_SPEC 2.2)
    assert [audio_token_count(n) for n in (1000, 400, 100, 2000)] == [250, 100, 25, 500]


def test_prepare_expands_placeholders_and_labels(omni, media):
    chat = [SYSTEM, AV_USER, {"role": "assistant", "content": "<answer>dog</answer>"}]
    x = omni.prepare(chat, audio=[media["audio3"]], videos=[media["video"]])
    ids = x["input_ids"][0]
    assert x["input_features"].shape == (1, 128, 1000)  # padded to audio_max_seconds = 10 s
    assert int(x["feature_attention_mask"].sum()) == 300
    assert int((ids == omni.placeholder_id("audio")).sum()) == audio_token_count(300) == 75
    assert x["video_grid_thw"].tolist() == [[2, 4, 4]]  # 4 frames of 56x56: 2 x 4 x 4 patches
    assert int((ids == omni.placeholder_id("video")).sum()) == 2 * 4 * 4 // 4
    assert x["pixel_values_videos"].shape == (32, 3 * 2 * 14 * 14)
    assert x["video_second_per_grid"].tolist() == [2.0]
    # labels: from the newline after "<|im_start|>assistant" through the first <|im_end|>
    supervised = ids[x["labels"][0] != IGNORE_INDEX]
    assert omni.tokenizer.decode(supervised) == "\n<answer>dog</answer><|im_end|>"
    assert torch.equal(x["labels"][0][x["labels"][0] != IGNORE_INDEX], supervised)
    prompt = omni.prepare([SYSTEM, AV_USER], audio=[media["audio3"]], videos=[media["video"]], add_generation_prompt=True)
    assert (prompt["labels"] == IGNORE_INDEX).all()


def test_prepare_image_and_count_errors(omni, media):
    x = omni.prepare([IMAGE_USER], images=[media["image"]], add_generation_prompt=True)
    assert x["image_grid_thw"].tolist() == [[1, 4, 6]]
    assert int((x["input_ids"] == omni.placeholder_id("image")).sum()) == 6
    with pytest.raises(CrabzooError, match="audio"):
        omni.prepare([AV_USER], videos=[media["video"]])
    with pytest.raises(CrabzooError, match="image"):
        omni.prepare([IMAGE_USER], images=[media["image"], media["image"]])


def test_forward_multimodal_uses_media_and_batches(omni, media):
    a = omni.prepare([AV_USER], audio=[media["audio3"]], videos=[media["video"]], add_generation_prompt=True)
    b = omni.prepare([IMAGE_USER], images=[media["image"]], add_generation_prompt=True)
    with torch.no_grad():
        la = omni.forward_multimodal(**omni.collate([a]))
        lb = omni.forward_multimodal(**omni.collate([b]))
        both = omni.forward_multimodal(**omni.collate([a, b]))
        silent = dict(a, input_features=torch.zeros_like(a["input_features"]))
        ls = omni.forward_multimodal(**omni.collate([silent]))
    assert la.shape == (1, a["input_ids"].shape[1], omni.thinker.config.text_config.vocab_size)
    # right padding: each row of the batch equals its own pass
    torch.testing.assert_close(both[0, : la.shape[1]], la[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both[1, : lb.shape[1]], lb[0], atol=1e-5, rtol=1e-5)
    assert (ls - la).abs().max() > 1e-4  # the audio reaches the logits


@pytest.mark.slow
def test_generate_multimodal_left_padded_batch(omni, media):
    a = omni.prepare([AV_USER], audio=[media["audio3"]], videos=[media["video"]], add_generation_prompt=True)
    c = omni.prepare([SYSTEM, AV_USER], audio=[media["audio2"]], videos=[media["video"]], add_generation_prompt=True)
    single_a = omni.generate_multimodal(4, **omni.collate([a], padding_side="left"))
    single_c = omni.generate_multimodal(4, **omni.collate([c], padding_side="left"))
    batch = omni.generate_multimodal(4, **omni.collate([a, c], padding_side="left"))
    assert batch.shape[0] == 2 and batch.shape[1] <= 4
    assert batch[0, : single_a.shape[1]].tolist() == single_a[0].tolist()
    assert batch[1, : single_c.shape[1]].tolist() == single_c[0].tolist()
    with torch.no_grad():
        first = omni.forward_multimodal(**omni.collate([a]))[0, -1].argmax()
    assert int(single_a[0, 0]) == int(first)


def test_groups_targets_and_layer_classes(omni):
    groups = omni.module_groups()
    assert groups["audio_encoder"] is omni.thinker.model.audio_tower
    assert groups["visual_encoder"] is omni.thinker.model.visual
    names = {n for n, _ in groups["llm"].named_modules()}
    assert "model.layers.0.self_attn.q_proj" in names and "lm_head" in names
    assert omni.default_adapter_targets() == {
        "llm": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        "audio_encoder": ("q_proj", "k_proj", "v_proj"),
        "visual_encoder": ("gate_proj", "up_proj", "down_proj"),
    }
    classes = {k: v.__name__ for k, v in omni.layer_classes.items()}
    assert classes == {"llm": "Qwen2_5OmniDecoderLayer", "audio_encoder": "Qwen2_5OmniAudioEncoderLayer",
                       "visual_encoder": "Qwen2_5OmniVisionBlock"}
    assert not any(p.requires_grad for p in omni.parameters())  # frozen as built
    omni.gradient_checkpointing(True)
    assert omni.language_model.gradient_checkpointing and omni.audio_encoder.gradient_checkpointing
    omni.gradient_checkpointing(False)
    assert not omni.thinker.is_activation_checkpointing


def test_multimodal_round_trip(omni, media, tmp_path):
    from crabzoo.backbones import QwenOmniThinker

    omni.save_pretrained(tmp_path / "omni")
    again = QwenOmniThinker(name_or_path=str(tmp_path / "omni"), audio_max_seconds=10).eval()
    x = omni.prepare([AV_USER], audio=[media["audio3"]], videos=[media["video"]], add_generation_prompt=True)
    y = again.prepare([AV_USER], audio=[media["audio3"]], videos=[media["video"]], add_generation_prompt=True)
    assert all(torch.equal(x[k], y[k]) for k in x)
    with torch.no_grad():
        assert torch.equal(omni.forward_multimodal(**x), again.forward_multimodal(**y))


def test_config_errors(corpus_dir):
    from crabzoo.backbones import QwenOmniThinker

    text = {k: v for k, v in TINY_OMNI["text_config"].items() if k != "rope_parameters"}
    bad = {**TINY_OMNI, "text_config": {**text, "rope_scaling": {"mrope_section": [2, 1, 1]}}}
    with pytest.raises(CrabzooError, match="mrope_section"):
        QwenOmniThinker(config=bad, tokenizer_corpus=str(corpus_dir))
    with pytest.raises(CrabzooError, match="exactly one"):
        QwenOmniThinker()
    audio_in_video = tiny_omni(corpus_dir, use_audio_in_video=True)
    with pytest.raises(CrabzooError, match="use_audio_in_video"):
        audio_in_video.prepare([AV_USER])


def test_loads_thinker_from_full_omni_checkpoint(omni, tmp_path):
    """A full Qwen2.5-Omni checkpoint (``thinker.*`` keys in the original layout, talker weights) loads the thinker."""
    from safetensors.torch import save_file
    from transformers import Qwen2_5OmniConfig

    from crabzoo.backbones import QwenOmniThinker

    Qwen2_5OmniConfig(thinker_config=omni.thinker.config.to_dict(), enable_audio_output=False).save_pretrained(tmp_path)
    omni.tokenizer.save_pretrained(tmp_path)
    original_layout = {}
    for key, value in omni.thinker.state_dict().items():
        key = key.replace("model.language_model.", "model.").replace("model.audio_tower.", "audio_tower.")
        original_layout["thinker." + key.replace("model.visual.", "visual.")] = value.contiguous().clone()
    original_layout["talker.codec_head.weight"] = torch.zeros(2, 2)
    save_file(original_layout, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    loaded = QwenOmniThinker(name_or_path=str(tmp_path), audio_max_seconds=10)
    expected, got = omni.thinker.state_dict(), loaded.thinker.state_dict()
    assert set(expected) == set(got)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
