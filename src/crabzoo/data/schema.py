"""Typed records that flow through the data pipeline.

``annotations -> Sample -> (Task media policy + MediaLoader) -> AudioClip / VisualClip -> encoder preprocess``.
Nothing here imports torch: these types are cheap to build in data workers and in parsers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

Modality = Literal["audio", "visual"]
"""The two media streams of an AV-LLM. Images are visual clips with one frame."""


@dataclass
class Sample:
    """One instruction sample, as read from an AV-UIE v2 annotation record.

    Attributes:
        id: Unique id within its task and split (``<task>/<split>/<index>`` when the record has none).
        task: Task folder name, e.g. ``"ave"``.
        split: ``"train"`` or ``"test"``.
        video: Video (or image) files in media order, absolute paths. Images are listed here too.
        audio: Audio files in media order, absolute paths.
        instruction: The user instruction text (the header is owned by the task).
        target: Assistant text used for training (explicit reasoning + tagged answer); may be empty at test.
        truth: Structured ground truth for the metrics (task-specific keys, JSON-serialisable).
        meta: Other record fields kept for reports (question type, split of ref_avs, frame index, ...).
        record: The raw record as read from the JSON file.
    """

    id: str
    task: str
    split: str
    video: list[Path] = field(default_factory=list)
    audio: list[Path] = field(default_factory=list)
    instruction: str = ""
    target: str = ""
    truth: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class AudioClip:
    """Decoded, task-cropped audio: ``T`` segments of equal length at ``sample_rate``.

    Attributes:
        segments: float32 array ``(T, S)`` in [-1, 1]; one row per time step the encoder sees.
        sample_rate: Samples per second (16 kHz throughout crabzoo).
        starts: float array ``(T,)``, start time of each segment in seconds of the source clip.
    """

    segments: np.ndarray
    sample_rate: int
    starts: np.ndarray

    @property
    def waveform(self) -> np.ndarray:
        """All segments concatenated in order, ``(T * S,)``."""
        return self.segments.reshape(-1)


@dataclass
class VisualClip:
    """Decoded frames (or one image) at their native or policy size.

    Attributes:
        frames: uint8 array ``(T, H, W, 3)`` RGB.
        timestamps: float array ``(T,)``, time of each frame in seconds (0 for images).
    """

    frames: np.ndarray
    timestamps: np.ndarray
