"""Contract of a task: one folder of the AV-UIE v2 release (or its AVSynth counterpart).

A task owns the prompt (header + instruction), the media policy (frames, audio crop), the target format
(with or without explicit reasoning), a strict parser and its metrics. Parsers are pure Python and never raise.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from crabzoo.data.schema import AudioClip, Sample, VisualClip

GROUPS: tuple[str, ...] = (
    "matching",
    "action",
    "emotion",
    "qa",
    "temporal",
    "spatial",
    "captioning",
)
"""The seven task groups of AV-UIE v2."""


@dataclass(frozen=True)
class ParseFailure:
    """A generation the parser could not read; scored as wrong, never dropped.

    Attributes:
        reason: Why, e.g. ``"no <answer> tag"``.
        text: The offending text (possibly truncated).
    """

    reason: str
    text: str = ""

    def __bool__(self) -> bool:  # a failure is falsy so ``if pred:`` reads naturally
        return False


class Task(ABC):
    """One task folder: prompt, media policy, target format, parser and metrics.

    Attributes:
        name: Folder name in the release (``ave``, ``s4``, ...).
        group: One of :data:`GROUPS`.
        header: First line of the user turn (``This is a video and an audio:``).
        media: Media kinds in prompt order, e.g. ``("video", "audio")`` or ``("image", "audio")``.
        frames: Frames sampled per video (10; 4 for emotion tasks).
        splits: Splits the release ships (``("train",)`` for train-only tasks).
    """

    name: ClassVar[str]
    group: ClassVar[str]
    header: ClassVar[str]
    media: ClassVar[tuple[str, ...]] = ("video", "audio")
    frames: ClassVar[int] = 10
    splits: ClassVar[tuple[str, ...]] = ("train", "test")

    @abstractmethod
    def sample_from_record(self, record: dict[str, Any], index: int, split: str, task_dir: Path) -> Sample:
        """Build a :class:`Sample` from one record of ``<task_dir>/<split>.json``.

        Raises:
            crabzoo.errors.MalformedRecordError: a required field is missing or has the wrong type.
        """

    @abstractmethod
    def load_media(self, sample: Sample, loader: Any) -> dict[str, AudioClip | VisualClip]:
        """Decode and crop the sample's media with this task's policy: ``{"audio": ..., "visual": ...}``."""

    @abstractmethod
    def format_target(self, truth: dict[str, Any], evidence: str | None = None, reasoning: bool = True) -> str:
        """The assistant text for ``truth``: reasoning (``evidence``) then the tagged answer, or the bare answer."""

    @abstractmethod
    def parse(self, text: str) -> Any | ParseFailure:
        """Generated text -> structured prediction (same structure as ``Sample.truth``), or a ParseFailure."""

    @abstractmethod
    def make_metric(self) -> Any:
        """A fresh ``torchmetrics.Metric`` whose ``update(preds, truths)`` takes parser outputs and truths."""
