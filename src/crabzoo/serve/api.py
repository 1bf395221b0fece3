"""The inference worker of ``crabzoo serve``: a LitServe ``LitAPI`` that answers batches of chat requests.

LitServe collects concurrent requests into batches (``max_batch_size``, ``batch_timeout``) and calls
:meth:`ChatAPI.predict` with them; each request arrives as the payload of
:meth:`crabzoo.serve.requests.ChatRequest.payload`. ``predict`` yields one message per request at each step,
as JSON-ready dicts read by :class:`crabzoo.serve.spec.ChatSpec`:

- first ``{"ready": true, "prompt_tokens": N}``, or ``{"error": {...}, "status": 400}`` when the request's
  sample cannot be built (unknown task, media the task does not take, a file that does not decode);
- then ``{"delta": "text"}`` for a streamed request when its answer grew;
- last ``{"done": true, "text": ..., "finish_reason": ..., "completion_tokens": K}``;
- ``{}`` when a request has nothing new at a step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import litserve as ls

from crabzoo.errors import CrabzooError
from crabzoo.serve.errors import ApiError


class ChatAPI(ls.LitAPI):
    """Load a trained model once per worker and answer chat requests, batched and streamed.

    Args:
        ckpt_path: Checkpoint written by ``crabzoo fit``.
        config: Recipe / paradigm YAML files that build the model instead (see ``load_trained``).
        device: Torch device of the model (``cpu``, ``cuda``, ``cuda:1`` ...).
        max_tokens: Cap of one answer's tokens (``None``: the model's ``max_new_tokens``); also the default
            length of requests that give no ``max_tokens``.
        max_batch_size: Most requests LitServe puts in one batch.
        batch_timeout: Seconds LitServe waits for a batch to fill.
        spec: The HTTP side (:class:`crabzoo.serve.spec.ChatSpec`).
    """

    def __init__(
        self,
        ckpt_path: str | None,
        config: Sequence[str] = (),
        device: str = "cpu",
        max_tokens: int | None = None,
        max_batch_size: int = 1,
        batch_timeout: float = 0.0,
        spec: ls.specs.base.LitSpec | None = None,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, spec=spec)
        self.ckpt_path = ckpt_path
        self.config = list(config)
        self.model_device = device
        self.max_tokens = max_tokens
        self.answerer: Any = None

    def setup(self, device: str) -> None:
        """Load the model (``--device`` wins over LitServe's device) and its :class:`Answerer`."""
        import torch

        from crabzoo.inference.loading import load_trained
        from crabzoo.inference.session import Answerer

        torch.set_grad_enabled(False)
        model = load_trained(self.ckpt_path, config=self.config or None, map_location=self.model_device)
        self.answerer = Answerer(model)
        if self.max_tokens is None:
            self.max_tokens = int(model.max_new_tokens)

    def decode_request(self, request: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """The payload as the HTTP side made it."""
        return request

    def batch(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(inputs)

    def _item(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.answerer.build(
                request["prompt"], video=request["video"], audio=request["audio"], image=request["image"],
                task=request["task"], history=request["history"],
            )
        except CrabzooError as err:
            raise ApiError(str(err), param="messages", code="invalid_request") from None

    def predict(self, x: dict[str, Any] | list[dict[str, Any]], **kwargs: Any) -> Iterator[Any]:
        """Messages of every request of the batch, step by step (a list per step; one dict without batching)."""
        batched = isinstance(x, list)
        requests = list(x) if batched else [x]
        first: list[dict[str, Any]] = []
        items: dict[int, dict[str, Any]] = {}
        for i, request in enumerate(requests):
            try:
                items[i] = self._item(request)
                ids = items[i]["prompt_ids"] if "prompt_ids" in items[i] else items[i]["prompt"]["input_ids"]
                first.append({"ready": True, "prompt_tokens": int(ids.numel())})
            except ApiError as err:
                first.append({**err.body(), "status": err.status})
        yield first if batched else first[0]
        if not items:
            return
        from crabzoo.serve.generation import stream_batch

        rows = sorted(items)
        limits = [min(requests[i]["max_tokens"] or self.max_tokens, self.max_tokens) for i in rows]
        for steps in stream_batch(self.answerer, [items[i] for i in rows], limits):
            out: list[dict[str, Any]] = [{} for _ in requests]
            for i, step in zip(rows, steps):
                message: dict[str, Any] = {}
                if step.piece and requests[i]["stream"]:
                    message["delta"] = step.piece
                if step.done:
                    message.update(done=True, text=step.text, finish_reason=step.finish_reason,
                                   completion_tokens=step.tokens)
                out[i] = message
            yield out if batched else out[0]

    def encode_response(self, output: Iterator[Any], **kwargs: Any) -> Iterator[Any]:
        """The messages as they are (LitServe writes dicts as JSON lines)."""
        yield from output
