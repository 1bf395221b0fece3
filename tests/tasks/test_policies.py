"""Audio crop policies reproduce Crab+'s process_audio_by_task numbers."""

from __future__ import annotations

import numpy as np

from crabzoo.tasks.policies import (
    AVQA_WINDOWS,
    FIRST_4S,
    ONE_OF_5,
    ONE_OF_10,
    SEGMENTS_5,
    SEGMENTS_10,
    concat_clips,
    frame_indices,
)


def ramp(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float32)


def test_frame_indices_endpoint_inclusive() -> None:
    assert frame_indices(100, 10) == [0, 11, 22, 33, 44, 55, 66, 77, 88, 99]
    assert frame_indices(250, 4) == [0, 83, 166, 249]
    assert frame_indices(3, 4) == [0, 1, 1, 2]


def test_ten_segments_use_the_virtual_second() -> None:
    wave = ramp(160_009)  # s = floor(160009 / 10) = 16000; 9 trailing samples dropped
    clip = SEGMENTS_10(wave)
    assert clip.segments.shape == (10, 16000)
    np.testing.assert_array_equal(clip.waveform, wave[:160_000])
    clip = SEGMENTS_10(ramp(123_457))  # s = 12345
    assert clip.segments.shape == (10, 12345)
    np.testing.assert_allclose(clip.starts, np.arange(10) * 12345 / 16000)


def test_short_clip_is_padded_to_one_second() -> None:
    clip = SEGMENTS_10(np.ones(1000, dtype=np.float32))
    assert clip.segments.shape == (10, 1600)
    assert clip.waveform[:1000].sum() == 1000 and clip.waveform[1000:].sum() == 0


def test_first_four_seconds() -> None:
    clip = FIRST_4S(ramp(100_000))
    assert clip.segments.shape == (4, 16000)
    np.testing.assert_array_equal(clip.waveform, ramp(64_000))
    short = FIRST_4S(np.ones(20_000, dtype=np.float32))
    assert short.waveform.shape == (64_000,) and short.waveform.sum() == 20_000


def test_one_segment_by_index() -> None:
    wave = ramp(80_003)  # s = 16000
    clip = ONE_OF_5(wave, idx=3)
    np.testing.assert_array_equal(clip.waveform, wave[48_000:64_000])
    assert clip.starts.tolist() == [3.0]
    clip = ONE_OF_10(ramp(100_000), idx=9)  # s = 10000
    np.testing.assert_array_equal(clip.waveform, ramp(100_000)[90_000:100_000])
    whole = SEGMENTS_5(ramp(80_000))
    np.testing.assert_array_equal(whole.waveform, ramp(80_000))


def test_avqa_windows() -> None:
    wave = ramp(60 * 1000)  # K = 60 virtual seconds of s = 1000 samples
    clip = AVQA_WINDOWS(wave)
    assert clip.segments.shape == (20, 1000)
    out = clip.waveform.reshape(10, 2000)
    # window 0: 0.5 s of zeros, then [0, 1.5) s
    np.testing.assert_array_equal(out[0, :500], 0)
    np.testing.assert_array_equal(out[0, 500:], wave[:1500])
    # window k covers virtual seconds [6k - 0.5, 6k + 1.5)
    for k in range(1, 10):
        np.testing.assert_array_equal(out[k], wave[6000 * k - 500 : 6000 * k + 1500])
    assert clip.starts[:4].tolist() == [-0.5 / 16, 0.5 / 16, 5.5 / 16, 6.5 / 16]


def test_concat_two_audios() -> None:
    a, b = SEGMENTS_10(ramp(160_000)), SEGMENTS_10(ramp(160_000) + 1)
    clip = concat_clips([a, b])
    assert clip.segments.shape == (20, 16000)
    np.testing.assert_array_equal(clip.waveform, np.concatenate([a.waveform, b.waveform]))
    assert clip.starts[10] == 10.0
