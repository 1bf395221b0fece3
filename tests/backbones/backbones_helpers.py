"""Tiny backbone builders and a small AV-UIE-layout text corpus for the backbone tests."""

from __future__ import annotations

import json
from pathlib import Path

INSTRUCTIONS = [
    "Please describe the events and time range that occurred in the video.",
    "Please answer this question: what is making the sound in the video?",
    "Please determine the events that occur based on the visual and audio information in the video.",
    "Please recognize the category of object that makes the sound and then output its location coordinates.",
]
TARGETS = [
    "A dog is visible and a bark is audible. <event>dog barking, (0 10)</event>",
    "The sound comes from the guitar on the left. <answer>guitar</answer>",
    "<visual>Chainsaw,(0 10)</visual> and <audio>Chainsaw,(2 8)</audio>",
    "The sounding object is cat. Its coordinates are <obj>(12,30)(100,180)</obj>.",
]

TINY_TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "max_position_embeddings": 512}

TINY_OMNI = {
    "text_config": {**TINY_TEXT, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 1, 1]}},
    "audio_config": {"d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 4, "encoder_ffn_dim": 64,
                     "num_mel_bins": 128, "output_dim": 32},
    "vision_config": {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 4, "out_hidden_size": 32,
                      "fullatt_block_indexes": [1]},
}
"""A 2-layer Qwen2.5-Omni thinker (width 32 everywhere); mrope_section sums to head_dim / 2 = 4."""


def write_corpus(root: Path) -> Path:
    """Two task folders of ``train.json`` records (JSON arrays of dicts, nested values included)."""
    for task, offset in (("ave", 0), ("avqa", 2)):
        folder = root / task
        folder.mkdir(parents=True, exist_ok=True)
        records = []
        for i in range(24):
            k = (i + offset) % len(INSTRUCTIONS)
            records.append({"id": f"{task}-{i}", "instruction": INSTRUCTIONS[k], "output": TARGETS[k],
                            "meta": {"options": ["guitar", "piano"], "start": 3}})
        (folder / "train.json").write_text(json.dumps(records))
    return root


def tiny_llama(corpus_dir, **kwargs):
    from crabzoo.backbones import HFCausalLM

    return HFCausalLM(config={"model_type": "llama", **TINY_TEXT}, tokenizer_corpus=str(corpus_dir),
                      tokenizer_vocab_size=400, **kwargs)


def tiny_qwen2(corpus_dir, **kwargs):
    from crabzoo.backbones import HFCausalLM

    return HFCausalLM(config={"model_type": "qwen2", "tie_word_embeddings": True, **TINY_TEXT},
                      tokenizer_corpus=str(corpus_dir), tokenizer_vocab_size=400, **kwargs)


def tiny_omni(corpus_dir, **kwargs):
    from crabzoo.backbones import QwenOmniThinker

    return QwenOmniThinker(config=TINY_OMNI, tokenizer_corpus=str(corpus_dir), tokenizer_vocab_size=400,
                           audio_max_seconds=10, **kwargs)


AV_USER = {"role": "user", "content": [
    {"type": "text", "text": "This is a video and an audio:"}, {"type": "video"}, {"type": "audio"},
    {"type": "text", "text": "Please describe the events."},
]}
"""A user turn with a video and an audio item (the Crab+ prompt layout)."""

IMAGE_USER = {"role": "user", "content": [{"type": "text", "text": "Find the object."}, {"type": "image"}]}
"""A user turn with one image item."""

AUDIO_USER = {"role": "user", "content": [{"type": "text", "text": "What is heard?"}, {"type": "audio"}]}
"""A user turn with one audio item."""

