"""Drawing AVSynth scenes into frames and masks, and writing them as MP4/AVI, JPG and PNG.

Shapes are rasterised with numpy on the pixel grid, so the ground-truth mask of an object is exactly the set of
pixels painted with its colour. Videos are encoded with PyAV (H.264 through libx264, one thread, fixed options)
so that the same scene always decodes to the same frames.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from crabzoo.data.avsynth.render_audio import white_noise
from crabzoo.data.avsynth.world import COLOURS, EMOTIONS, Scene

BACKGROUND = np.array([38, 38, 46], dtype=np.float32)
"""Background colour (dark blue-grey)."""

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring", "hbar", "vbar", "x", "semicircle", "frame", "ellipse")
"""Shapes the renderer draws (one per category)."""


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of ``shape`` centred at the origin, half-size ``r`` pixels, on pixel offsets ``dx``, ``dy``."""
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "circle":
        return dx * dx + dy * dy < r * r
    if shape == "square":
        return np.maximum(ax, ay) < 0.85 * r
    if shape == "triangle":
        return (dy < 0.8 * r) & (ax < 0.55 * (dy + r))
    if shape == "diamond":
        return ax + ay < r
    if shape == "cross":
        return ((ax < 0.3 * r) & (ay < r)) | ((ay < 0.3 * r) & (ax < r))
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 < r * r) & (d2 > (0.55 * r) ** 2)
    if shape == "hbar":
        return (ax < r) & (ay < 0.4 * r)
    if shape == "vbar":
        return (ax < 0.4 * r) & (ay < r)
    if shape == "x":
        return (np.abs(ax - ay) < 0.3 * r) & (np.maximum(ax, ay) < 0.85 * r)
    if shape == "semicircle":
        return (dx * dx + dy * dy < r * r) & (dy < 0.2 * r)
    if shape == "frame":
        m = np.maximum(ax, ay)
        return (m < 0.9 * r) & (m > 0.5 * r)
    if shape == "ellipse":
        return (dx / r) ** 2 + (dy / (0.55 * r)) ** 2 < 1.0
    raise ValueError(f"unknown shape {shape!r}")


def texture_gain(texture: str, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Brightness multiplier of a texture at integer pixel coordinates."""
    if texture == "stripes":
        return np.where((xs // 2) % 2 == 0, np.float32(1.0), np.float32(0.6))
    if texture == "checker":
        return np.where(((xs // 3) + (ys // 3)) % 2 == 0, np.float32(1.0), np.float32(0.6))
    if texture == "dots":
        return np.where((xs % 3 == 1) & (ys % 3 == 1), np.float32(0.45), np.float32(1.0))
    return np.ones(xs.shape, dtype=np.float32)


def _face(canvas: np.ndarray, emotion: int, cx: float, cy: float, r: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Paint an expressive face glyph; returns its mask."""
    emo = EMOTIONS[emotion]
    dx, dy = xs + 0.5 - cx, ys + 0.5 - cy
    face = dx * dx + dy * dy < r * r
    canvas[face] = (245, 205, 90)
    dark = np.zeros_like(face)
    th = max(1.0, r * 0.08)
    for sx in (-1, 1):  # eyes
        ex, ey = cx + sx * 0.38 * r, cy - 0.22 * r
        dark |= (xs + 0.5 - ex) ** 2 + (ys + 0.5 - ey) ** 2 < (0.12 * r) ** 2
        # brows: a short segment above each eye, tilted by the emotion
        tilt = {"none": 0.0, "angry": 0.35, "worried": -0.35, "raised": 0.0}[emo.brows]
        lift = 0.16 * r if emo.brows == "raised" else 0.0
        if emo.brows != "none":
            bx = xs + 0.5 - ex
            line_y = ey - 0.3 * r - lift + tilt * (-sx) * bx
            dark |= (np.abs(bx) < 0.22 * r) & (np.abs(ys + 0.5 - line_y) < th)
    mx = xs + 0.5 - cx
    my = cy + 0.4 * r
    width = 0.45 * r
    inside = np.abs(mx) < width
    u = mx / width
    if emo.mouth == "smile":
        curve = my + 0.22 * r * (1 - u * u) - 0.11 * r
        dark |= inside & (np.abs(ys + 0.5 - curve) < th)
    elif emo.mouth == "frown":
        curve = my - 0.22 * r * (1 - u * u) + 0.11 * r
        dark |= inside & (np.abs(ys + 0.5 - curve) < th)
    elif emo.mouth == "flat":
        dark |= inside & (np.abs(ys + 0.5 - my) < th)
    elif emo.mouth == "wavy":
        curve = my + 0.1 * r * np.sin(u * 2 * math.pi)
        dark |= inside & (np.abs(ys + 0.5 - curve) < th)
    elif emo.mouth == "open":
        dark |= (mx / (0.2 * r)) ** 2 + ((ys + 0.5 - my) / (0.17 * r)) ** 2 < 1.0
    canvas[dark & face] = (40, 25, 20)
    return face


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Read-only integer pixel coordinates ``(ys, xs)`` of a ``size`` x ``size`` frame, as float32."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    ys.flags.writeable = False
    xs.flags.writeable = False
    return ys, xs


def render_frames(scene: Scene, size: int, times: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``scene`` at the given times.

    Args:
        scene: The scene.
        size: Width and height in pixels.
        times: Times in seconds (a frame shows the objects visible during second ``floor(t)``).

    Returns:
        ``(frames, masks)``: uint8 ``(T, size, size, 3)`` and bool ``(T, n_objects, size, size)`` (each object's
        painted pixels; for a face scene, one extra mask for the face).
    """
    ys, xs = _grid(size)
    rng = np.random.default_rng([scene.seed, 7])
    n_masks = len(scene.objects) + (1 if scene.face is not None else 0)
    canvas = np.empty((len(times), size, size, 3), dtype=np.float32)
    masks = np.zeros((len(times), n_masks, size, size), dtype=bool)
    canvas[:] = BACKGROUND + np.float32(6.0) * rng.standard_normal((size, size, 1), dtype=np.float32)
    xi, yi = xs.astype(int), ys.astype(int)
    gains = {obj.cat.texture: texture_gain(obj.cat.texture, xi, yi) for obj in scene.objects}
    colours = [np.array(COLOURS[obj.cat.colour], dtype=np.float32) for obj in scene.objects]
    for i, t in enumerate(times):
        second = min(int(math.floor(t + 1e-9)), scene.duration - 1)
        frame = canvas[i]
        for k, obj in enumerate(scene.objects):
            if not obj.visible[second]:
                continue
            x, y, r = obj.centre(t, scene.duration)
            cx, cy, rp = x * size - 0.5, y * size - 0.5, r * size  # pixel centres are at integer + 0.5
            m = shape_mask(obj.cat.shape, xs - np.float32(cx), ys - np.float32(cy), np.float32(rp))
            if not m.any():
                continue
            frame[m] = colours[k][None, :] * gains[obj.cat.texture][m][:, None]
            masks[i, k] = m
        if scene.face is not None:
            bob = 0.03 * size * math.sin(2 * math.pi * 0.5 * t)
            masks[i, -1] = _face(frame, scene.face, size / 2, size / 2 + bob, 0.4 * size, xs, ys)
    if scene.noise > 0:
        canvas += white_noise(np.random.default_rng([scene.seed, 11]), canvas.shape, 40.0 * scene.noise)
    np.rint(canvas, out=canvas)
    np.clip(canvas, 0, 255, out=canvas)
    return canvas.astype(np.uint8), masks


def _atomic_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")


X264_OPTIONS = {"preset": "ultrafast", "crf": "18", "threads": "1", "x264-params": "threads=1:sliced-threads=0"}
"""libx264 options: the fastest preset (at 64 x 64 pixels opening the encoder costs as much as all the frames) and
one thread."""

AAC_OPTIONS = {"aac_coder": "fast", "aac_pns": "0", "aac_tns": "0"}
"""Options of FFmpeg's AAC encoder: the fast quantiser search, no noise substitution, no temporal noise shaping."""

AAC_BIT_RATE = 48000
"""Bit rate of the MP4 soundtrack (mono, at the dataset's sample rate)."""

PNG_LEVEL = 1
"""zlib level of the mask PNGs (lossless at any level; 1 is about twice as fast as Pillow's default 6)."""

MP3_OPTIONS = {"compression_level": "7"}
"""libmp3lame options (``-q 7``: about twice as fast as LAME's default, ample for synthetic sounds)."""


def write_video(path: Path, frames: np.ndarray, fps: int, audio: np.ndarray | None, sample_rate: int) -> None:
    """Encode ``frames`` (and a mono soundtrack) with PyAV.

    ``.mp4`` files get H.264 video and an AAC soundtrack; ``.avi`` files (the ``ucf`` layout) get H.264 video and a
    16-bit PCM soundtrack, the classic AVI audio (MP3 through LAME would cost several times the rest of the clip).
    H.264 is encoded by libx264 with one thread and fixed options, so decoding is reproducible.
    """
    import av

    tmp = _atomic_target(path)
    fmt = "avi" if path.suffix.lower() == ".avi" else "mp4"
    with av.open(str(tmp), mode="w", format=fmt, options={"fflags": "+bitexact"}) as container:
        vs = container.add_stream("libx264", rate=int(fps))
        vs.width, vs.height = int(frames.shape[2]), int(frames.shape[1])
        vs.pix_fmt = "yuv420p"
        vs.thread_count = 1
        vs.options = dict(X264_OPTIONS)
        astream = None
        if audio is not None:
            if fmt == "avi":
                astream = container.add_stream("pcm_s16le", rate=int(sample_rate), layout="mono")
            else:
                astream = container.add_stream("aac", rate=int(sample_rate), layout="mono", options=dict(AAC_OPTIONS))
                astream.bit_rate = AAC_BIT_RATE
            astream.thread_count = 1
        for img in frames:
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in vs.encode(frame):
                container.mux(packet)
        for packet in vs.encode():
            container.mux(packet)
        if astream is not None:
            _encode_audio(container, astream, audio)
    os.replace(tmp, path)


def _encode_audio(container, stream, audio: np.ndarray) -> None:
    """Encode a mono signal in one call: PyAV cuts it into the codec's frame size inside FFmpeg."""
    import av

    formats = [f.name for f in stream.codec_context.codec.audio_formats or []]
    if "fltp" in formats:
        fmt, data = "fltp", np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    else:
        fmt, data = "s16", pcm16(audio)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data.reshape(1, -1)), format=fmt, layout="mono")
    frame.sample_rate = stream.rate
    frame.pts = 0
    for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def pcm16(audio: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] (clipped) as little-endian 16-bit PCM (full scale 32767, rounded to nearest)."""
    pcm = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    pcm *= np.float32(32767.0)
    return np.rint(pcm, out=pcm).astype("<i2")


def write_audio(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono audio: ``.wav`` as 16-bit PCM (the standard 44-byte RIFF header), ``.mp3`` through libmp3lame."""
    tmp = _atomic_target(path)
    if path.suffix.lower() == ".wav":
        import wave

        with wave.open(str(tmp), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(int(sample_rate))
            out.writeframes(pcm16(audio).tobytes())
    else:
        import av

        with av.open(str(tmp), mode="w", format="mp3", options={"fflags": "+bitexact"}) as container:
            stream = container.add_stream("libmp3lame", rate=int(sample_rate), layout="mono", options=dict(MP3_OPTIONS))
            stream.bit_rate = 64000
            _encode_audio(container, stream, audio)
    os.replace(tmp, path)


def write_jpg(path: Path, frame: np.ndarray) -> None:
    """Write an RGB frame as JPEG (quality 95, no chroma subsampling)."""
    from PIL import Image

    tmp = _atomic_target(path)
    Image.fromarray(frame).save(tmp, format="JPEG", quality=95, subsampling=0)
    os.replace(tmp, path)


def write_mask(path: Path, mask: np.ndarray, value: int = 255) -> None:
    """Write a binary mask as an 8-bit grayscale PNG (``value`` on the foreground, 0 elsewhere)."""
    from PIL import Image

    tmp = _atomic_target(path)
    Image.fromarray(np.where(mask, value, 0).astype(np.uint8)).save(tmp, format="PNG", compress_level=PNG_LEVEL)
    os.replace(tmp, path)


def write_label(path: Path, labels: np.ndarray) -> None:
    """Write a uint8 label map (e.g. category index + 1, 0 for background) as an 8-bit grayscale PNG."""
    from PIL import Image

    tmp = _atomic_target(path)
    Image.fromarray(labels.astype(np.uint8)).save(tmp, format="PNG", compress_level=PNG_LEVEL)
    os.replace(tmp, path)
