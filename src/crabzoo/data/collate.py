"""From a :class:`~crabzoo.data.schema.Sample` to model inputs, and from items to a batch.

:class:`Processor` runs in data workers: it decodes and crops the media with the task's policy, applies the
encoders' ``preprocess`` and tokenises the chat (prompt with the backbone's template, target + EOS). Its
``collate`` pads media along time (with a mask) and keeps token ids unpadded: the paradigm splices media
embeddings into them and pads after splicing.

With a :class:`~crabzoo.data.cache.FeatureCache`, the processor looks each sample's frozen-encoder features up
before decoding anything: a hit skips decode, crop, preprocess and encode (the item carries ``features``); a miss
is processed as usual and carries its ``cache_key``, and the paradigm stores the features it computes under that
key (:meth:`crabzoo.paradigms.base.AVLLM.encode_raw`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from crabzoo.backbones.base import MEDIA_WRAPPERS
from crabzoo.data.schema import Sample
from crabzoo.errors import CrabzooError

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
        feature_cache: Cache of frozen-encoder features (``None``: always decode and encode).
    """

    backbone: Any
    audio_encoder: Any = None
    visual_encoder: Any = None
    system_prompt: str | None = None
    max_target_tokens: int = 256
    loader: Any = None
    feature_cache: Any = None
    _prompt_cache: dict[tuple, list[int]] = field(default_factory=dict, repr=False)
    _fingerprints: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.loader is None:
            from crabzoo.data.media import MediaLoader

            self.loader = MediaLoader()
        self.fingerprint_encoders()

    def fingerprint_encoders(self) -> None:
        """(Re)compute the encoders' fingerprints for the cache keys, in the main process, not in every worker.

        The paradigm calls it again once checkpoint weights are restored, before data workers start.
        """
        if self.feature_cache is not None:
            self._fingerprints = {stream: str(encoder.fingerprint()) for stream, encoder in self.encoders().items()}

    def encoders(self) -> dict[str, Any]:
        """The encoders in use, by stream (``audio``, ``visual``)."""
        pairs = (("audio", self.audio_encoder), ("visual", self.visual_encoder))
        return {stream: encoder for stream, encoder in pairs if encoder is not None}

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

    def media(self, sample: Sample, task: Any) -> dict[str, dict[str, Any]]:
        """Per stream: cached features, or decoded, cropped and preprocessed media (raises MediaError on corrupt media).

        A cache hit gives ``{"features", "timestamps", "extra"}``; otherwise ``{"inputs", "timestamps"}``, plus
        ``cache_key`` (the entry to fill) when a cache is in use.
        """
        encoders = self.encoders()
        out: dict[str, dict[str, Any]] = {}
        keys: dict[str, str] = {}
        policy = media_policy(sample, task) if self.feature_cache is not None else None
        if policy is not None:
            for stream, encoder in encoders.items():
                key = self.feature_cache.key(encoder, sample.id, policy, fingerprint=self._fingerprints.get(stream))
                entry = self.feature_cache.get_entry(key)
                if entry is not None and "timestamps" in entry:
                    out[stream] = {
                        "features": entry["features"],
                        "timestamps": entry["timestamps"].float(),
                        "extra": {int(k.split(".", 1)[1]): v for k, v in entry.items() if k.startswith("layer.")},
                    }
                else:
                    keys[stream] = key.relpath
        if all(stream in out for stream in encoders):
            return out
        clips = task.load_media(sample, self.loader)
        for stream, encoder in encoders.items():
            clip = clips.get(stream)
            if stream in out or clip is None:
                continue
            times = clip.starts if stream == "audio" else clip.timestamps
            out[stream] = {
                "inputs": encoder.preprocess(clip),
                "timestamps": torch.as_tensor(times, dtype=torch.float32),
            }
            if stream in keys:
                out[stream]["cache_key"] = keys[stream]
        return out

    def __call__(self, sample: Sample) -> dict[str, Any]:
        """Process one sample into an item (see :meth:`collate`)."""
        from crabzoo.tasks import get_task

        task = get_task(sample.task)
        prompt = self.prompt_ids(sample, task)
        return {
            "id": sample.id,
            "task": sample.task,
            "prompt_ids": torch.tensor(prompt, dtype=torch.long),
            "target_ids": torch.tensor(self.reference_ids(sample, task), dtype=torch.long),
            "media": self.media(sample, task),
            "truth": sample.truth,
            "meta": sample.meta,
        }

    def reference_ids(self, sample: Sample, task: Any) -> list[int]:
        """Target ids of a sample: its target text, else the answer formatted from its truth.

        A test record may hold neither (the release's AVSBench and Ref-AVS test records carry a mask path, not the
        box and points an answer is written from): it then gets no target tokens, so the teacher-forced loss skips
        it, while generation and scoring against the mask go on. A training sample without one is an error.
        """
        if sample.target:
            return self.target_ids(sample.target)
        try:
            return self.target_ids(task.format_target(sample.truth))
        except CrabzooError:
            if sample.split == "train":
                raise
            return []

    @staticmethod
    def collate(items: list[dict[str, Any] | None]) -> dict[str, Any]:
        """Batch items: unpadded ids/labels lists, time-padded media with masks, and the bookkeeping lists.

        Skipped items (samples whose media could not be decoded, :func:`crabzoo.data.skips.skipped_item`, or
        ``None``) are left out of the tensors, counted in ``n_skipped`` and listed in ``skipped`` (task, id,
        split, truth, file, reason), so the main process can report and score them.
        """
        from crabzoo.data.skips import SKIPPED_KEY, split_skipped

        kept, skipped = split_skipped(items)
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
            SKIPPED_KEY: skipped,
        }
        batch["features"] = {}
        streams = sorted({s for it in kept for s in it["media"]})
        for stream in streams:
            present = [it["media"].get(stream) for it in kept]
            if any(p is None for p in present):
                missing = [it["id"] for it, p in zip(kept, present) if p is None]
                raise ValueError(f"samples {missing} lack {stream} media while others in the batch have it")
            lengths = [(p["inputs"] if "inputs" in p else p["features"]).shape[0] for p in present]
            steps = max(lengths)
            times = torch.zeros(len(present), steps)
            mask = torch.zeros(len(present), steps, dtype=torch.bool)
            for b, (p, t) in enumerate(zip(present, lengths)):
                times[b, :t] = p["timestamps"]
                mask[b, :t] = True
            entry: dict[str, Any] = {"timestamps": times, "mask": mask}
            fresh = [p["inputs"] for p in present if "inputs" in p]
            if fresh:  # rows of the samples without cached features, in batch order
                entry["inputs"] = _pad_time(fresh, steps)
            hit = [("features" in p) for p in present]
            if any(hit):
                zeros = next(p for p in present if "features" in p)
                tokens = [p["features"] if "features" in p else zeros["features"][:0] for p in present]
                extra = {
                    i: _pad_time([p["extra"][i] if "features" in p else x[:0] for p in present], steps)
                    for i, x in zeros["extra"].items()
                }
                entry["cached"] = torch.tensor(hit)
                batch["features"][stream] = {"tokens": _pad_time(tokens, steps), "extra": extra}
            keys = [p.get("cache_key") for p in present]
            if any(keys):
                entry["cache_keys"] = keys
            batch["media"][stream] = entry
        return batch


def _pad_time(rows: list[Tensor], steps: int) -> Tensor:
    """Stack ``(t, ...)`` tensors into ``(B, steps, ...)``, zero-padded along time."""
    out = rows[0].new_zeros((len(rows), steps, *rows[0].shape[1:]))
    for b, row in enumerate(rows):
        out[b, : row.shape[0]] = row
    return out


def media_policy(sample: Sample, task: Any) -> dict[str, Any] | None:
    """What, besides the encoder and the sample id, decides a sample's features: a feature-cache key part.

    The task and split (each task crops and samples media its own way), the task's frame count, and every
    media file's path, size and modification time, so regenerated or replaced media are never served stale
    features. ``None`` when a file cannot be read (the sample is then decoded, and fails, as usual).
    """
    files = []
    for path in [*sample.video, *sample.audio]:
        try:
            st = Path(path).stat()
        except OSError:
            return None
        files.append([str(path), st.st_size, st.st_mtime_ns])
    return {"task": sample.task, "split": sample.split, "policy": type(task).__qualname__, "frames": getattr(task, "frames", None), "files": files}

