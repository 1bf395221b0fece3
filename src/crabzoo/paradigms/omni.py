"""The native omni paradigm (Crab+): the Qwen2.5-Omni thinker with its own audio and vision encoders.

No crabzoo encoder or connector is built. :class:`OmniProcessor` renders the Crab+ conversation (the stock
Qwen2.5-Omni system prompt; a user turn of header, the task's media in order and instruction; the target as the
assistant turn) and lets :meth:`QwenOmniThinker.prepare <crabzoo.backbones.qwen_omni.QwenOmniThinker.prepare>`
build the thinker's own inputs: token ids with each placeholder expanded to its token count, Whisper log-mel
features, Qwen2-VL patches and grids. :class:`OmniAVLLM` runs the thinker on them and otherwise keeps
:class:`~crabzoo.paradigms.base.AVLLM`'s flow: assistant-turn loss with per-task logging, generation parsed by
each task and scored by its metric, module groups ``llm`` / ``audio_encoder`` / ``visual_encoder`` for freezing
and adapter placement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from crabzoo.adapters.base import Adapter
from crabzoo.backbones.qwen_omni import IGNORE_INDEX, SAMPLING_RATE, SYSTEM_PROMPT, QwenOmniThinker
from crabzoo.data.schema import Sample
from crabzoo.errors import CrabzooError
from crabzoo.paradigms.base import AVLLM, _default_optimizer

TEXT_KEYS = ("input_ids", "attention_mask", "labels")
"""Keys of a prepared item that are token-aligned; every other key is a media tensor."""

FLOAT_MEDIA_KEYS = ("input_features", "pixel_values", "pixel_values_videos")
"""Media tensors cast to the thinker's weight dtype before the forward pass."""


def _resize(frames: np.ndarray, size: int | None) -> np.ndarray:
    """Resize ``(T, H, W, 3)`` uint8 frames to ``size x size`` (bicubic, aspect ratio not kept, as Crab+)."""
    if size is None or frames.shape[1:3] == (size, size):
        return frames
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BICUBIC)) for f in frames])


@dataclass
class OmniProcessor:
    """Sample -> thinker inputs for the native omni paradigm (picklable, runs in data workers).

    Each item holds the training conversation (with the assistant turn; labels only on it) and the prompt of
    the same conversation (ending in ``<|im_start|>assistant\\n``), which shares the item's media tensors.

    Args:
        backbone: A :class:`~crabzoo.backbones.qwen_omni.QwenOmniThinker` (its ``prepare`` and ``collate``).
        system_prompt: System turn (Crab+: the stock Qwen2.5-Omni prompt; ``None``: no system turn).
        max_target_tokens: The supervised assistant turn is cut to the newline plus this many tokens, then
            ``<|im_end|>``.
        frame_size: Frames and images are resized to ``frame_size x frame_size`` (Crab+: 224; ``None``: kept).
        loader: Media decoder (defaults to :class:`crabzoo.data.media.MediaLoader`).
    """

    backbone: Any
    system_prompt: str | None = SYSTEM_PROMPT
    max_target_tokens: int = 256
    frame_size: int | None = 224
    loader: Any = None

    def __post_init__(self) -> None:
        if self.loader is None:
            from crabzoo.data.media import MediaLoader

            self.loader = MediaLoader()

    def messages(self, sample: Sample, task: Any, target: str | None) -> list[dict[str, Any]]:
        """The Crab+ chat: system, user (header, media items in the task's order, instruction), assistant."""
        chat: list[dict[str, Any]] = []
        if self.system_prompt:
            chat.append({"role": "system", "content": self.system_prompt})
        content = [{"type": "text", "text": task.header}, *({"type": kind} for kind in task.media)]
        content.append({"type": "text", "text": sample.instruction})
        chat.append({"role": "user", "content": content})
        if target is not None:
            chat.append({"role": "assistant", "content": target})
        return chat

    @staticmethod
    def reference_text(sample: Sample, task: Any) -> str | None:
        """The assistant turn of a sample: its target text, else the answer formatted from its truth, else ``None``.

        ``None`` only for a test record that holds neither (the release's AVSBench and Ref-AVS test records carry
        a mask path, not the box and points an answer is written from): its chat then ends with the user turn, so
        it carries no labels and the teacher-forced loss skips it, while generation and mask scoring go on. A
        training sample without one is an error.

        Raises:
            CrabzooError: A training sample whose truth cannot be written as an answer.
        """
        if sample.target:
            return sample.target
        try:
            return task.format_target(sample.truth)
        except CrabzooError:
            if sample.split == "train":
                raise
            return None

    def media(self, sample: Sample, task: Any) -> dict[str, list[np.ndarray]]:
        """Raw media for :meth:`~crabzoo.backbones.qwen_omni.QwenOmniThinker.prepare`, one entry per item.

        The task crops the audio (its segments are joined into one waveform, at least 1 s long) and samples
        the frames (a2v's two videos arrive joined into 20 frames, v2a's two crops as one waveform). Videos
        get an even frame count (the last frame repeated if needed) for the temporal patch of 2.
        """
        clips = task.load_media(sample, self.loader)
        out: dict[str, list[np.ndarray]] = {"audio": [], "videos": [], "images": []}
        for kind in task.media:
            if kind == "audio":
                wave = np.asarray(clips["audio"].waveform, dtype=np.float32)
                if wave.shape[0] < SAMPLING_RATE:
                    wave = np.pad(wave, (0, SAMPLING_RATE - wave.shape[0]))
                out["audio"].append(wave)
            elif kind == "video":
                frames = _resize(np.asarray(clips["visual"].frames), self.frame_size)
                if frames.shape[0] % 2:
                    frames = np.concatenate([frames, frames[-1:]])
                out["videos"].append(frames)
            elif kind == "image":
                out["images"].append(_resize(np.asarray(clips["visual"].frames[:1]), self.frame_size)[0])
            else:
                raise CrabzooError(f"task {task.name}: unknown media kind {kind!r} (expected audio, video or image)")
        return out

    def _truncate(self, item: dict[str, Tensor]) -> None:
        labels = item["labels"][0]
        supervised = (labels != IGNORE_INDEX).nonzero().flatten()
        if supervised.numel() <= self.max_target_tokens + 2:
            return
        keep = int(supervised[0]) + 1 + self.max_target_tokens
        end = item["input_ids"].new_tensor([[self.backbone.eos_token_id]])
        item["input_ids"] = torch.cat([item["input_ids"][:, :keep], end], dim=1)
        item["labels"] = torch.cat([item["labels"][:, :keep], end], dim=1)
        item["attention_mask"] = torch.ones_like(item["input_ids"])

    def _prompt_ids(self, chat: list[dict[str, Any]], full_ids: list[int]) -> list[int]:
        """Token ids of the prompt, each placeholder expanded like its counterpart in ``full_ids``."""
        tok = self.backbone.tokenizer
        ids = tok(self.backbone.render(chat, add_generation_prompt=True), add_special_tokens=False)["input_ids"]
        placeholder_ids = {self.backbone.placeholder_id(k) for k in ("audio", "video", "image")}
        runs: list[list[int]] = []
        previous = None
        for token in full_ids:
            if token in placeholder_ids:
                if token == previous:
                    runs[-1][1] += 1
                else:
                    runs.append([token, 1])
            previous = token
        expanded: list[int] = []
        for token in ids:
            if token not in placeholder_ids:
                expanded.append(token)
                continue
            if not runs or runs[0][0] != token:
                raise CrabzooError("the prompt and the conversation disagree on their media items")
            expanded.extend([token] * runs.pop(0)[1])
        return expanded

    def __call__(self, sample: Sample) -> dict[str, Any]:
        """One item: ``inputs`` (conversation + media, labels on the assistant turn) and ``prompt`` (ids only)."""
        from crabzoo.tasks import get_task

        task = get_task(sample.task)
        target = self.reference_text(sample, task)
        chat = self.messages(sample, task, target)
        media = self.media(sample, task)
        inputs = self.backbone.prepare(chat, audio=media["audio"], videos=media["videos"], images=media["images"])
        self._truncate(inputs)
        question = chat[:-1] if target is not None else chat
        prompt = torch.tensor([self._prompt_ids(question, inputs["input_ids"][0].tolist())], dtype=torch.long)
        return {
            "id": sample.id,
            "task": sample.task,
            "inputs": inputs,
            "prompt": {"input_ids": prompt, "attention_mask": torch.ones_like(prompt),
                       "labels": torch.full_like(prompt, IGNORE_INDEX)},
            "truth": sample.truth,
            "meta": sample.meta,
        }

    def collate(self, items: list[dict[str, Any] | None]) -> dict[str, Any]:
        """Batch items with the thinker's collate: ``inputs`` right-padded (training), ``prompt`` left-padded.

        Skipped items (samples whose media could not be decoded) are dropped, counted in ``n_skipped`` and
        listed in ``skipped`` (see :mod:`crabzoo.data.skips`).
        """
        from crabzoo.data.skips import SKIPPED_KEY, split_skipped

        kept, skipped = split_skipped(items)
        batch: dict[str, Any] = {
            "ids": [it["id"] for it in kept],
            "tasks": [it["task"] for it in kept],
            "truths": [it["truth"] for it in kept],
            "metas": [it["meta"] for it in kept],
            "n_skipped": len(items) - len(kept),
            SKIPPED_KEY: skipped,
        }
        if kept:
            batch["inputs"] = self.backbone.collate([it["inputs"] for it in kept], padding_side="right")
            batch["prompt"] = self.backbone.collate([it["prompt"] for it in kept], padding_side="left")
        return batch


class OmniAVLLM(AVLLM):
    """Native omni AV-LLM: the Qwen2.5-Omni thinker sees raw media through its own encoders (Crab+).

    Module groups come from the thinker: ``llm`` (text model + LM head), ``audio_encoder`` (Whisper-style audio
    tower) and ``visual_encoder`` (Qwen2.5-VL vision tower); the default adapter targets are the thinker's
    (LLM q/k/v/o/gate/up/down, audio q/k/v, vision gate/up/down).

    Args:
        backbone: A :class:`~crabzoo.backbones.qwen_omni.QwenOmniThinker`.
        adapter: Parameter-efficient adapter (Crab+: I-LoRA on all three groups).
        train_groups: Module groups trained in full (``llm``, ``audio_encoder``, ``visual_encoder``); Crab+
            trains none (adapter only).
        optimizer: Optimizer factory applied to trainable parameters only.
        scheduler: Learning-rate scheduler factory; stepped every optimizer step.
        system_prompt: System turn (default: the stock Qwen2.5-Omni prompt, as Crab+).
        max_new_tokens: Generation length at validation/test time.
        task_max_new_tokens: Generation length per task, overriding ``max_new_tokens`` for batches of those tasks
            (e.g. ``{ks: 12, s4: 72}``: short answers stop early even when the model never emits EOS).
        max_target_tokens: Supervised assistant tokens kept per sample (then ``<|im_end|>``).
        generate_val: Generate and score at validation (the loss is always computed).
        task_names: Task order for task-routed adapters (defaults to the datamodule's tasks).
        frame_size: Side of the square frames and images handed to the vision processor (Crab+: 224).
        save_frozen: Keep frozen parameters in checkpoints; ``False`` writes the adapter only (the thinker
            rebuilds from its own files), see :class:`~crabzoo.paradigms.base.AVLLM`.
        released: Crab+'s released ``finetune_weights.bin`` (its I-LoRA over the thinker), loaded at setup into
            ``adapter`` (see :mod:`crabzoo.paradigms.released`).
        mask_protocol: ``avsbench`` or ``crab_plus`` mask scores (see :class:`~crabzoo.paradigms.base.AVLLM`).
    """

    stream_connectors = False
    packs_sequences = False  # the thinker splices raw media itself, with its own multimodal positions

    def __init__(
        self,
        backbone: QwenOmniThinker,
        adapter: Adapter | None = None,
        train_groups: Sequence[str] = (),
        optimizer: OptimizerCallable = _default_optimizer,
        scheduler: LRSchedulerCallable | None = None,
        system_prompt: str | None = SYSTEM_PROMPT,
        max_new_tokens: int = 64,
        task_max_new_tokens: dict[str, int] | None = None,
        max_target_tokens: int = 256,
        generate_val: bool = True,
        task_names: Sequence[str] | None = None,
        frame_size: int | None = 224,
        save_frozen: bool = True,
        released: str | None = None,
        mask_protocol: str = "avsbench",
    ) -> None:
        if not all(hasattr(backbone, name) for name in ("prepare", "loss_multimodal", "generate_multimodal")):
            raise CrabzooError(
                f"OmniAVLLM needs a native omni backbone (crabzoo.backbones.qwen_omni.QwenOmniThinker), got "
                f"{type(backbone).__name__}; use crabzoo.paradigms.base.AVLLM for a text LLM with crabzoo encoders"
            )
        super().__init__(
            backbone, adapter=adapter, train_groups=train_groups, optimizer=optimizer, scheduler=scheduler,
            system_prompt=system_prompt, max_new_tokens=max_new_tokens, task_max_new_tokens=task_max_new_tokens,
            max_target_tokens=max_target_tokens, generate_val=generate_val, task_names=task_names,
            save_frozen=save_frozen, released=released, mask_protocol=mask_protocol,
        )
        self.frame_size = frame_size

    def make_processor(self) -> OmniProcessor:
        """The Crab+ conversation processor (renders, prepares media and collates with the thinker)."""
        return OmniProcessor(
            backbone=self.backbone, system_prompt=self.system_prompt, max_target_tokens=self.max_target_tokens,
            frame_size=self.frame_size,
        )

    def _cast_media(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        dtype = self.backbone.thinker.get_input_embeddings().weight.dtype
        return {k: v.to(dtype) if k in FLOAT_MEDIA_KEYS else v for k, v in inputs.items()}

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Teacher-forced pass on ``batch["inputs"]``: ``{"loss", "per_sample"}`` (assistant-turn tokens only)."""
        self._set_task_ids(batch)
        inputs = self._cast_media(batch["inputs"])
        loss, per_sample = self.backbone.loss_multimodal(**inputs)
        return {"loss": loss, "per_sample": per_sample}

    def _prompt_texts(self, batch: dict[str, Any]) -> list[str]:
        """The prompts as the thinker saw them (left padding removed, placeholders expanded)."""
        prompt = batch["prompt"]
        rows = [ids[mask.bool()].tolist() for ids, mask in zip(prompt["input_ids"], prompt["attention_mask"])]
        return self.backbone.tokenizer.batch_decode(rows, skip_special_tokens=False)

    @torch.no_grad()
    def generate(self, batch: dict[str, Any], max_new_tokens: int | None = None) -> list[str]:
        """Greedy generations from the left-padded prompts with the batch's media."""
        self._set_task_ids(batch)
        media = {k: v for k, v in batch["inputs"].items() if k not in TEXT_KEYS}
        inputs = self._cast_media({**media, **batch["prompt"]})
        new = self.backbone.generate_multimodal(max_new_tokens or self.generation_length(batch.get("tasks", ())), **inputs)
        return self.backbone.tokenizer.batch_decode(new, skip_special_tokens=True)
