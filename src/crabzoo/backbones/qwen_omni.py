"""The Qwen2.5-Omni thinker as a native omni backbone (Crab+).

The thinker (``transformers``' ``Qwen2_5OmniThinkerForConditionalGeneration``; the talker is never built) brings
its own Whisper-style audio encoder and Qwen2.5-VL vision encoder. Media are not spliced in by a crabzoo
connector: :meth:`QwenOmniThinker.prepare` turns a chat with media items plus raw media into the model's own
inputs (``input_ids`` with each ``<|AUDIO|>``/``<|VIDEO|>``/``<|IMAGE|>`` expanded to its token count, Whisper
log-mel features, Qwen2-VL patches and grids), and :meth:`forward_multimodal` / :meth:`generate_multimodal` run
the thinker on them, which places the encoder outputs and builds the 3-D (TMRoPE) positions itself.
:meth:`loss_multimodal` (training) runs the same inner model but applies the LM head to supervised positions only.

The processor pieces are built from the model config and plain arguments, never downloaded: a
``WhisperFeatureExtractor`` (``num_mel_bins`` mel bins, 16 kHz, n_fft 400, hop 160, padded to
``audio_max_seconds``), a ``Qwen2VLImageProcessor`` and a ``Qwen2VLVideoProcessor`` (patch, merge and temporal
patch sizes from the vision config, CLIP mean/std). The tokenizer is the checkpoint's own, or for tiny models a
locally trained one with the Omni special tokens added.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from crabzoo.backbones.base import Backbone
from crabzoo.backbones.hf_causal_lm import (
    PROJECTIONS,
    atomic_save_dir,
    load_tokenizer,
    placeholder_tokens,
    resolve_dtype,
    set_activation_checkpointing,
)
from crabzoo.errors import CrabzooError
from crabzoo.backbones.loss import IGNORE_INDEX, supervised_index, supervised_loss

OMNI_PLACEHOLDERS: dict[str, str] = {"video": "<|VIDEO|>", "image": "<|IMAGE|>", "audio": "<|AUDIO|>"}
"""Placeholder token per media kind in the Qwen2.5-Omni vocabulary."""

OMNI_WRAPPERS: dict[str, tuple[str, str]] = {
    "video": ("<|vision_bos|>", "<|vision_eos|>"),
    "image": ("<|vision_bos|>", "<|vision_eos|>"),
    "audio": ("<|audio_bos|>", "<|audio_eos|>"),
}
"""Start/end tokens around each placeholder: ``<|audio_bos|><|AUDIO|><|audio_eos|>`` etc."""

OMNI_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
    "<|vision_bos|>", "<|vision_eos|>", "<|vision_pad|>", "<|IMAGE|>", "<|VIDEO|>",
)
"""Special tokens a tokenizer needs to drive the thinker (added to locally trained tokenizers)."""

SYSTEM_PROMPT = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving auditory and "
    "visual inputs, as well as generating text and speech."
)
"""The stock Qwen2.5-Omni system prompt (Crab+ uses it for every task)."""

OMNI_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'text' %}{{ item['text'] }}"
    "{% elif item['type'] == 'audio' %}{{ '<|audio_bos|><|AUDIO|><|audio_eos|>' }}"
    "{% elif item['type'] == 'video' %}{{ '<|vision_bos|><|VIDEO|><|vision_eos|>' }}"
    "{% elif item['type'] == 'image' %}{{ '<|vision_bos|><|IMAGE|><|vision_eos|>' }}"
    "{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""Qwen2.5-Omni rendering: ChatML turns; a list content concatenates its items, media as wrapped placeholders."""

AUDIO_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj")
"""Crab+ adapts the audio encoder's attention q/k/v."""

VISION_TARGETS: tuple[str, ...] = ("gate_proj", "up_proj", "down_proj")
"""Crab+ adapts the vision encoder's SwiGLU MLP."""

SAMPLING_RATE = 16000


def audio_token_count(n_frames: int) -> int:
    """LLM tokens of an audio item with ``n_frames`` valid mel frames (two stride-2 reductions)."""
    return ((n_frames - 1) // 2 + 1 - 2) // 2 + 1


class QwenOmniThinker(Backbone):
    """Qwen2.5-Omni thinker with its own audio and vision encoders.

    Args:
        name_or_path: Checkpoint directory or hub name: a thinker saved by :meth:`save_pretrained`, or a full
            Qwen2.5-Omni checkpoint (``Qwen/Qwen2.5-Omni-7B``; loaded without the talker). Exclusive with
            ``config``.
        config: ``Qwen2_5OmniThinkerConfig`` fields as a plain dict (``text_config``, ``audio_config``,
            ``vision_config``; the text config needs ``rope_parameters`` with ``mrope_section``). Token ids and
            the vocabulary size are taken from the tokenizer.
        tokenizer: ``None`` (the checkpoint's, or trained on ``tokenizer_corpus``), ``"avsynth"`` or a directory.
        tokenizer_corpus: Data root whose ``*/train.json`` strings train a local tokenizer.
        tokenizer_vocab_size: Vocabulary size of a locally trained tokenizer.
        use_audio_in_video: Interleave a video's own soundtrack (Qwen's TMRoPE chunks). Crab+ uses ``False``;
            only ``False`` is supported by :meth:`prepare`.
        audio_max_seconds: Whisper features are padded to this length (Crab+: 300 s, i.e. 30000 frames).
        video_second_per_grid: Seconds per temporal grid step of a video (Crab+: 2.0).
        min_pixels: Smallest frame area the Qwen2-VL processors resize to.
        max_pixels: Largest frame area the Qwen2-VL processors resize to.
        torch_dtype: Weight dtype (``"bfloat16"`` for the 7B model).
        attn_implementation: ``"sdpa"``, ``"eager"``, ``"flash_attention_2"`` or ``None``.
        gradient_checkpointing: Recompute layer activations in the backward pass.
        seed: Seed of the random initialisation (``config`` only).
    """

    def __init__(
        self,
        name_or_path: str | None = None,
        config: dict[str, Any] | None = None,
        tokenizer: str | None = None,
        tokenizer_corpus: str | None = None,
        tokenizer_vocab_size: int = 1024,
        use_audio_in_video: bool = False,
        audio_max_seconds: int = 300,
        video_second_per_grid: float = 2.0,
        min_pixels: int = 56 * 56,
        max_pixels: int = 28 * 28 * 1280,
        torch_dtype: str | None = None,
        attn_implementation: str | None = None,
        gradient_checkpointing: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if (name_or_path is None) == (config is None):
            raise CrabzooError("QwenOmniThinker: give exactly one of name_or_path (a checkpoint) or config (a dict)")
        from transformers import (
            AutoConfig,
            Qwen2_5OmniThinkerConfig,
            Qwen2_5OmniThinkerForConditionalGeneration,
        )

        self.name_or_path = name_or_path
        self.use_audio_in_video = use_audio_in_video
        self.audio_max_seconds = audio_max_seconds
        self.video_second_per_grid = video_second_per_grid
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        tok = load_tokenizer(tokenizer, name_or_path, tokenizer_corpus, tokenizer_vocab_size)
        self._setup_tokenizer(tok)
        self._tokenizer = tok
        dtype = resolve_dtype(torch_dtype)
        extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
        if name_or_path is not None:
            try:
                found = AutoConfig.from_pretrained(name_or_path)
                # a full Qwen2.5-Omni checkpoint: build the thinker alone from its sub-config; transformers maps
                # the ``thinker.*`` weights (old and new layouts) and skips the talker and token2wav weights
                thinker_config = found.thinker_config if found.model_type == "qwen2_5_omni" else found
                self.thinker = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
                    name_or_path, config=thinker_config, dtype=dtype or "auto", **extra
                )
            except OSError as err:
                raise CrabzooError(f"QwenOmniThinker: cannot load {name_or_path!r} ({err})") from err
        else:
            values = dict(config)
            text = dict(values.pop("text_config", {}))
            rope = text.get("rope_parameters") or {}
            if "rope_scaling" in text or "mrope_section" not in rope:
                raise CrabzooError(
                    "QwenOmniThinker: text_config needs rope_parameters with mrope_section, e.g. "
                    "{rope_type: default, rope_theta: 1000000.0, mrope_section: [16, 24, 24]} "
                    "(the old rope_scaling key fails)"
                )
            text.update(vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            ids = {k: tok.convert_tokens_to_ids(v) for k, v in OMNI_PLACEHOLDERS.items()}
            values.update(
                text_config=text,
                audio_token_index=ids["audio"],
                image_token_index=ids["image"],
                video_token_index=ids["video"],
                audio_start_token_id=tok.convert_tokens_to_ids("<|audio_bos|>"),
                audio_end_token_id=tok.convert_tokens_to_ids("<|audio_eos|>"),
                vision_start_token_id=tok.convert_tokens_to_ids("<|vision_bos|>"),
                vision_end_token_id=tok.convert_tokens_to_ids("<|vision_eos|>"),
            )
            cfg = Qwen2_5OmniThinkerConfig(**values)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.thinker = Qwen2_5OmniThinkerForConditionalGeneration(cfg, **extra)
            if dtype is not None:
                self.thinker.to(dtype)
        if self.thinker.get_input_embeddings().num_embeddings < len(tok):
            self.thinker.resize_token_embeddings(len(tok))
        self.thinker.generation_config.pad_token_id = tok.pad_token_id
        self.thinker.generation_config.eos_token_id = tok.eos_token_id
        self.thinker.requires_grad_(False)
        self._groups = {
            "llm": nn.ModuleDict({"model": self.language_model, "lm_head": self.thinker.lm_head}),
            "audio_encoder": self.audio_encoder,
            "visual_encoder": self.visual_encoder,
        }
        self._build_processors()
        if gradient_checkpointing:
            self.gradient_checkpointing(True)

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _setup_tokenizer(tok) -> None:
        missing = [t for t in (*OMNI_SPECIAL_TOKENS, *placeholder_tokens()) if t not in tok.get_vocab()]
        if missing:
            tok.add_tokens(missing, special_tokens=True)
        if not tok.chat_template:
            tok.chat_template = OMNI_CHAT_TEMPLATE
        if tok.eos_token != "<|im_end|>":
            tok.eos_token = "<|im_end|>"
        if tok.pad_token is None or tok.pad_token == "<pad>":
            tok.pad_token = "<|endoftext|>"

    def _build_processors(self) -> None:
        from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor, WhisperFeatureExtractor

        cfg = self.thinker.config
        vision = cfg.vision_config
        self.feature_extractor = WhisperFeatureExtractor(
            feature_size=cfg.audio_config.num_mel_bins, sampling_rate=SAMPLING_RATE, hop_length=160, n_fft=400,
            chunk_length=self.audio_max_seconds,
        )
        common = dict(
            min_pixels=self.min_pixels, max_pixels=self.max_pixels, patch_size=vision.patch_size,
            merge_size=vision.spatial_merge_size, temporal_patch_size=vision.temporal_patch_size,
        )
        self.image_processor = Qwen2VLImageProcessor(**common)
        self.video_processor = Qwen2VLVideoProcessor(**common, do_sample_frames=False, cap_pixels_per_frame=False)

    # ------------------------------------------------------------------ structure
    @property
    def language_model(self) -> nn.Module:
        """The text decoder (embeddings, 28 layers and final norm for the 7B model)."""
        return self.thinker.model.language_model

    @property
    def audio_encoder(self) -> nn.Module:
        """The Whisper-style audio tower."""
        return self.thinker.model.audio_tower

    @property
    def visual_encoder(self) -> nn.Module:
        """The Qwen2.5-VL vision transformer with its patch merger."""
        return self.thinker.model.visual

    @property
    def tokenizer(self):
        return self._tokenizer

    @property
    def hidden_size(self) -> int:
        return int(self.thinker.config.text_config.hidden_size)

    @property
    def placeholders(self) -> dict[str, str]:
        return OMNI_PLACEHOLDERS

    @property
    def media_wrappers(self) -> dict[str, tuple[str, str]]:
        return OMNI_WRAPPERS

    @property
    def eos_token_id(self) -> int:
        return self._tokenizer.eos_token_id

    @property
    def pad_token_id(self) -> int:
        return self._tokenizer.pad_token_id

    @property
    def bos_token_id(self) -> int | None:
        return self._tokenizer.bos_token_id

    @property
    def decoder_layer_cls(self) -> type[nn.Module]:
        return type(self.language_model.layers[0])

    @property
    def layer_classes(self) -> dict[str, type[nn.Module]]:
        """Repeated-block class per module group (units of FSDP sharding and activation checkpointing)."""
        return {
            "llm": type(self.language_model.layers[0]),
            "audio_encoder": type(self.audio_encoder.layers[0]),
            "visual_encoder": type(self.visual_encoder.blocks[0]),
        }

    adapter_targets = PROJECTIONS

    def default_adapter_targets(self) -> dict[str, tuple[str, ...]]:
        return {"llm": PROJECTIONS, "audio_encoder": AUDIO_TARGETS, "visual_encoder": VISION_TARGETS}

    def module_groups(self) -> dict[str, nn.Module]:
        """``llm`` (text model + lm_head), ``audio_encoder`` (audio tower), ``visual_encoder`` (vision tower)."""
        return dict(self._groups)

    def gradient_checkpointing(self, enable: bool = True) -> None:
        """Switch activation checkpointing of all three towers on or off."""
        set_activation_checkpointing(self.thinker, enable)

    # ------------------------------------------------------------------ text-only contract
    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        """Render with the Omni template; ``content`` may be a string or a list of ``{"type": ...}`` items."""
        return self._tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    @property
    def generation_prompt(self) -> str:
        """``"<|im_end|>\\n<|im_start|>assistant\\n"``: what follows the last user turn in a prompt."""
        marker = "\x00user\x00"
        text = self.render([{"role": "user", "content": marker}], add_generation_prompt=True)
        return text[text.rindex(marker) + len(marker) :]

    def embed(self, input_ids: Tensor) -> Tensor:
        return self.thinker.get_input_embeddings()(input_ids)

    def forward(
        self, inputs_embeds: Tensor, attention_mask: Tensor, position_ids: Tensor | None = None, labels: Tensor | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Logits for text embeddings; positions default to the left-padding-aware ``cumsum`` (same on all 3 axes).

        With ``labels`` ``(B, L)``: ``(loss, per_sample)`` of :func:`~crabzoo.backbones.loss.supervised_loss`.
        """
        if labels is not None:
            index = supervised_index(labels)  # before the decoder runs (crabzoo.backbones.loss)
            hidden = self.hidden_states(inputs_embeds, attention_mask, position_ids)
            return supervised_loss(hidden, labels, self.output_embeddings(), index=index)
        if position_ids is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.thinker(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        )
        return out.logits

    def hidden_states(self, inputs_embeds: Tensor, attention_mask: Tensor, position_ids: Tensor | None = None) -> Tensor:
        """Final hidden states ``(B, L, D)`` of the thinker's text model for text embeddings."""
        if position_ids is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.thinker.model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        )
        return out.last_hidden_state

    def output_embeddings(self) -> nn.Module:
        """The thinker's LM head."""
        return self.thinker.lm_head

    @torch.no_grad()
    def generate(self, inputs_embeds: Tensor, attention_mask: Tensor, max_new_tokens: int) -> Tensor:
        self.thinker.model.rope_deltas = None
        return self.thinker.generate(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
            do_sample=False, eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id,
        )

    # ------------------------------------------------------------------ native multimodal path
    def prepare(
        self,
        messages: list[dict[str, Any]],
        audio: Sequence[np.ndarray] = (),
        videos: Sequence[np.ndarray] = (),
        images: Sequence[np.ndarray] = (),
        add_generation_prompt: bool = False,
    ) -> dict[str, Tensor]:
        """Model inputs for one conversation with raw media, as the Crab+ processor builds them.

        Media items of the chat (``{"type": "audio"}``, ``{"type": "video"}``, ``{"type": "image"}``) are matched
        in order with ``audio`` (16 kHz mono float waveforms), ``videos`` (uint8 ``(T, H, W, 3)``, already
        sampled and resized, ``T`` even) and ``images`` (uint8 ``(H, W, 3)``).

        Args:
            messages: Chat turns; a turn's ``content`` is a string or a list of items.
            audio: One waveform per audio item.
            videos: One frame array per video item.
            images: One array per image item.
            add_generation_prompt: End with ``<|im_start|>assistant\\n`` (test time).

        Returns:
            ``input_ids (1, L)``, ``attention_mask (1, L)``, ``labels (1, L)`` (the assistant turn from the
            newline after ``<|im_start|>assistant`` through the first ``<|im_end|>``; all −100 without an
            assistant turn), and when present ``input_features (n_audio, mel, frames)``,
            ``feature_attention_mask``, ``pixel_values_videos``, ``video_grid_thw``, ``video_second_per_grid``,
            ``pixel_values``, ``image_grid_thw``.
        """
        if self.use_audio_in_video:
            raise CrabzooError(
                "QwenOmniThinker.prepare: use_audio_in_video=True (interleaved soundtrack) is not supported; "
                "Crab+ uses False with the audio as a separate item"
            )
        tok = self._tokenizer
        ids = tok(self.render(messages, add_generation_prompt), add_special_tokens=False)["input_ids"]
        out: dict[str, Tensor] = {}
        counts: dict[str, list[int]] = {"audio": [], "video": [], "image": []}
        if len(audio):
            feats = self.feature_extractor(
                [np.asarray(a, dtype=np.float32) for a in audio], sampling_rate=SAMPLING_RATE, padding="max_length",
                return_attention_mask=True, return_tensors="pt",
            )
            out["input_features"] = feats["input_features"]
            out["feature_attention_mask"] = feats["attention_mask"]
            counts["audio"] = [audio_token_count(int(n)) for n in feats["attention_mask"].sum(-1)]
        merge = self.thinker.config.vision_config.spatial_merge_size ** 2
        if len(videos):
            vids = self.video_processor(videos=[np.asarray(v) for v in videos], return_tensors="pt")
            out["pixel_values_videos"] = vids["pixel_values_videos"]
            out["video_grid_thw"] = vids["video_grid_thw"]
            out["video_second_per_grid"] = torch.full((len(videos),), float(self.video_second_per_grid))
            counts["video"] = [int(g.prod()) // merge for g in vids["video_grid_thw"]]
        if len(images):
            imgs = self.image_processor(images=[np.asarray(i) for i in images], return_tensors="pt")
            out["pixel_values"] = imgs["pixel_values"]
            out["image_grid_thw"] = imgs["image_grid_thw"]
            counts["image"] = [int(g.prod()) // merge for g in imgs["image_grid_thw"]]
        expanded = self._expand(ids, counts)
        input_ids = torch.tensor([expanded], dtype=torch.long)
        out["input_ids"] = input_ids
        out["attention_mask"] = torch.ones_like(input_ids)
        out["labels"] = self.assistant_labels(input_ids)
        return out

    def _expand(self, ids: list[int], counts: dict[str, list[int]]) -> list[int]:
        """Repeat each placeholder id by its item's token count (items in order of appearance)."""
        placeholder = {self._tokenizer.convert_tokens_to_ids(t): kind for kind, t in OMNI_PLACEHOLDERS.items()}
        seen = {kind: 0 for kind in counts}
        result: list[int] = []
        for token in ids:
            kind = placeholder.get(token)
            if kind is None:
                result.append(token)
                continue
            if seen[kind] >= len(counts[kind]):
                raise CrabzooError(f"the chat has more {kind} items than {kind} inputs ({len(counts[kind])})")
            result.extend([token] * counts[kind][seen[kind]])
            seen[kind] += 1
        for kind, n in seen.items():
            if n != len(counts[kind]):
                raise CrabzooError(f"{len(counts[kind])} {kind} input(s) given but the chat has {n} {kind} item(s)")
        return result

    def assistant_labels(self, input_ids: Tensor) -> Tensor:
        """Labels supervising the first assistant turn: from after ``<|im_start|>assistant`` to ``<|im_end|>``."""
        tok = self._tokenizer
        marker = tok("<|im_start|>assistant", add_special_tokens=False)["input_ids"]
        end_id = tok.convert_tokens_to_ids("<|im_end|>")
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        for b, row in enumerate(input_ids.tolist()):
            for start in range(len(row) - len(marker) + 1):
                if row[start : start + len(marker)] == marker:
                    begin = start + len(marker)
                    if end_id in row[begin:]:  # a prompt that only opens the assistant turn has no labels
                        end = row.index(end_id, begin)
                        labels[b, begin : end + 1] = input_ids[b, begin : end + 1]
                    break
        return labels

    def collate(self, items: list[dict[str, Tensor]], padding_side: str = "right") -> dict[str, Tensor]:
        """Batch :meth:`prepare` outputs: pad text (pad id / −100 / 0), concatenate media along dim 0.

        Use ``padding_side="right"`` for training (as Crab+) and ``"left"`` for generation.
        """
        length = max(it["input_ids"].shape[1] for it in items)
        batch: dict[str, Tensor] = {}
        for key, fill in (("input_ids", self.pad_token_id), ("labels", IGNORE_INDEX), ("attention_mask", 0)):
            rows = []
            for it in items:
                row = it[key][0]
                pad = row.new_full((length - row.shape[0],), fill)
                rows.append(torch.cat([row, pad] if padding_side == "right" else [pad, row]))
            batch[key] = torch.stack(rows)
        media_keys = ("input_features", "feature_attention_mask", "pixel_values_videos", "video_grid_thw",
                      "video_second_per_grid", "pixel_values", "image_grid_thw")
        for key in media_keys:
            parts = [it[key] for it in items if key in it]
            if parts:
                batch[key] = torch.cat(parts)
        return batch

    def forward_multimodal(self, **inputs: Tensor) -> Tensor:
        """Logits ``(B, L, V)`` of the thinker on :meth:`prepare`/:meth:`collate` outputs (``labels`` ignored)."""
        inputs = {k: v for k, v in inputs.items() if k != "labels"}
        self.thinker.model.rope_deltas = None
        out = self.thinker(**inputs, use_audio_in_video=self.use_audio_in_video, use_cache=False)
        return out.logits

    def hidden_states_multimodal(self, **inputs: Tensor) -> Tensor:
        """Final hidden states ``(B, L, D)`` on :meth:`prepare`/:meth:`collate` outputs (``labels`` ignored).

        Runs the thinker's inner model (``thinker.model``), which encodes the media, scatters them onto their
        placeholder tokens and builds the 3-D positions exactly as the thinker's own forward does; only the LM
        head is left out, so ``output_embeddings()(hidden)`` equals :meth:`forward_multimodal`'s logits.
        """
        inputs = {k: v for k, v in inputs.items() if k != "labels"}
        self.thinker.model.rope_deltas = None
        with self.idle_towers(inputs) as idle:
            out = self.thinker.model(**inputs, use_audio_in_video=self.use_audio_in_video, use_cache=False)
        hidden = out.last_hidden_state
        return hidden + (torch.stack(idle).sum() * 0.0).to(hidden.dtype) if idle else hidden

    @contextmanager
    def idle_towers(self, inputs: dict[str, Tensor]) -> Iterator[list[Tensor]]:
        """Run each sharded media tower these inputs leave idle, in the thinker's own order; yield their outputs.

        Under FSDP2 every process must gather (and, in the backward, reduce) the same units in the same order. A
        process whose batch holds no audio, or no image or video, would skip that tower while another process
        runs it, and the collectives would no longer match (a hang on GPUs). With several processes and sharded
        towers, an idle tower therefore runs on a tiny stand-in input (one second of silence, one black
        28 x 28 image) where the thinker would have run it: the audio tower before the thinker's forward, the
        vision tower just before its language model. The caller adds zero times the yielded sums to its output,
        which keeps the towers in the backward with zero gradients. In one process, or without sharded towers,
        nothing runs and the list stays empty.
        """
        terms: list[Tensor] = []
        towers = self._sharded_towers()
        model = self.thinker.model
        handle = None
        if "audio_tower" in towers and "input_features" not in inputs:
            stand_in = self._stand_in_media(model.get_input_embeddings().weight.device)
            out = model.get_audio_features(stand_in["input_features"], stand_in["feature_attention_mask"], return_dict=True)
            terms.append(out.last_hidden_state.float().sum())
        if "visual" in towers and "pixel_values" not in inputs and "pixel_values_videos" not in inputs:

            def run_vision(module: nn.Module, args: Any) -> None:
                if handle is not None:
                    handle.remove()  # once per call: generation runs the language model again for every token
                stand_in = self._stand_in_media(model.get_input_embeddings().weight.device)
                out = model.get_image_features(stand_in["pixel_values"], stand_in["image_grid_thw"], return_dict=True)
                terms.append(torch.cat(out.pooler_output).float().sum())

            handle = model.language_model.register_forward_pre_hook(run_vision)
        try:
            yield terms
        finally:
            if handle is not None:
                handle.remove()

    def _sharded_towers(self) -> list[str]:
        """Names of the media towers holding FSDP2 units, when more than one process runs (else ``[]``)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return []
        from crabzoo.distributed import is_sharded

        model = self.thinker.model
        return [name for name in ("audio_tower", "visual") if any(is_sharded(m) for m in getattr(model, name).modules())]

    def _stand_in_media(self, device: torch.device) -> dict[str, Tensor]:
        """Processor outputs of one second of silence and one black 28 x 28 image (built once), on ``device``."""
        if getattr(self, "_stand_in", None) is None:
            feats = self.feature_extractor(
                [np.zeros(SAMPLING_RATE, dtype=np.float32)], sampling_rate=SAMPLING_RATE, padding="max_length",
                return_attention_mask=True, return_tensors="pt",
            )
            imgs = self.image_processor(images=[np.zeros((28, 28, 3), dtype=np.uint8)], return_tensors="pt")
            self._stand_in = {
                "input_features": feats["input_features"], "feature_attention_mask": feats["attention_mask"],
                "pixel_values": imgs["pixel_values"], "image_grid_thw": imgs["image_grid_thw"],
            }
        return {k: v.to(device) for k, v in self._stand_in.items()}

    def loss_multimodal(self, **inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Next-token loss on :meth:`collate` outputs, the LM head run on supervised positions only.

        Returns:
            ``(loss, per_sample)`` of :func:`~crabzoo.backbones.loss.supervised_loss` for ``inputs["labels"]``.
        """
        if "labels" not in inputs:
            raise CrabzooError("QwenOmniThinker.loss_multimodal needs labels (prepare a chat with an assistant turn)")
        index = supervised_index(inputs["labels"])  # before the thinker runs (crabzoo.backbones.loss)
        hidden = self.hidden_states_multimodal(**inputs)
        return supervised_loss(hidden, inputs["labels"], self.output_embeddings(), index=index)

    @torch.no_grad()
    def generate_multimodal(self, max_new_tokens: int, **inputs: Tensor) -> Tensor:
        """Greedy continuation of left-padded :meth:`collate` outputs; returns only the new ids ``(B, <= max)``."""
        inputs = {k: v for k, v in inputs.items() if k != "labels"}
        self.thinker.model.rope_deltas = None
        prompt_length = inputs["input_ids"].shape[1]
        with self.idle_towers(inputs):  # every process gathers every sharded tower
            sequences = self.thinker.generate(
                **inputs, use_audio_in_video=self.use_audio_in_video, max_new_tokens=max_new_tokens, do_sample=False,
                eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id,
            )
        return sequences[:, prompt_length:]

    def save_pretrained(self, directory: str | Path) -> None:
        """Write the thinker (``qwen2_5_omni_thinker`` config + safetensors) and the tokenizer."""

        def write(tmp: Path) -> None:
            self.thinker.save_pretrained(str(tmp))
            self._tokenizer.save_pretrained(str(tmp))

        atomic_save_dir(directory, write)
