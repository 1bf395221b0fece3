"""The HTTP side of ``crabzoo serve``: OpenAI's ``POST /v1/chat/completions`` and ``GET /v1/models``.

A LitServe ``LitSpec``: its endpoints run in the API server process. A request body is checked, its media
resolved and probed (:func:`crabzoo.serve.requests.parse_request`) before it is queued for the inference
worker, so a bad request is answered at once with a 4xx JSON error in OpenAI's shape and never reaches the
model. The worker's first message for a request tells whether its sample could be built; only then does a
streamed answer start (``text/event-stream`` chunks of ``chat.completion.chunk``, then ``data: [DONE]``), so
even media that fail to decode in the worker give a JSON error, not a broken stream.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from litserve.specs.base import LitSpec
from litserve.utils import LitAPIStatus, ResponseBufferItem

from crabzoo.serve.errors import ApiError
from crabzoo.serve.limits import Limits
from crabzoo.serve.requests import ChatRequest, parse_request


def _error_response(err: ApiError) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(err.body(), status_code=err.status)


class ChatSpec(LitSpec):
    """OpenAI-compatible chat completions for one model.

    Args:
        model_name: The name clients pass as ``model`` (and ``GET /v1/models`` lists).
        limits: Media and token limits of one request.
    """

    def __init__(self, model_name: str, limits: Limits) -> None:
        super().__init__()
        self.api_path = "/v1/chat/completions"
        self.model_name = model_name
        self.limits = limits
        self.created = int(time.time())

    @property
    def stream(self) -> bool:
        return True

    def pre_setup(self, lit_api: Any) -> None:
        self.add_endpoint(self.api_path, self.chat_completion, ["POST"])
        self.add_endpoint("/v1/models", self.list_models, ["GET"])

    def decode_request(self, request: Any, context_kwargs: dict | None = None) -> Any:
        return request

    def encode_response(self, output: Any, context_kwargs: dict | None = None) -> Any:
        yield from output

    # ------------------------------------------------------------------ endpoints
    async def list_models(self) -> dict[str, Any]:
        """``{"object": "list", "data": [{"id": MODEL, "object": "model", ...}]}``."""
        return {"object": "list", "data": [
            {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "crabzoo"}
        ]}

    async def chat_completion(self, request: Request) -> Any:
        """Answer one chat completion request (JSON, or server-sent events with ``stream: true``)."""
        from fastapi.responses import StreamingResponse

        try:
            chat = await self._parse(request)
        except ApiError as err:
            return _error_response(err)
        uid = uuid.uuid4()
        messages = self._submit(uid, chat)
        try:
            first = await self._next(messages)
            if "error" in first:
                raise ApiError.from_body(first, int(first.get("status", 400)))
        except ApiError as err:
            self._release(uid, chat)
            return _error_response(err)
        except BaseException:
            self._release(uid, chat)
            raise
        if chat.stream:
            return StreamingResponse(self._events(uid, chat, messages, first), media_type="text/event-stream")
        try:
            text, reason, tokens = "", "stop", 0
            async for message in messages:
                if message.get("done"):
                    text, reason, tokens = message["text"], message["finish_reason"], message["completion_tokens"]
        except ApiError as err:
            return _error_response(err)
        finally:
            self._release(uid, chat)
        return {
            "id": f"chatcmpl-{uid.hex[:24]}", "object": "chat.completion", "created": int(time.time()),
            "model": chat.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}],
            "usage": self._usage(first, tokens),
        }

    # ------------------------------------------------------------------ internals
    async def _parse(self, request: Request) -> ChatRequest:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.limits.max_body_bytes:
            raise ApiError(f"the body holds {length} bytes, over the limit of {self.limits.max_body_bytes}",
                           status=413, code="body_too_large")
        raw = await request.body()
        if len(raw) > self.limits.max_body_bytes:
            raise ApiError(f"the body holds {len(raw)} bytes, over the limit of {self.limits.max_body_bytes}",
                           status=413, code="body_too_large")
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ApiError(f"the body is not valid JSON ({err})", code="invalid_json") from None
        return await asyncio.to_thread(parse_request, body, self.limits, (self.model_name,))

    def _submit(self, uid: uuid.UUID, chat: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        """Queue the request for the inference worker; its messages, decoded, as they come."""
        queue: deque = deque()
        event = asyncio.Event()
        self.response_buffer[uid] = ResponseBufferItem(response_queue=queue, event=event)
        self.request_queue.put((self.response_queue_id, uid, time.monotonic(), chat.payload()))

        async def messages() -> AsyncIterator[dict[str, Any]]:
            async for data, status in self.data_streamer(queue, event, send_status=True):
                if status == LitAPIStatus.ERROR:
                    code = getattr(data, "status_code", 500)
                    detail = getattr(data, "detail", None) or "the model failed on this request; see the server log"
                    raise ApiError(str(detail), status=int(code), code="server_error")
                message = json.loads(data) if data else {}
                if message:
                    yield message

        return messages()

    @staticmethod
    async def _next(messages: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
        try:
            return await messages.__anext__()
        except StopAsyncIteration:
            raise ApiError("the inference worker sent no answer", status=500, code="server_error") from None

    def _release(self, uid: uuid.UUID, chat: ChatRequest) -> None:
        self.response_buffer.pop(uid, None)
        chat.cleanup()

    @staticmethod
    def _usage(first: dict[str, Any], completion: int) -> dict[str, int]:
        prompt = int(first.get("prompt_tokens", 0))
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def _events(
        self, uid: uuid.UUID, chat: ChatRequest, messages: AsyncIterator[dict[str, Any]], first: dict[str, Any]
    ) -> AsyncIterator[str]:
        """Server-sent events of a streamed answer: role, text pieces, the finish reason, ``[DONE]``."""
        cid, created = f"chatcmpl-{uid.hex[:24]}", int(time.time())

        def chunk(delta: dict[str, Any], reason: str | None = None, usage: dict | None = None) -> str:
            body: dict[str, Any] = {
                "id": cid, "object": "chat.completion.chunk", "created": created, "model": chat.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": reason}] if usage is None else [],
            }
            if usage is not None:
                body["usage"] = usage
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

        try:
            yield chunk({"role": "assistant", "content": ""})
            async for message in messages:
                if message.get("delta"):
                    yield chunk({"content": message["delta"]})
                if message.get("done"):
                    yield chunk({}, message["finish_reason"])
                    if chat.include_usage:
                        yield chunk({}, usage=self._usage(first, message["completion_tokens"]))
            yield "data: [DONE]\n\n"
        except ApiError as err:
            yield f"data: {json.dumps(err.body())}\n\n"
        finally:
            self._release(uid, chat)
