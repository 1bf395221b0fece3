"""Prompts and media files of a user -> samples -> generations (batched, or streamed piece by piece).

:class:`Answerer` builds each sample with the model's own processor (``AVLLM.make_processor()``): the same chat
template, placeholders, frame sampling, audio crops and encoder preprocessing as in training. With a task
(``task="ks"``) the prompt is that task's exact prompt (header, media order and instruction) and the media follow
its policy; without one, the user's text is the instruction and :class:`FreeformTask` decides the media policy
(10 frames of a video, the audio in ten segments, as the video tasks do). Earlier turns (``history``) make a
multi-turn chat; the media always sit in the first user turn.

Generation is greedy with the KV cache (the backbone's ``generate``); :meth:`Answerer.stream` runs the very same
call in a worker thread with a streamer attached, so the pieces it yields concatenate to :meth:`generate`'s text.
"""

from __future__ import annotations

import queue
import string
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from crabzoo.data.media import MediaError
from crabzoo.data.schema import AudioClip, Sample, VisualClip
from crabzoo.errors import CrabzooError
from crabzoo.tasks.common import H_AV, H_IA, VideoTask

HEADERS: dict[tuple[str, ...], str] = {
    ("video", "audio"): H_AV,
    ("image", "audio"): H_IA,
    ("video",): "This is a video:",
    ("image",): "This is an image:",
    ("audio",): "This is an audio:",
}
"""Header of a free-form prompt, by the media kinds given (the tasks' headers where the tasks have them)."""


class FreeformTask(VideoTask):
    """The media policy and prompt header of a free-form question (not a registered task).

    Video frames and audio crops follow the video tasks (``frames`` frames over the whole video, the audio in
    ten segments); an image is one frame. The generation is returned as it is (``parse`` is the identity).

    Args:
        media: Media kinds given, in prompt order (a subset of ``("video" | "image", "audio")``).
    """

    name: ClassVar[str] = "freeform"
    group: ClassVar[str] = "qa"

    def __init__(self, media: tuple[str, ...]) -> None:
        self.media = tuple(media)
        self.header = HEADERS.get(self.media, "")

    def sample_from_record(self, record: dict[str, Any], index: int, split: str, task_dir: Path) -> Sample:
        raise CrabzooError("a free-form question has no annotation records")

    def load_media(self, sample: Sample, loader: Any) -> dict[str, AudioClip | VisualClip]:
        """The given media only: frames of the video (or the image as one frame) and the cropped audio."""
        out: dict[str, AudioClip | VisualClip] = {}
        if "video" in self.media:
            out["visual"] = self.read_frames(sample.video[0], loader)
        elif "image" in self.media:
            image = np.asarray(loader.read_image(sample.video[0]), dtype=np.uint8)
            out["visual"] = VisualClip(image[None], np.zeros(1))
        if "audio" in self.media:
            out["audio"] = self.read_audio(sample.audio[0], loader)
        return out

    def answer(self, truth: dict[str, Any]) -> str:
        return str(truth.get("answer", ""))

    def parse(self, text: str) -> Any:
        return text

    def make_metric(self) -> Any:
        raise CrabzooError("a free-form question has no metric")


def template_fields(template: str) -> list[str]:
    """Names of the ``{field}`` slots of an instruction template."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def _as_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [str(value)] if isinstance(value, (str, Path)) else [str(v) for v in value]


def _to_device(value: Any, device: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    return value


class _PieceStreamer:
    """A ``transformers`` streamer that turns generated ids into text pieces on a queue.

    Each piece is what the decoded text (special tokens dropped) gained since the last piece; text ending in an
    incomplete character is held back. The first ``put`` (the prompt, empty when generating from embeddings)
    is skipped. ``None`` on the queue marks the end.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.sent = ""
        self.queue: queue.Queue[str | None] = queue.Queue()
        self._prompt = True

    def put(self, value: Any) -> None:
        if self._prompt:
            self._prompt = False
            return
        self.ids.extend(int(i) for i in value.reshape(-1).tolist())
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd") or not text.startswith(self.sent) or len(text) == len(self.sent):
            return
        self.queue.put(text[len(self.sent) :])
        self.sent = text

    def end(self) -> None:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.startswith(self.sent) and len(text) > len(self.sent):
            self.queue.put(text[len(self.sent) :])
            self.sent = text
        self.queue.put(None)


@contextmanager
def _streaming(model: Any, streamer: _PieceStreamer) -> Iterator[None]:
    """Attach ``streamer`` to every ``generate`` call of the backbone's ``transformers`` model for a while."""
    from transformers import GenerationMixin

    hf = next((m for m in model.backbone.modules() if isinstance(m, GenerationMixin)), None)
    if hf is None:
        raise CrabzooError(f"{type(model.backbone).__name__} has no transformers model to stream from")
    original = type(hf).generate

    def generate(*args: Any, **kwargs: Any) -> Any:
        return original(hf, *args, streamer=streamer, **kwargs)

    hf.generate = generate
    try:
        yield
    finally:
        del hf.generate


class Answerer:
    """Ask a trained paradigm about media files: build samples, generate, stream.

    Args:
        model: A paradigm (:class:`~crabzoo.paradigms.base.AVLLM` or a subclass), e.g. from
            :func:`~crabzoo.inference.loading.load_trained`; it is put in eval mode.
    """

    def __init__(self, model: Any) -> None:
        self.model = model.eval()
        self.processor = model.make_processor()
        if hasattr(self.processor, "feature_cache"):  # the user's files never read or fill a training cache
            self.processor.feature_cache = None
        self.omni = hasattr(self.processor, "messages")  # the native omni processor renders its own chat

    @property
    def tokenizer(self) -> Any:
        """The backbone's tokenizer."""
        return self.model.backbone.tokenizer

    # ------------------------------------------------------------------ samples
    def sample(
        self,
        prompt: str,
        video: str | Sequence[str] | None = None,
        audio: str | Sequence[str] | None = None,
        image: str | None = None,
        task: str | None = None,
    ) -> tuple[Sample, Any]:
        """The :class:`Sample` of a question and the task that owns its prompt and media policy.

        With ``task``, the instruction is the task's own; a task whose instruction has a slot (``avqa``:
        ``{question}``, ``ref_avs``: ``{expr}``) takes ``prompt`` as its value. Without ``task``, ``prompt`` is the
        instruction and the media are the ones given.

        Raises:
            CrabzooError: unknown task, media the task needs but were not given (or given but not used), a missing
                prompt, or a missing file.
        """
        from crabzoo.tasks import get_task

        videos, audios = _as_list(video), _as_list(audio)
        if image is not None and videos:
            raise CrabzooError("give a video or an image, not both")
        visual = [str(image)] if image is not None else videos
        for path in [*visual, *audios]:
            if not Path(path).is_file():
                raise CrabzooError(f"{path}: file not found")
        prompt = (prompt or "").strip()
        if task is None:
            if not prompt:
                raise CrabzooError("the prompt is empty; write a question (or name a task)")
            kinds = (("image",) if image is not None else ("video",) if videos else ()) + (("audio",) if audios else ())
            task_obj: Any = FreeformTask(kinds)
            instruction = prompt
        else:
            task_obj = get_task(task)
            fields = template_fields(task_obj.instruction_template)
            if fields and not prompt:
                raise CrabzooError(
                    f"task {task} asks about {', '.join(fields)}: give it as the prompt (--prompt \"...\")"
                )
            if not fields and prompt:
                raise CrabzooError(f"task {task} has a fixed prompt; drop the prompt text or the task")
            instruction = task_obj.instruction_template.format(**{f: prompt for f in fields})
            self._check_media(task_obj, visual, audios, image is not None)
        sample = Sample(
            id="ask/0", task=task_obj.name, split="test", video=[Path(p) for p in visual], audio=[Path(p) for p in audios],
            instruction=instruction, meta={"audio_idx": 0},
        )
        return sample, task_obj

    @staticmethod
    def _check_media(task: Any, visual: list[str], audios: list[str], is_image: bool) -> None:
        kind = "image" if "image" in task.media else "video"
        if visual and is_image != (kind == "image"):
            raise CrabzooError(f"task {task.name} reads {'an image (--image)' if kind == 'image' else 'a video (--video)'}")
        want_visual = sum(k in ("video", "image") for k in task.media) * (2 if task.name == "a2v" else 1)
        want_audio = sum(k == "audio" for k in task.media) * (2 if task.name == "v2a" else 1)
        needs = []
        if len(visual) != want_visual:
            needs.append(f"{want_visual} {kind} file(s) (--{kind}), got {len(visual)}")
        if len(audios) != want_audio:
            needs.append(f"{want_audio} audio file(s) (--audio), got {len(audios)}")
        if needs:
            raise CrabzooError(f"task {task.name} needs {' and '.join(needs)}")

    def messages(self, sample: Sample, task: Any, history: Sequence[dict[str, str]] = ()) -> list[dict[str, Any]]:
        """The chat of a (standard processor) sample: system, earlier turns, then the question.

        The media placeholders sit in the first user turn (built by :func:`crabzoo.data.collate.user_content`
        from the task's header and media order); with no history this is exactly the training prompt.
        """
        from crabzoo.data.collate import user_content

        backbone = self.model.backbone
        turns = [dict(t) for t in history] + [{"role": "user", "content": sample.instruction}]
        if turns[0]["role"] != "user":
            raise CrabzooError(f"history must start with a user turn, got {turns[0]['role']!r}")
        first = turns[0]["content"]
        if task.media:
            first = user_content(task.header, task.media, first, backbone.placeholders, backbone.media_wrappers)
        turns[0] = {"role": "user", "content": first}
        system = getattr(self.processor, "system_prompt", None)
        return ([{"role": "system", "content": system}] if system else []) + turns

    def prompt_ids(self, sample: Sample, task: Any, history: Sequence[dict[str, str]] = ()) -> list[int]:
        """Token ids of a (standard processor) sample's prompt, one placeholder per medium; no media are read."""
        if not history and task.media:  # the training path itself
            return list(self.processor.prompt_ids(sample, task))
        text = self.model.backbone.render(self.messages(sample, task, history), add_generation_prompt=True)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def item(self, sample: Sample, task: Any, history: Sequence[dict[str, str]] | None = None) -> dict[str, Any]:
        """One item for the processor's ``collate`` (prompt ids and decoded, preprocessed media).

        Raises:
            CrabzooError: a media file that cannot be decoded (``"FILE: reason"``).
        """
        import torch

        history = [dict(t) for t in history or []]
        for turn in history:
            if turn.get("role") not in ("user", "assistant") or not isinstance(turn.get("content"), str):
                raise CrabzooError(f"history turns are {{'role': 'user' | 'assistant', 'content': str}}, got {turn!r:.80}")
        try:
            if self.omni:
                return self._omni_item(sample, task, history)
            prompt = self.prompt_ids(sample, task, history)
            media = self.processor.media(sample, task) if task.media else {}
        except MediaError as err:
            raise CrabzooError(f"{err.path}: {err.reason}") from None
        item = {
            "id": sample.id, "task": sample.task, "prompt_ids": torch.tensor(prompt, dtype=torch.long),
            "target_ids": torch.zeros(0, dtype=torch.long), "media": media, "truth": {}, "meta": dict(sample.meta),
        }
        if hasattr(self.processor, "mask_suffix"):  # the segmentation processor's collate reads these
            item.update(mask=None, has_mask=False)
        return item

    def _omni_item(self, sample: Sample, task: Any, history: list[dict[str, str]]) -> dict[str, Any]:
        from crabzoo.backbones.qwen_omni import IGNORE_INDEX

        first = Sample(id=sample.id, task=sample.task, split="test", video=sample.video, audio=sample.audio,
                       instruction=history[0]["content"] if history else sample.instruction, meta=sample.meta)
        chat = self.processor.messages(first, task, None)
        if history:
            chat += history[1:] + [{"role": "user", "content": sample.instruction}]
        media = self.processor.media(sample, task)
        inputs = self.model.backbone.prepare(
            chat, audio=media["audio"], videos=media["videos"], images=media["images"], add_generation_prompt=True
        )
        ids = inputs["input_ids"]
        prompt = {"input_ids": ids, "attention_mask": inputs["attention_mask"], "labels": ids.new_full(ids.shape, IGNORE_INDEX)}
        return {"id": sample.id, "task": sample.task, "inputs": inputs, "prompt": prompt, "truth": {}, "meta": dict(sample.meta)}

    def build(
        self,
        prompt: str,
        video: str | None = None,
        audio: str | None = None,
        image: str | None = None,
        task: str | None = None,
        history: list[dict] | None = None,
    ) -> dict[str, Any]:
        """One sample ready for collation: a question about media files (see :meth:`sample` and :meth:`item`).

        Args:
            prompt: The question (``""`` with a task whose prompt is fixed).
            video: Video file (a list for tasks that read two).
            audio: Audio file (a list for tasks that read two).
            image: Image file (instead of a video).
            task: Ask with this task's exact prompt and media policy.
            history: Earlier turns ``[{"role": "user" | "assistant", "content": ...}]``.

        Raises:
            CrabzooError: unknown task, missing media, or a file that cannot be read (``"FILE: reason"``).
        """
        sample, task_obj = self.sample(prompt, video=video, audio=audio, image=image, task=task)
        return self.item(sample, task_obj, history)

    # ------------------------------------------------------------------ lengths
    def context_length(self) -> int | None:
        """The LLM's context: ``max_position_embeddings`` of its transformers config (``None``: unknown)."""
        from transformers import GenerationMixin

        hf = next((m for m in self.model.backbone.modules() if isinstance(m, GenerationMixin)), None)
        config = getattr(hf, "config", None)
        if config is None:
            return None
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        value = getattr(text, "max_position_embeddings", None)
        return int(value) if value else None

    def media_positions(self, item: dict[str, Any]) -> int:
        """Positions the media of an item add to its prompt ids (their embeddings minus the placeholders they replace).

        Runs the encoders and connectors once. The omni processor's ids already hold one token per media
        position, so for it this is 0.
        """
        import torch

        if self.omni:
            return 0
        batch = self.collate([item])
        with torch.inference_mode():
            self.model._set_task_ids(batch)
            inputs, _, _ = self.model.splice(batch["prompt_ids"], None, self.model.media_embeddings(batch))
        return int(inputs.shape[1]) - int(item["prompt_ids"].shape[0])

    def prompt_length(self, prompt: str, history: Sequence[dict[str, str]], media_positions: int, **media: Any) -> int:
        """Positions of a question's prompt in the LLM: its tokens plus ``media_positions`` (:meth:`media_positions`).

        Only the text is tokenized (the media are not read again), except for the omni processor, whose prompt
        is rebuilt with its media.
        """
        if self.omni:
            item = self.build(prompt, history=list(history), **media)
            return int(item["inputs"]["input_ids"].shape[-1])
        sample, task = self.sample(prompt, **media)
        return len(self.prompt_ids(sample, task, history)) + media_positions

    # ------------------------------------------------------------------ generation
    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Batch items with the processor's ``collate``, on the model's device."""
        if not samples:
            raise CrabzooError("nothing to generate: no samples")
        return _to_device(self.processor.collate(list(samples)), self.model.device)

    def generate(self, samples: list[dict], max_new_tokens: int | None = None) -> list[str]:
        """Greedy generations (KV cache), one text per sample, batched."""
        import torch

        with torch.inference_mode():
            return self.model.generate(self.collate(samples), max_new_tokens)

    def stream(self, sample: dict, max_new_tokens: int | None = None) -> Iterator[str]:
        """Text pieces of one sample's greedy generation, as they are produced.

        The generation runs in a worker thread (the same call as :meth:`generate`, with a streamer attached);
        the pieces concatenate to :meth:`generate`'s text.
        """
        import torch

        batch = self.collate([sample])
        streamer = _PieceStreamer(self.tokenizer)
        failure: list[BaseException] = []

        def work() -> None:
            try:
                with torch.inference_mode(), _streaming(self.model, streamer):
                    self.model.generate(batch, max_new_tokens)
            except BaseException as err:  # re-raised in the caller's thread
                failure.append(err)
                streamer.queue.put(None)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        try:
            while True:
                piece = streamer.queue.get()
                if piece is None:
                    break
                yield piece
        finally:
            thread.join()
        if failure:
            raise failure[0]
