"""Assistant targets of AVSynth: explicit reasoning (audio and visual evidence) then the tagged answer.

The tagged answers follow the canonical task formats shared with the task parsers (``crabzoo.tasks``). When
``USE_TASK_FORMATTERS`` is on, the task registry's ``format_target`` writes the targets instead, so the answer
format has a single owner; the structured truth passed to it is the record's ``avsynth`` dict.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

USE_TASK_FORMATTERS = True
"""Write targets with ``crabzoo.tasks.get_task(name).format_target`` instead of the local formatter."""


def _spans(spans: Sequence[Sequence[int]]) -> str:
    return "".join(f"({int(s)} {int(e)})" for s, e in spans)


def box_text(box: Sequence[int]) -> str:
    """``[x1,y1,x2,y2]``."""
    return "[" + ",".join(str(int(v)) for v in box) + "]"


def points_text(points: Sequence[Sequence[int]]) -> str:
    """``[x,y], [x,y], [x,y]``."""
    return ", ".join(f"[{int(x)},{int(y)}]" for x, y in points)


def group_spans(events: Sequence[Sequence[Any]]) -> list[tuple[str, list[tuple[int, int]]]]:
    """``[(label, s, e), ...]`` -> ``[(label, [(s, e), ...]), ...]`` in first-appearance order."""
    out: dict[str, list[tuple[int, int]]] = {}
    for label, s, e in events:
        out.setdefault(str(label), []).append((int(s), int(e)))
    return list(out.items())


def answer_text(task: str, truth: dict[str, Any]) -> str:
    """The tagged answer of ``task`` for the structured ``truth`` (the record's ``avsynth`` dict)."""
    if task in ("a2v", "v2a", "ks", "ucf", "emotion", "avqa", "avqa_thu"):
        return f"<answer>{truth['answer']}</answer>"
    if task in ("ave", "unav"):
        return " ".join(f"<event>{label}, {_spans(spans)}</event>" for label, spans in group_spans(truth["events"]))
    if task == "avvp":
        parts = [f"<visual>{label},{_spans(spans)}</visual>" for label, spans in group_spans(truth["visual"])]
        parts += [f"<audio>{label},{_spans(spans)}</audio>" for label, spans in group_spans(truth["audio"])]
        return " ".join(parts)
    if task in ("s4", "ms3"):
        return (
            f"The object making the sound is {truth['answer']}. Its bounding box is {box_text(truth['box'])} "
            f"and three points on it are {points_text(truth['points'])}."
        )
    if task == "ref_avs":
        if not truth["exists"]:
            return "<answer>false</answer> The object is absent."
        return (
            f"<answer>true</answer> The object is {truth['answer']}. Its bounding box is {box_text(truth['box'])} "
            f"and three points on it are {points_text(truth['points'])}."
        )
    if task == "arig":
        x1, y1, x2, y2 = (int(v) for v in truth["box"])
        return f"The sounding object is {truth['answer']}. Its coordinates are <obj>({x1},{y1})({x2},{y2})</obj>."
    if task == "avcap":
        return f"<answer>{truth['answer']}</answer>"
    raise KeyError(f"no AVSynth answer format for task {task!r}")


def format_target(task: str, truth: dict[str, Any], evidence: str, reasoning: bool = True) -> str:
    """Reasoning (``evidence``) followed by the tagged answer, or the bare answer when ``reasoning`` is off.

    The bare form of ``avcap`` is the caption alone, as in the release.
    """
    if USE_TASK_FORMATTERS:
        from crabzoo.tasks import get_task

        return get_task(task).format_target(truth, evidence, reasoning)
    if not reasoning:
        return str(truth["answer"]) if task == "avcap" else answer_text(task, truth)
    return f"{evidence.strip()} {answer_text(task, truth)}"
