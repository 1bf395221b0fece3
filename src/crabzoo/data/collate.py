"""From a :class:`~crabzoo.data.schema.Sample` to model inputs, and from items to a batch.

:class:`Processor` runs in data workers: it decodes and crops the media with the task's policy, applies the
encoders' ``preprocess`` and tokenises the chat (prompt with the backbone's template, target + EOS). Its
``collate`` pads media along time (with a mask) and keeps token ids unpadded: the paradigm splices media
embeddings into them and pads after splicing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from crabzoo.backbones.base import MEDIA_WRAPPERS
from crabzoo.data.schema import Sample

IGNORE_INDEX = -100


def user_content(
    header: str,
    media: tuple[str, ...],
    instruction: str,
    placeholders: dict[str, str],
    wrappers: dict[str, tuple[str, str]] = MEDIA_WRAPPERS,
) -> str:
    """The user turn: header, one wrapped placeholder per medium (in prompt order), instruction.

    Args:
        header: Task header, e.g. ``"This is a video and an audio:"``.
        media: Media kinds in prompt order, e.g. ``("video", "audio")``.
        instruction: The task instruction.
        placeholders: Placeholder token per media kind.
        wrappers: Start/end tokens around each placeholder, per media kind.
    """
    lines = [header]
    for kind in media:
        start, end = wrappers[kind]
        lines.append(f"{start}{placeholders[kind]}{end}")
    lines.append(instruction)
    return "\n".join(lines)


@dataclass
class Processor:
    """Turns samples into tensors for one paradigm (picklable; holds references to the encoders).

    Args:
        backbone: Provides the tokenizer, chat template and placeholder tokens.
        audio_encoder: Its ``preprocess`` is applied to the task-cropped audio (``None``: audio ignored).
        visual_encoder: Its ``preprocess`` is applied to the sampled frames / image (``None``: ignored).
        system_prompt: Optional system turn.
        max_target_tokens: Targets are truncated to this many tokens before the EOS token.
        loader: Media decoder (defaults to :class:`crabzoo.data.media.MediaLoader`).
    """

    backbone: Any
    audio_encoder: Any = None
    visual_encoder: Any = None
    system_prompt: str | None = None
    max_target_tokens: int = 256
    loader: Any = None
    _prompt_cache: dict[tuple, list[int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.loader is None:
            from crabzoo.data.media import MediaLoader

            self.loader = MediaLoader()

    def prompt_ids(self, sample: Sample, task: Any) -> list[int]:
        """Token ids of the rendered prompt (system + user turn + generation prompt)."""
        messages = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        content = user_content(
            task.header, task.media, sample.instruction, self.backbone.placeholders, self.backbone.media_wrappers
        )
        messages.append({"role": "user", "content": content})
        text = self.backbone.render(messages, add_generation_prompt=True)
        return self.backbone.tokenizer(text, add_special_tokens=False)["input_ids"]

    def target_ids(self, target: str) -> list[int]:
        """Token ids of the assistant text, truncated, followed by EOS."""
        tok = self.backbone.tokenizer
        ids = tok(target, add_special_tokens=False)["input_ids"][: self.max_target_tokens]
        return ids + [tok.eos_token_id]

    def media(self, sample: Sample, task: Any) -> dict[str, dict[str, Tensor]]:
        """Decoded, cropped and preprocessed media per stream (raises MediaError on corrupt media)."""
        clips = task.load_media(sample, self.loader)
        out: dict[str, dict[str, Tensor]] = {}
        for stream, encoder in (("audio", self.audio_encoder), ("visual", self.visual_encoder)):
            clip = clips.get(stream)
            if encoder is None or clip is None:
                continue
            times = clip.starts if stream == "audio" else clip.timestamps
            out[stream] = {
                "inputs": encoder.preprocess(clip),
                "timestamps": torch.as_tensor(times, dtype=torch.float32),
            }
        return out

    def __call__(self, sample: Sample) -> dict[str, Any]:
        """Process one sample into an item (see :meth:`collate`)."""
        from crabzoo.tasks import get_task

        task = get_task(sample.task)
        prompt = self.prompt_ids(sample, task)
        target = self.target_ids(sample.target or task.format_target(sample.truth))
        return {
            "id": sample.id,
            "task": sample.task,
            "prompt_ids": torch.tensor(prompt, dtype=torch.long),
            "target_ids": torch.tensor(target, dtype=torch.long),
            "media": self.media(sample, task),
            "truth": sample.truth,
            "meta": sample.meta,
        }

    @staticmethod
    def collate(items: list[dict[str, Any] | None]) -> dict[str, Any]:
        """Batch items: unpadded ids/labels lists, time-padded media with masks, and the bookkeeping lists.

        ``None`` items (samples whose media could not be decoded) are dropped and counted in ``n_skipped``.
        """
        kept = [it for it in items if it is not None]
        batch: dict[str, Any] = {
            "ids": [it["id"] for it in kept],
            "tasks": [it["task"] for it in kept],
            "truths": [it["truth"] for it in kept],
            "metas": [it["meta"] for it in kept],
            "prompt_ids": [it["prompt_ids"] for it in kept],
            "input_ids": [torch.cat([it["prompt_ids"], it["target_ids"]]) for it in kept],
            "labels": [
                torch.cat([torch.full_like(it["prompt_ids"], IGNORE_INDEX), it["target_ids"]]) for it in kept
            ],
            "media": {},
            "n_skipped": len(items) - len(kept),
        }
        streams = sorted({s for it in kept for s in it["media"]})
        for stream in streams:
            present = [it["media"].get(stream) for it in kept]
            if any(p is None for p in present):
                missing = [it["id"] for it, p in zip(kept, present) if p is None]
                raise ValueError(f"samples {missing} lack {stream} media while others in the batch have it")
            steps = max(p["inputs"].shape[0] for p in present)
            first = present[0]["inputs"]
            inputs = first.new_zeros((len(present), steps, *first.shape[1:]))
            times = torch.zeros(len(present), steps)
            mask = torch.zeros(len(present), steps, dtype=torch.bool)
            for b, p in enumerate(present):
                t = p["inputs"].shape[0]
                inputs[b, :t] = p["inputs"]
                times[b, :t] = p["timestamps"]
                mask[b, :t] = True
            batch["media"][stream] = {"inputs": inputs, "timestamps": times, "mask": mask}
        return batch

