"""OpenAI chat-completion bodies -> the question, earlier turns and media files the model is asked about.

Message content is a string or a list of parts:

- ``{"type": "text", "text": "..."}``
- ``{"type": "image_url", "image_url": {"url": URL}}``: an image
- ``{"type": "video_url", "video_url": {"url": URL}}``: a video (its frames; the audio is a separate part)
- ``{"type": "audio_url", "audio_url": {"url": URL}}``: an audio file
- ``{"type": "input_audio", "input_audio": {"data": BASE64, "format": "wav"}}``: OpenAI's audio part

A ``URL`` is a ``data:<mime>;base64,...`` URL, a ``file://`` URL or a path on the server's machine. A request
carries at most one image or video and one audio; they may sit in any user message and are given to the model
with the first user turn (where the training prompts put them). System messages are accepted and ignored: the
model keeps the system prompt it was trained with. The last message is the question (a user turn); the ones
before it are the history.
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from crabzoo.serve.errors import ApiError
from crabzoo.serve.limits import Limits

MEDIA_PARTS = {"image_url": "image", "video_url": "video", "audio_url": "audio", "input_audio": "audio"}
"""Content part type -> media kind."""

SUFFIXES = {
    "image/png": ".png", "image/jpeg": ".jpg", "image/jpg": ".jpg", "image/webp": ".webp", "image/gif": ".gif",
    "image/bmp": ".bmp", "audio/wav": ".wav", "audio/x-wav": ".wav", "audio/wave": ".wav", "audio/flac": ".flac",
    "audio/mpeg": ".mp3", "audio/mp3": ".mp3", "audio/ogg": ".ogg", "video/mp4": ".mp4", "video/webm": ".webm",
    "video/quicktime": ".mov", "video/x-matroska": ".mkv",
}
"""File suffix of a data URL's media type (the decoders pick their reader by suffix)."""


@dataclass
class ChatRequest:
    """One parsed chat completion request.

    Attributes:
        model: The model name asked for.
        prompt: Text of the last user message.
        history: Earlier user / assistant turns (text only).
        media: Media kind (``image``, ``video``, ``audio``) -> file on this machine.
        temporary: Files written from data URLs (removed once the answer is sent).
        max_tokens: Generation length asked for (``None``: the server's default).
        stream: Answer as server-sent events.
        include_usage: Streamed answers end with a chunk holding the token usage (``stream_options``).
        task: A crabzoo task name (extra body field ``task``): its exact prompt and media policy.
    """

    model: str
    prompt: str
    history: list[dict[str, str]] = field(default_factory=list)
    media: dict[str, str] = field(default_factory=dict)
    temporary: list[str] = field(default_factory=list)
    max_tokens: int | None = None
    stream: bool = False
    include_usage: bool = False
    task: str | None = None

    def payload(self) -> dict[str, Any]:
        """What the inference worker needs (plain, picklable values)."""
        return {
            "prompt": self.prompt, "history": self.history, "video": self.media.get("video"),
            "audio": self.media.get("audio"), "image": self.media.get("image"), "task": self.task,
            "max_tokens": self.max_tokens, "stream": self.stream,
        }

    def cleanup(self) -> None:
        """Remove the files written from data URLs."""
        for path in self.temporary:
            try:
                os.remove(path)
            except OSError:
                pass
        self.temporary.clear()


def _int_field(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ApiError(f"{name} must be a positive integer, got {value!r}", param=name, code="invalid_value")
    return value


def parse_request(body: Any, limits: Limits, models: tuple[str, ...]) -> ChatRequest:
    """Check a chat completion body and resolve its media into files (data URLs are written to temp files).

    Args:
        body: The decoded JSON body.
        limits: Media and token limits.
        models: The names this server answers to.

    Raises:
        ApiError: a malformed body (400), an unknown model (404), media that cannot be read or are over the
            limits (400).
    """
    if not isinstance(body, dict):
        raise ApiError("the body must be a JSON object with `model` and `messages`", code="invalid_body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError("`model` is required (a string; GET /v1/models lists it)", param="model", code="invalid_body")
    if model not in models:
        raise ApiError(
            f"the model {model!r} does not exist; this server serves {', '.join(map(repr, models))}",
            status=404, param="model", code="model_not_found",
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError("`messages` must be a non-empty list", param="messages", code="invalid_body")
    n = body.get("n", 1)
    if n not in (1, None):
        raise ApiError("only n = 1 is supported", param="n", code="invalid_value")
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise ApiError("`stream` must be true or false", param="stream", code="invalid_body")
    max_tokens = _int_field(body, "max_completion_tokens") or _int_field(body, "max_tokens")
    if max_tokens is not None and limits.max_tokens is not None and max_tokens > limits.max_tokens:
        raise ApiError(
            f"max_tokens is {max_tokens}, more than this server's limit of {limits.max_tokens}",
            param="max_tokens", code="max_tokens_exceeded",
        )
    task = body.get("task")
    if task is not None and not isinstance(task, str):
        raise ApiError("`task` must be a task name (a string)", param="task", code="invalid_body")
    options = body.get("stream_options") or {}
    request = ChatRequest(
        model=model, prompt="", max_tokens=max_tokens, stream=bool(stream), task=task,
        include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
    )
    try:
        turns = _turns(messages, request, limits)
    except BaseException:
        request.cleanup()
        raise
    if not turns or turns[-1]["role"] != "user":
        request.cleanup()
        raise ApiError("the last message must be the user's question", param="messages", code="invalid_body")
    if turns[0]["role"] != "user":
        request.cleanup()
        raise ApiError("the conversation must start with a user message", param="messages", code="invalid_body")
    request.prompt, request.history = turns[-1]["content"], turns[:-1]
    return request


def _turns(messages: list[Any], request: ChatRequest, limits: Limits) -> list[dict[str, str]]:
    turns: list[dict[str, str]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ApiError(f"{where} must be an object with `role` and `content`", param=where, code="invalid_body")
        role, content = message["role"], message.get("content")
        if role in ("system", "developer"):
            continue
        if role not in ("user", "assistant"):
            raise ApiError(f"{where}: role {role!r} is not supported (user, assistant, system)", param=where,
                           code="invalid_body")
        if isinstance(content, str):
            text = content
        elif isinstance(content, list):
            if role != "user" and any(isinstance(p, dict) and p.get("type") in MEDIA_PARTS for p in content):
                raise ApiError(f"{where}: only user messages carry media", param=where, code="invalid_body")
            text = "".join(_part(p, f"{where}.content[{j}]", request, limits) for j, p in enumerate(content))
        else:
            raise ApiError(f"{where}.content must be a string or a list of parts", param=f"{where}.content",
                           code="invalid_body")
        turns.append({"role": role, "content": text})
    if "image" in request.media and "video" in request.media:
        raise ApiError("give an image or a video, not both", param="messages", code="invalid_media")
    return turns


def _part(part: Any, where: str, request: ChatRequest, limits: Limits) -> str:
    """The text of a part (``""`` for media, which are resolved into ``request.media``)."""
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise ApiError(f"{where} must be an object with a `type`", param=where, code="invalid_body")
    kind = part["type"]
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise ApiError(f"{where}: a text part needs `text` (a string)", param=where, code="invalid_body")
        return part["text"]
    if kind not in MEDIA_PARTS:
        raise ApiError(
            f"{where}: unknown part type {kind!r} (text, image_url, video_url, audio_url, input_audio)",
            param=where, code="invalid_body",
        )
    media = MEDIA_PARTS[kind]
    if media in request.media:
        raise ApiError(f"{where}: a request carries one {media} at most", param=where, code="invalid_media")
    request.media[media] = _resolve(part, kind, media, where, request, limits)
    return ""


def _resolve(part: dict[str, Any], kind: str, media: str, where: str, request: ChatRequest, limits: Limits) -> str:
    """A file holding the part's media: a local path as it is, base64 data written to a temp file."""
    value = part.get(kind)
    if kind == "input_audio":
        if not isinstance(value, dict) or not isinstance(value.get("data"), str):
            raise ApiError(f"{where}: input_audio needs `data` (base64) and `format`", param=where, code="invalid_body")
        fmt = str(value.get("format") or "wav").lower()
        data = _b64(value["data"], where, limits)
        path = _write_temp(data, "." + fmt, request)
    else:
        url = value.get("url") if isinstance(value, dict) else value
        if not isinstance(url, str) or not url:
            raise ApiError(f"{where}: {kind} needs `url` (a data URL, file:// URL or path)", param=where,
                           code="invalid_body")
        if url.startswith("data:"):
            header, _, encoded = url.partition(",")
            mime = header[5:].split(";")[0].strip().lower()
            if ";base64" not in header:
                raise ApiError(f"{where}: data URLs must be base64 (data:<type>;base64,...)", param=where,
                               code="invalid_media")
            path = _write_temp(_b64(encoded, where, limits), SUFFIXES.get(mime, _default_suffix(media)), request)
        else:
            parsed = urlparse(url)
            if parsed.scheme in ("http", "https"):
                raise ApiError(f"{where}: remote URLs are not fetched; send a data URL or a path on the server",
                               param=where, code="invalid_media")
            path = unquote(parsed.path) if parsed.scheme == "file" else url
            if not Path(path).is_file():
                raise ApiError(f"{where}: {path}: file not found", param=where, code="invalid_media")
            size = Path(path).stat().st_size
            if size > limits.max_media_bytes:
                raise ApiError(f"{where}: {path} holds {size} bytes, over the limit of {limits.max_media_bytes}",
                               param=where, code="media_too_large")
    probe(path, media, where, limits)
    return path


def _default_suffix(media: str) -> str:
    return {"image": ".png", "video": ".mp4", "audio": ".wav"}[media]


def _b64(text: str, where: str, limits: Limits) -> bytes:
    if len(text) > limits.max_media_bytes * 4 // 3 + 4:
        raise ApiError(f"{where}: the media are over the limit of {limits.max_media_bytes} bytes", param=where,
                       code="media_too_large")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(f"{where}: the data is not valid base64", param=where, code="invalid_media") from None
    if len(data) > limits.max_media_bytes:
        raise ApiError(f"{where}: {len(data)} bytes of media, over the limit of {limits.max_media_bytes}",
                       param=where, code="media_too_large")
    return data


def _write_temp(data: bytes, suffix: str, request: ChatRequest) -> str:
    fd, path = tempfile.mkstemp(prefix="crabzoo-serve-", suffix=suffix)
    request.temporary.append(path)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def probe(path: str, media: str, where: str, limits: Limits) -> float:
    """Check that a media file opens and is not too long; its duration in seconds (0 for an image).

    Images are decoded; videos and soundfile audio (wav, flac, ogg) are read from their headers, other audio is
    decoded. A file that opens here but fails to decode later is refused by the inference worker (also a 400).

    Raises:
        ApiError: an undecodable file or one longer than ``limits.max_media_seconds``.
    """
    from crabzoo.data.media import MediaError, MediaLoader

    loader = MediaLoader()
    try:
        if media == "image":
            loader.read_image(path)
            return 0.0
        if media == "video":
            _, _, seconds = loader.video_info(path)
        else:
            seconds = _audio_seconds(path, loader)
    except MediaError as err:
        raise ApiError(f"{where}: cannot read the {media}: {err.reason}", param=where, code="invalid_media") from None
    if seconds > limits.max_media_seconds:
        raise ApiError(f"{where}: the {media} lasts {seconds:.1f} s, over the limit of {limits.max_media_seconds:g} s",
                       param=where, code="media_too_long")
    return seconds


def _audio_seconds(path: str, loader: object) -> float:
    """Duration of an audio file from its header (soundfile formats), else by decoding it."""
    from crabzoo.data.media import SOUNDFILE_SUFFIXES, MediaError

    if Path(path).suffix.lower() in SOUNDFILE_SUFFIXES:
        import soundfile as sf

        try:
            info = sf.info(path)
        except Exception as err:  # soundfile raises several types
            raise MediaError(path, f"cannot decode audio: {err}") from None
        if info.frames <= 0 or info.samplerate <= 0:
            raise MediaError(path, "audio stream holds no samples")
        return info.frames / info.samplerate
    return loader.read_audio(path).size / loader.sample_rate
