"""Decoding of the media files of AV-UIE v2 and AVSynth: audio, video frames, images and masks.

Audio is always returned as float32 mono at the loader's sample rate (16 kHz): ``.wav``/``.flac`` are read with
soundfile, everything else (``.mp3``, ``.mp4``, ``.m4a``, ``.avi`` ...) with PyAV and resampled by FFmpeg's
resampler. Video frames come from PyAV as uint8 RGB. Images are opened with Pillow (RGBA composited on white)
and masks are binary (any non-zero pixel is foreground).

Every failure (missing file, unreadable or empty stream, frame index out of range) raises :class:`MediaError`,
which the reader and the data module count as a skipped sample (or turn into a one-line error in strict mode).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

SOUNDFILE_SUFFIXES = (".wav", ".flac", ".ogg")
"""Audio suffixes read with soundfile; the others go through PyAV."""


class MediaError(Exception):
    """A media file that is missing or cannot be decoded.

    Args:
        path: The file.
        reason: What went wrong, e.g. ``"file not found"`` or ``"no video stream"``.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


def _resample_linear(wave: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Resample a mono waveform by linear interpolation (used only for WAVs not at the target rate)."""
    if src == dst or wave.size == 0:
        return wave
    n_out = int(round(wave.size * dst / src))
    t_out = np.arange(n_out, dtype=np.float64) * (src / dst)
    return np.interp(t_out, np.arange(wave.size, dtype=np.float64), wave).astype(np.float32)


class MediaLoader:
    """Reads audio, video frames, images and masks; every failure is a :class:`MediaError`.

    Args:
        sample_rate: Output rate of :meth:`read_audio` (Hz).
    """

    def __init__(self, sample_rate: int = 16000) -> None:
        self.sample_rate = int(sample_rate)

    @staticmethod
    def _exists(path: str | Path) -> Path:
        path = Path(path)
        if not path.is_file():
            raise MediaError(path, "file not found")
        return path

    # ------------------------------------------------------------------ audio
    def read_audio(self, path: str | Path) -> np.ndarray:
        """Decode an audio (or video) file to float32 mono at :attr:`sample_rate`.

        Raises:
            MediaError: missing file, no audio stream, or no samples.
        """
        path = self._exists(path)
        if path.suffix.lower() in SOUNDFILE_SUFFIXES:
            import soundfile as sf

            try:
                data, rate = sf.read(str(path), dtype="float32", always_2d=True)
            except Exception as err:  # soundfile raises several types (LibsndfileError, RuntimeError)
                raise MediaError(path, f"cannot decode audio: {err}") from None
            wave = _resample_linear(data.mean(axis=1).astype(np.float32), int(rate), self.sample_rate)
        else:
            wave = self._read_audio_av(path)
        if wave.size == 0:
            raise MediaError(path, "audio stream holds no samples")
        return np.ascontiguousarray(wave, dtype=np.float32)

    def _read_audio_av(self, path: Path) -> np.ndarray:
        import av

        chunks: list[np.ndarray] = []
        try:
            with av.open(str(path)) as container:
                if not container.streams.audio:
                    raise MediaError(path, "no audio stream")
                stream = container.streams.audio[0]
                resampler = av.AudioResampler(format="flt", layout="mono", rate=self.sample_rate)
                for frame in container.decode(stream):
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray().reshape(-1))
                for out in resampler.resample(None):
                    chunks.append(out.to_ndarray().reshape(-1))
        except MediaError:
            raise
        except Exception as err:  # av.error.* and decoder errors
            raise MediaError(path, f"cannot decode audio: {err}") from None
        return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)

    # ------------------------------------------------------------------ video
    def _decode_all(self, path: Path) -> tuple[list[np.ndarray], list[float], float]:
        import av

        frames: list[np.ndarray] = []
        times: list[float] = []
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise MediaError(path, "no video stream")
                stream = container.streams.video[0]
                rate = float(stream.average_rate or stream.guessed_rate or 0) or 1.0
                for i, frame in enumerate(container.decode(stream)):
                    frames.append(frame.to_ndarray(format="rgb24"))
                    times.append(float(frame.time) if frame.time is not None else i / rate)
        except MediaError:
            raise
        except Exception as err:
            raise MediaError(path, f"cannot decode video: {err}") from None
        if not frames:
            raise MediaError(path, "video stream holds no frames")
        return frames, times, rate

    def video_info(self, path: str | Path) -> tuple[int, float, float]:
        """``(num_frames, fps, duration_seconds)`` of a video file (frames are counted by decoding when needed).

        Raises:
            MediaError: missing file or no video stream.
        """
        import av

        path = self._exists(path)
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise MediaError(path, "no video stream")
                stream = container.streams.video[0]
                fps = float(stream.average_rate or stream.guessed_rate or 0)
                count = int(stream.frames or 0)
                duration = float(stream.duration * stream.time_base) if stream.duration else 0.0
        except MediaError:
            raise
        except Exception as err:
            raise MediaError(path, f"cannot open video: {err}") from None
        if count <= 0 or fps <= 0:
            frames, _, rate = self._decode_all(path)
            count, fps = len(frames), fps or rate
        if duration <= 0:
            duration = count / fps
        return count, fps, duration

    def read_video_frames(
        self,
        path: str | Path,
        indices: Sequence[int] | None = None,
        num_frames: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Decode frames of a video as RGB.

        Args:
            path: Video file.
            indices: Frame indices to keep (in the order given). Overrides ``num_frames``.
            num_frames: Keep this many frames at ``round(linspace(0, total - 1, num_frames))`` (endpoint-inclusive,
                as Crab+). ``None`` with ``indices=None`` keeps every frame.

        Returns:
            ``(frames, timestamps)``: uint8 ``(T, H, W, 3)`` and float64 ``(T,)`` seconds.

        Raises:
            MediaError: missing or corrupt file, or an index outside the video.
        """
        path = self._exists(path)
        frames, times, _ = self._decode_all(path)
        total = len(frames)
        if indices is None and num_frames is not None:
            if num_frames <= 0:
                raise MediaError(path, f"num_frames must be positive, got {num_frames}")
            indices = np.round(np.linspace(0, total - 1, num_frames)).astype(int).tolist()
        if indices is None:
            indices = list(range(total))
        bad = [int(i) for i in indices if not 0 <= int(i) < total]
        if bad:
            raise MediaError(path, f"frame indices {bad} outside the video's {total} frames")
        picked = np.stack([frames[int(i)] for i in indices])
        return picked, np.asarray([times[int(i)] for i in indices], dtype=np.float64)

    # ------------------------------------------------------------------ images
    def read_image(self, path: str | Path) -> np.ndarray:
        """An image as uint8 RGB ``(H, W, 3)``; RGBA (and LA/P with transparency) is composited on white.

        Raises:
            MediaError: missing or undecodable file.
        """
        from PIL import Image

        path = self._exists(path)
        try:
            with Image.open(path) as img:
                img.load()
                if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                    rgba = img.convert("RGBA")
                    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    out = Image.alpha_composite(white, rgba).convert("RGB")
                else:
                    out = img.convert("RGB")
                return np.asarray(out, dtype=np.uint8).copy()
        except Exception as err:
            raise MediaError(path, f"cannot decode image: {err}") from None

    def read_mask(self, path: str | Path) -> np.ndarray:
        """A binary mask ``(H, W)`` bool: any non-zero pixel (in any channel) is foreground.

        Raises:
            MediaError: missing or undecodable file.
        """
        from PIL import Image

        path = self._exists(path)
        try:
            with Image.open(path) as img:
                img.load()
                arr = np.asarray(img)
        except Exception as err:
            raise MediaError(path, f"cannot decode mask: {err}") from None
        if arr.ndim == 3:
            arr = arr.any(axis=2)
        return arr != 0
