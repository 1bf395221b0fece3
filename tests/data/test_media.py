"""MediaLoader: decode round-trips of WAV / MP3 / MP4 / AVI / JPG / PNG and MediaError on bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from crabzoo.data.avsynth.render_video import write_audio, write_video
from crabzoo.data.media import MediaError, MediaLoader


def tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_wav_round_trip_and_resampling(tmp_path: Path) -> None:
    loader = MediaLoader()
    wave = tone(1.0, 16000)
    sf.write(tmp_path / "a.wav", wave, 16000, subtype="PCM_16")
    back = loader.read_audio(tmp_path / "a.wav")
    assert back.dtype == np.float32 and back.shape == (16000,)
    assert np.max(np.abs(back - wave)) < 1.0 / 16000  # 16-bit quantisation only
    stereo = np.stack([tone(0.5, 32000), np.zeros(16000, np.float32)], axis=1)
    sf.write(tmp_path / "b.wav", stereo, 32000)
    mono = loader.read_audio(tmp_path / "b.wav")
    assert mono.shape == (8000,)  # 0.5 s at 16 kHz
    assert abs(np.abs(mono).max() - 0.25) < 0.01  # channel mean


def test_mp3_and_mp4_audio_decode_at_16k(tmp_path: Path) -> None:
    loader = MediaLoader()
    wave = tone(2.0, 16000, 1000.0)
    write_audio(tmp_path / "a.mp3", wave, 16000)
    mp3 = loader.read_audio(tmp_path / "a.mp3")
    assert abs(mp3.size - 32000) < 1200
    spectrum = np.abs(np.fft.rfft(mp3[4000:20000]))
    assert abs(np.argmax(spectrum) * 16000 / 16000 - 1000) < 5  # 1 kHz peak survives encoding
    frames = np.zeros((10, 32, 32, 3), np.uint8)
    write_video(tmp_path / "v.mp4", frames, 5, tone(2.0, 16000), 16000)
    assert abs(loader.read_audio(tmp_path / "v.mp4").size - 32000) < 2100


def test_video_frames_round_trip(tmp_path: Path) -> None:
    loader = MediaLoader()
    frames = np.zeros((20, 32, 48, 3), np.uint8)
    for i in range(20):
        frames[i, :, :, 0] = 10 * i  # red ramps with time
    write_video(tmp_path / "v.mp4", frames, 2, None, 16000)
    assert loader.video_info(tmp_path / "v.mp4") == (20, 2.0, 10.0)
    got, times = loader.read_video_frames(tmp_path / "v.mp4", num_frames=10)
    idx = np.round(np.linspace(0, 19, 10)).astype(int)
    assert got.shape == (10, 32, 48, 3) and got.dtype == np.uint8
    np.testing.assert_allclose(times, idx / 2.0)
    assert np.abs(got.astype(int) - frames[idx].astype(int)).mean() < 4
    sel, _ = loader.read_video_frames(tmp_path / "v.mp4", indices=[19, 0])
    assert sel[0, 0, 0, 0] > sel[1, 0, 0, 0]
    with pytest.raises(MediaError, match="outside the video"):
        loader.read_video_frames(tmp_path / "v.mp4", indices=[20])
    write_video(tmp_path / "v.avi", frames, 2, tone(10.0, 16000), 16000)
    assert loader.video_info(tmp_path / "v.avi")[0] == 20


def test_image_rgba_on_white_and_masks(tmp_path: Path) -> None:
    loader = MediaLoader()
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red, the rest transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = loader.read_image(tmp_path / "a.png")
    assert img.shape == (4, 4, 3) and tuple(img[0, 0]) == (255, 0, 0) and tuple(img[3, 3]) == (255, 255, 255)
    mask = np.zeros((4, 4, 3), np.uint8)
    mask[1, 2] = (0, 0, 7)  # any non-zero channel is foreground
    Image.fromarray(mask).save(tmp_path / "m.png")
    m = loader.read_mask(tmp_path / "m.png")
    assert m.dtype == bool and m.sum() == 1 and m[1, 2]


def test_missing_and_corrupt_media_raise_media_error(tmp_path: Path) -> None:
    loader = MediaLoader()
    with pytest.raises(MediaError, match="file not found") as info:
        loader.read_audio(tmp_path / "nope.wav")
    assert info.value.path.endswith("nope.wav") and not isinstance(info.value, __import__("crabzoo").errors.CrabzooError)
    for name in ("bad.wav", "bad.mp3", "bad.mp4", "bad.jpg", "bad.png"):
        (tmp_path / name).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(MediaError):
        loader.read_audio(tmp_path / "bad.wav")
    with pytest.raises(MediaError):
        loader.read_audio(tmp_path / "bad.mp3")
    with pytest.raises(MediaError):
        loader.read_video_frames(tmp_path / "bad.mp4")
    with pytest.raises(MediaError):
        loader.read_image(tmp_path / "bad.jpg")
    with pytest.raises(MediaError):
        loader.read_mask(tmp_path / "bad.png")
    sf.write(tmp_path / "a.wav", tone(0.1, 16000), 16000)
    with pytest.raises(MediaError, match="no video stream"):
        loader.read_video_frames(tmp_path / "a.wav")
