"""Errors of the HTTP API in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A request the server refuses, answered as JSON with an HTTP status (the server keeps running).

    Args:
        message: What is wrong, for the caller.
        status: HTTP status (400 bad request, 404 unknown model, 413 body too large, ...).
        param: The request field at fault (``"model"``, ``"messages[0].content[1]"``), if any.
        code: A short machine-readable code (``"model_not_found"``, ``"invalid_media"``, ...).
    """

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code

    @property
    def type(self) -> str:
        """OpenAI's error type: ``invalid_request_error`` for 4xx, ``server_error`` otherwise."""
        return "invalid_request_error" if 400 <= self.status < 500 else "server_error"

    def body(self) -> dict[str, Any]:
        """The JSON body of the response."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    @classmethod
    def from_body(cls, body: dict[str, Any], status: int) -> ApiError:
        """The error of a :meth:`body` (as it comes back from the inference worker)."""
        err = body.get("error") or {}
        return cls(str(err.get("message", "error")), status, err.get("param"), err.get("code"))
