"""The media operations of a preparer: link a file, cut or re-encode a video, extract audio or frames, probe a file.

Every operation writes to a hidden temporary name in the destination folder and renames it into place, so an
interrupted run never leaves a half-written file under a final name. Decoding and encoding go through PyAV.
Failures of the *source* (missing, truncated, no stream) raise :class:`~crabzoo.data.media.MediaError`, which
the engine records against the records that need the file; nothing is replaced by a placeholder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from crabzoo.data.media import MediaError, MediaLoader

SAMPLE_RATE = 16000
"""Rate of every extracted audio file (Hz, mono)."""

FRAME_SIZE = 224
"""Width and height of the frames :func:`extract_frames` writes (AVSBench's release resized its frames to this)."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".m4a", ".aac", ".ogg")


@contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """A temporary path next to ``path`` (same suffix) that replaces ``path`` when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def video_stream(container: Any, path: Path) -> Any:
    """The first video stream of an open PyAV container.

    Raises:
        MediaError: the file has no video stream.
    """
    if not container.streams.video:
        raise MediaError(path, "no video stream")
    return container.streams.video[0]


def kind_of(path: Path) -> str:
    """``"image"``, ``"audio"`` or ``"video"`` by file suffix."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in AUDIO_SUFFIXES:
        return "audio"
    return "video"


def probe(path: Path, deep: bool = False) -> float | None:
    """Check that ``path`` decodes; returns its duration in seconds (``None`` for images).

    The quick probe opens the container and decodes the first frame of the stream that matters (and the whole
    stream for audio); ``deep`` decodes every video frame as well.

    Raises:
        MediaError: missing file or a file that does not decode.
    """
    loader = MediaLoader(SAMPLE_RATE)
    kind = kind_of(path)
    if kind == "image":
        loader.read_image(path)
        return None
    if kind == "audio":
        return loader.read_audio(path).size / SAMPLE_RATE
    if deep:
        count, fps, duration = loader.video_info(path)
        loader.read_video_frames(path, indices=[count - 1])
        return duration
    import av

    if not path.is_file():
        raise MediaError(path, "file not found")
    try:
        with av.open(str(path)) as container:
            stream = video_stream(container, path)
            frame = next(container.decode(stream), None)
            if frame is None:
                raise MediaError(path, "video stream holds no frames")
            if stream.duration:
                return float(stream.duration * stream.time_base)
            if container.duration:
                return container.duration / 1_000_000
            return None
    except MediaError:
        raise
    except Exception as err:  # av.error.* on truncated or foreign files
        raise MediaError(path, f"cannot decode video: {err}") from None


def link(source: Path, dest: Path, copy: bool = False) -> None:
    """Hard-link ``source`` to ``dest`` (a copy across file systems, or with ``copy=True``)."""
    if not source.is_file():
        raise MediaError(source, "file not found")
    with atomic_target(dest) as tmp:
        tmp.unlink()
        if not copy:
            try:
                os.link(source, tmp)
                return
            except OSError:
                pass
        shutil.copyfile(source, tmp)


def _decode_audio(source: Path, start: float | None, end: float | None) -> np.ndarray:
    wave = MediaLoader(SAMPLE_RATE).read_audio(source)
    first = int(round((start or 0.0) * SAMPLE_RATE))
    last = wave.size if end is None else int(round(end * SAMPLE_RATE))
    if first >= wave.size:
        raise MediaError(source, f"audio is {wave.size / SAMPLE_RATE:.2f} s long, the cut starts at {start} s")
    return wave[first:last]


def extract_audio(source: Path, dest: Path, start: float | None = None, end: float | None = None) -> None:
    """Decode the audio of ``source`` (an audio or video file), cut ``[start, end)`` seconds, write mono 16 kHz.

    ``.wav`` destinations get 16-bit PCM, ``.mp3`` destinations MP3 through libmp3lame.

    Raises:
        MediaError: missing source, no audio stream, or a cut outside the audio.
    """
    from crabzoo.data.avsynth.render_video import write_audio

    wave = _decode_audio(source, start, end)
    if dest.suffix.lower() not in (".wav", ".mp3"):
        raise MediaError(dest, "extracted audio must be .wav or .mp3")
    write_audio(dest, wave, SAMPLE_RATE)


def transcode_video(source: Path, dest: Path, start: float | None = None, end: float | None = None) -> None:
    """Re-encode the video stream of ``source`` into ``dest`` (H.264, same frame rate), keeping ``[start, end)``.

    The result carries no soundtrack: every AV-UIE v2 task reads its audio from the separate audio file.

    Raises:
        MediaError: missing or undecodable source, or no frame inside the cut.
    """
    import av

    from crabzoo.data.avsynth.render_video import X264_OPTIONS

    if not source.is_file():
        raise MediaError(source, "file not found")
    written = 0
    with atomic_target(dest) as tmp:
        try:
            with av.open(str(source)) as inp:
                ins = video_stream(inp, source)
                rate = ins.average_rate or ins.guessed_rate or 25
                fmt = "avi" if dest.suffix.lower() == ".avi" else "mp4"
                with av.open(str(tmp), mode="w", format=fmt) as out:
                    vs = out.add_stream("libx264", rate=rate)
                    vs.width, vs.height = ins.codec_context.width // 2 * 2, ins.codec_context.height // 2 * 2
                    vs.pix_fmt = "yuv420p"
                    vs.options = dict(X264_OPTIONS)
                    for frame in inp.decode(ins):
                        t = float(frame.time) if frame.time is not None else 0.0
                        if start is not None and t < start - 1e-6:
                            continue
                        if end is not None and t >= end - 1e-6:
                            break
                        img = frame.to_ndarray(format="rgb24")[: vs.height, : vs.width]
                        new = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                        for packet in vs.encode(new):
                            out.mux(packet)
                        written += 1
                    for packet in vs.encode():
                        out.mux(packet)
        except MediaError:
            raise
        except Exception as err:
            raise MediaError(source, f"cannot decode video: {err}") from None
        if not written:
            raise MediaError(source, f"no video frame in the cut [{start}, {end}) s")


def second_frame_index(second: int, rate: float) -> int:
    """The frame AVSBench's release keeps for ``second``: 15/16 of the way through it.

    With ``r = round(rate)`` frames per second this is frame ``second * r + floor(15 * r / 16)`` (frame 23 of each
    second at 25 frames/s, frame 3 at 4 frames/s).
    """
    r = max(int(round(rate)), 1)
    return second * r + (15 * r) // 16


def extract_frames(source: Path, dests: list[Path], seconds: list[int], size: int | None = FRAME_SIZE) -> None:
    """Write one frame of ``source`` per second in ``seconds`` to the matching path in ``dests``, as PNG.

    The frame of each second is :func:`second_frame_index` (the last frame where the video is shorter); it is
    resized to ``size`` x ``size`` pixels (bilinear; ``None``: the video's own size) and written losslessly as
    PNG whatever the destination's suffix, since the frames it stands in for are PNG files.

    Raises:
        MediaError: missing or undecodable source, no video stream, or ``dests`` and ``seconds`` of different
            lengths.
    """
    import av
    from PIL import Image

    if len(dests) != len(seconds):
        raise MediaError(source, f"{len(dests)} destinations for {len(seconds)} seconds")
    if not source.is_file():
        raise MediaError(source, "file not found")
    try:
        with av.open(str(source)) as inp:
            stream = video_stream(inp, source)
            rate = float(stream.average_rate or stream.guessed_rate or 0)
            if rate <= 0:
                raise MediaError(source, "the video stream has no frame rate")
            wanted = {second_frame_index(s, rate) for s in seconds}
            last_wanted = max(wanted, default=-1)
            kept: dict[int, np.ndarray] = {}
            last: tuple[int, np.ndarray] | None = None
            for index, frame in enumerate(inp.decode(stream)):
                img = frame.to_ndarray(format="rgb24")
                last = (index, img)
                if index in wanted:
                    kept[index] = img
                if index >= last_wanted:
                    break
    except MediaError:
        raise
    except Exception as err:  # av.error.* on truncated or foreign files
        raise MediaError(source, f"cannot decode video: {err}") from None
    if last is None:
        raise MediaError(source, "video stream holds no frames")
    for dest, second in zip(dests, seconds):
        img = kept.get(second_frame_index(second, rate), last[1])  # past the end: the last frame, as the release
        picture = Image.fromarray(img)
        if size is not None and picture.size != (size, size):
            picture = picture.resize((size, size), Image.Resampling.BILINEAR)
        with atomic_target(dest) as tmp:
            picture.save(tmp, format="PNG")
