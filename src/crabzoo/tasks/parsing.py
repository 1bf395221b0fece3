"""Audio-visual video parsing (LLP / AVVP): per-modality events with segment- and event-level F1."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from crabzoo.data.schema import Sample
from crabzoo.tasks.base import ParseFailure
from crabzoo.tasks.common import VideoTask, check_split
from crabzoo.tasks.parsers import canonical_events, format_avvp, parse_avvp


class AVVPTask(VideoTask):
    """AVVP: ``<visual>{label},({s} {e})</visual>`` and ``<audio>{label},({s} {e})</audio>`` blocks.

    The test record's ``event`` field holds the tagged string and is the reference.
    """

    name: ClassVar[str] = "avvp"
    group: ClassVar[str] = "temporal"
    instruction_template: ClassVar[str] = (
        "Please determine the events that occur based on the visual and audio information in the video, "
        "as well as the start and end times of these events."
    )
    target_field: ClassVar[str] = "label_content"
    answer_keys: ClassVar[tuple[str, ...]] = ("audio", "visual")
    answer_format: ClassVar[str] = "<visual>{label},({s} {e})({s} {e})</visual> <audio>{label},({s} {e})</audio>"
    reference: ClassVar[str] = "YapengTian/AVVP-ECCV20 utils/eval_metrics.py (segment / event F1, Type@AV, Event@AV)"
    chance_text: ClassVar[str] = "the trivial baseline (most frequent label, audio and visual, whole clip)"

    def sample_from_record(self, record: dict[str, Any], index: int, split: str, task_dir: Path) -> Sample:
        check_split(self, split)
        f = self._fields(record, index, split, task_dir)
        video = [self.video_path(task_dir, f.text("video_path"))]
        audio = [self.audio_path(task_dir, f.text("audio_path"))]
        f.require("filename", "vid")
        extra = f.avsynth()
        truth = None
        if isinstance(extra.get("audio"), list) and isinstance(extra.get("visual"), list):
            truth = {m: canonical_events([[str(l), s, e] for l, s, e in extra[m]]) for m in ("audio", "visual")}
        sources = [f.get("event", str)] if split == "test" else [f.record.get(self.target_field), f.record.get("event")]
        for source in sources:
            if truth is None and isinstance(source, str):
                parsed = self.parse(source)
                truth = None if isinstance(parsed, ParseFailure) else parsed
        if truth is None:
            if split == "test":
                raise f.error(f"field 'event' is not a tagged AVVP string: {f.record.get('event')!r:.80}")
            truth = {"audio": [], "visual": []}
        return self._sample(f, index, split, video=video, audio=audio, instruction=self.instruction_template,
                            target=self._target(f, split), truth=truth, meta={"vid": record.get("vid")})

    def answer(self, truth: dict[str, Any]) -> str:
        return format_avvp(truth)

    def parse(self, text: str) -> Any:
        return parse_avvp(text)

    def make_metric(self) -> Any:
        from crabzoo.metrics import AVVPMetric

        return AVVPMetric()

    def label_set(self, truths: Sequence[dict[str, Any]]) -> list[str]:
        counts: dict[str, int] = {}
        for t in truths:
            for m in ("audio", "visual"):
                for e in t.get(m, []):
                    counts[e[0]] = counts.get(e[0], 0) + 1
        return sorted(counts, key=lambda k: (-counts[k], k))

    def baseline(self, truth: dict[str, Any], labels: Sequence[str] = ()) -> Any:
        """The most frequent label in both modalities over the whole clip."""
        event = [[labels[0] if labels else "", 0, 10]]
        return {"audio": event, "visual": list(event)}
