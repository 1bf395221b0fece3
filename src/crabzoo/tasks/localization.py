"""Temporal event localisation: AVE (one event, segment accuracy) and UnAV-100 (several events, mIoU / F1@t)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from crabzoo.data.schema import Sample
from crabzoo.tasks.base import ParseFailure
from crabzoo.tasks.common import Fields, VideoTask, check_split
from crabzoo.tasks.parsers import canonical_events, format_events, parse_events

INSTRUCTION = "Please describe the events and time range that occurred in the video."


def events_from_extra(f: Fields, key: str = "events") -> list[list[Any]] | None:
    """``[[label, start, end], ...]`` from the record's ``avsynth`` extra, or ``None``."""
    events = f.avsynth().get(key)
    if not isinstance(events, list):
        return None
    try:
        return canonical_events([[str(label), start, end] for label, start, end in events])
    except (TypeError, ValueError):
        raise f.error(f"avsynth.{key} must be a list of [label, start, end]") from None


class _Localization(VideoTask):
    group: ClassVar[str] = "temporal"
    instruction_template: ClassVar[str] = INSTRUCTION
    target_field: ClassVar[str] = "label_content"
    answer_keys: ClassVar[tuple[str, ...]] = ("events",)

    def answer(self, truth: dict[str, Any]) -> str:
        return format_events(truth["events"])

    def parse(self, text: str) -> Any:
        return parse_events(text)


class AVETask(_Localization):
    """AVE: ``<event>{label}, ({s} {e})</event>``; seconds outside the event are background."""

    name: ClassVar[str] = "ave"
    answer_format: ClassVar[str] = "<event>{label}, ({s} {e})</event>"
    reference: ClassVar[str] = "YapengTian/AVE-ECCV18 compute_acc (segment accuracy, 29 classes)"
    chance_text: ClassVar[str] = "1/(|labels| + 1) per segment (uniform guess incl. background; 1/29 on AVE)"

    def sample_from_record(self, record: dict[str, Any], index: int, split: str, task_dir: Path) -> Sample:
        check_split(self, split)
        f = self._fields(record, index, split, task_dir)
        video = [self.video_path(task_dir, f.text("video_path"))]
        audio = [self.audio_path(task_dir, f.text("audio_path"))]
        start, end = f.integer("start_time"), f.integer("end_time")
        events = [[f.text("event").strip(), start, end]]
        truth = {"events": events}
        return self._sample(f, index, split, video=video, audio=audio, instruction=self.instruction_template,
                            target=self._target(f, split), truth=truth, meta={"vid": f.get("vid", (str, int))})

    def make_metric(self) -> Any:
        from crabzoo.metrics import AVESegmentAccuracy

        return AVESegmentAccuracy()

    def baseline(self, truth: dict[str, Any], labels: Sequence[str] = ()) -> Any:
        """The whole clip labelled with the first event label of the label set."""
        return {"events": [[labels[0] if labels else "", 0, 10]]}

    def label_set(self, truths: Sequence[dict[str, Any]]) -> list[str]:
        return sorted({e[0] for t in truths for e in t.get("events", [])})

    def chance(self, truths: Sequence[dict[str, Any]] | None = None) -> dict[str, float]:
        labels = self.label_set(truths or [])
        return {"accuracy": 1.0 / (len(labels) + 1)} if labels else {"accuracy": 1.0 / 29}


class UnAVTask(_Localization):
    """UnAV-100 (clips cut to 10 s): one ``<event>`` block per label, several spans allowed."""

    name: ClassVar[str] = "unav"
    splits: ClassVar[tuple[str, ...]] = ("train",)
    answer_format: ClassVar[str] = "<event>{label}, ({s} {e})({s} {e})</event> per label"
    reference: ClassVar[str] = "crabzoo protocol: mIoU and F1@{0.3,0.5,0.7} (no official generative scorer)"
    chance_text: ClassVar[str] = "the trivial baseline (most frequent label over the whole clip)"

    def sample_from_record(self, record: dict[str, Any], index: int, split: str, task_dir: Path) -> Sample:
        check_split(self, split)
        f = self._fields(record, index, split, task_dir)
        video = [self.video_path(task_dir, f.text("video_path"))]
        audio = [self.audio_path(task_dir, f.text("audio_path"))]
        events = events_from_extra(f)
        target = f.record.get(self.target_field, "")
        if events is None and isinstance(target, str):
            parsed = self.parse(target)
            events = None if isinstance(parsed, ParseFailure) else parsed["events"]
        if events is None:
            if split == "test":
                raise f.error("no events: a test record needs 'avsynth.events' or a parseable 'label_content'")
            events = []
        if split == "train":
            f.require(self.target_field)
        return self._sample(f, index, split, video=video, audio=audio, instruction=self.instruction_template,
                            target=self._target(f, split), truth={"events": events},
                            meta={"vid": f.get("vid", (str, int))})

    def make_metric(self) -> Any:
        from crabzoo.metrics import UnAVGroundingMetric

        return UnAVGroundingMetric()

    def label_set(self, truths: Sequence[dict[str, Any]]) -> list[str]:
        counts: dict[str, int] = {}
        for t in truths:
            for e in t.get("events", []):
                counts[e[0]] = counts.get(e[0], 0) + 1
        return sorted(counts, key=lambda k: (-counts[k], k))

    def baseline(self, truth: dict[str, Any], labels: Sequence[str] = ()) -> Any:
        """The most frequent label over the whole clip."""
        return {"events": [[labels[0] if labels else "", 0, 10]]}
