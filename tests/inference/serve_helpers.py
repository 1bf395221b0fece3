"""Helpers of the ``crabzoo serve`` tests and benchmark: a server subprocess on a free port, media parts."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

MIME = {".mp4": "video/mp4", ".wav": "audio/wav", ".png": "image/png", ".jpg": "image/jpeg"}


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def data_url(path: Path) -> str:
    """``data:<mime>;base64,...`` of a file."""
    return f"data:{MIME[path.suffix]};base64,{base64.b64encode(path.read_bytes()).decode()}"


def media_parts(video: Path | None = None, audio: Path | None = None, image: Path | None = None,
                inline: bool = False) -> list[dict]:
    """Content parts of media files: paths on the server, or data URLs with ``inline``."""
    parts = []
    for kind, path in (("video_url", video), ("image_url", image), ("audio_url", audio)):
        if path is not None:
            parts.append({"type": kind, kind: {"url": data_url(path) if inline else str(path)}})
    return parts


def user_message(text: str, **media) -> list[dict]:
    """A one-message chat: the media parts, then the text."""
    return [{"role": "user", "content": [*media_parts(**media), {"type": "text", "text": text}]}]


def wait_ready(port: int, process: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    """Poll ``GET /health`` until it answers 200 (the model is loaded); fail with the log if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"crabzoo serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"crabzoo serve not ready after {timeout} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def serving(args: list[str], log: Path, port: int | None = None) -> Iterator[str]:
    """Run ``crabzoo serve ARGS --port P`` in a subprocess until the block ends; yields the base URL."""
    port = port or free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "crabzoo.cli", "serve", *args, "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT), start_new_session=True,
        )
    try:
        wait_ready(port, process, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """Ctrl-C the server's process group (LitServe shuts its workers down), then kill what is left."""
    import signal

    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
