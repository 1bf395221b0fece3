"""Greedy generation of a batch of requests, with each row's new text handed out step by step.

One ``generate`` call serves the whole batch (the paradigm's own, KV cache, left padding); a streamer
attached to it collects the new token of every row at each step. A row stops at its end-of-sequence token or
at its own ``max_tokens`` (greedy decoding makes the first ``k`` tokens of a longer run the answer of a run of
``k`` tokens), so requests with different lengths share one batch.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class RowStep:
    """What one row gained at a step.

    Attributes:
        piece: New text (``""`` when the row gained none, or has finished).
        done: The row has finished (set once, at the step it finishes).
        text: The whole answer once done (the tokens decoded at once, as ``Answerer.generate`` does).
        finish_reason: ``"stop"`` (end of sequence) or ``"length"`` (``max_tokens`` reached), once done.
        tokens: Tokens generated so far.
    """

    piece: str = ""
    done: bool = False
    text: str = ""
    finish_reason: str = ""
    tokens: int = 0


class BatchStreamer:
    """A ``transformers`` streamer for a batch: per-row ids, text pieces and finish states.

    Args:
        tokenizer: The backbone's tokenizer.
        limits: The most tokens each row may generate.
        eos_ids: Token ids that end a row.
    """

    def __init__(self, tokenizer: Any, limits: Sequence[int], eos_ids: set[int]) -> None:
        self.tokenizer = tokenizer
        self.limits = list(limits)
        self.eos_ids = eos_ids
        self.ids: list[list[int]] = [[] for _ in limits]
        self.sent = ["" for _ in limits]
        self.done = [False for _ in limits]
        self.queue: queue.Queue[list[RowStep] | None] = queue.Queue()
        self._prompt = True

    def _finish(self, row: int, reason: str, step: RowStep) -> None:
        text = self.tokenizer.decode(self.ids[row], skip_special_tokens=True)
        if text.startswith(self.sent[row]) and len(text) > len(self.sent[row]):
            step.piece += text[len(self.sent[row]) :]
            self.sent[row] = text
        self.done[row] = True
        step.done, step.text, step.finish_reason = True, text, reason

    def put(self, value: Any) -> None:
        if self._prompt:  # the prompt (empty when generating from embeddings)
            self._prompt = False
            return
        new = [int(i) for i in value.reshape(-1).tolist()]
        steps = [RowStep() for _ in self.limits]
        for row, token in enumerate(new):
            step = steps[row]
            if self.done[row]:
                continue
            if token in self.eos_ids:
                self._finish(row, "stop", step)
                step.tokens = len(self.ids[row])
                continue
            self.ids[row].append(token)
            step.tokens = len(self.ids[row])
            if len(self.ids[row]) >= self.limits[row]:
                self._finish(row, "length", step)
                continue
            text = self.tokenizer.decode(self.ids[row], skip_special_tokens=True)
            if not text.endswith("\ufffd") and text.startswith(self.sent[row]) and len(text) > len(self.sent[row]):
                step.piece = text[len(self.sent[row]) :]
                self.sent[row] = text
        self.queue.put(steps)

    def end(self) -> None:
        steps = [RowStep(tokens=len(ids)) for ids in self.ids]
        for row in range(len(self.limits)):
            if not self.done[row]:
                self._finish(row, "stop" if len(self.ids[row]) < self.limits[row] else "length", steps[row])
        self.queue.put(steps)
        self.queue.put(None)


def stream_batch(answerer: Any, items: list[dict[str, Any]], limits: Sequence[int]) -> Iterator[list[RowStep]]:
    """Steps of one greedy generation over ``items`` (built by ``Answerer.build``), one list per step.

    The generation runs in a worker thread (the paradigm's ``generate`` with :class:`BatchStreamer`
    attached); its errors are raised here.
    """
    import torch

    from crabzoo.inference.session import _streaming

    model = answerer.model
    backbone = model.backbone
    eos_id = backbone.eos_token_id
    eos = {int(i) for i in ([eos_id] if isinstance(eos_id, int) else eos_id or [])}
    batch = answerer.collate(items)
    streamer = BatchStreamer(answerer.tokenizer, limits, eos)
    failure: list[BaseException] = []

    def work() -> None:
        try:
            with torch.inference_mode(), _streaming(model, streamer):
                model.generate(batch, max(limits))  # transformers calls streamer.end() when it stops
        except BaseException as err:  # re-raised in the caller's thread
            failure.append(err)
            streamer.queue.put(None)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            steps = streamer.queue.get()
            if steps is None:
                break
            yield steps
    finally:
        thread.join()
    if failure:
        raise failure[0]
