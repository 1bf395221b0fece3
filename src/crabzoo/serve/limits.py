"""What one request to ``crabzoo serve`` may ask for: media bytes and seconds, generated tokens."""

from __future__ import annotations

import re
from dataclasses import dataclass

from crabzoo.errors import CrabzooError

_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_size(text: str | int) -> int:
    """Bytes of a size such as ``25MB``, ``512KiB`` or ``1048576``.

    Raises:
        CrabzooError: text that is not a number with an optional unit (B, KB, MB, GB, KiB, MiB, GiB).
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise CrabzooError(f"{text!r} is not a size; write it as 25MB, 512KiB or a number of bytes")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


@dataclass(frozen=True)
class Limits:
    """Per-request limits; a request over any of them is answered with a 400 JSON error.

    Attributes:
        max_media_bytes: Largest media file (decoded base64 data or a local file), in bytes.
        max_media_seconds: Longest audio or video, in seconds.
        max_tokens: Most tokens one answer may generate (a request's ``max_tokens`` above it is refused);
            ``None`` leaves the model's own ``max_new_tokens`` as the cap.
    """

    max_media_bytes: int = 25_000_000
    max_media_seconds: float = 60.0
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.max_media_bytes < 1:
            raise CrabzooError(f"--max_media_bytes must be positive, got {self.max_media_bytes}")
        if self.max_media_seconds <= 0:
            raise CrabzooError(f"--max_media_seconds must be positive, got {self.max_media_seconds}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise CrabzooError(f"--max_tokens must be at least 1, got {self.max_tokens}")

    @property
    def max_body_bytes(self) -> int:
        """Largest request body: two media files in base64 (4/3 of their bytes) plus 1 MB of text."""
        return 2 * (self.max_media_bytes * 4 // 3 + 4) + 1_000_000
