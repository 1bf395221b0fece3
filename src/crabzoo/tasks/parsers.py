"""Strict parsers of the canonical answer formats (pure Python, no torch).

Every public ``parse_*`` function takes generated text and returns a structured prediction or a
:class:`~crabzoo.tasks.base.ParseFailure` with its reason. They never raise: any unexpected input (``None``,
bytes, a number) becomes a failure too. Each parser reads the forms the data shows: spaces inside tags, a
trailing ``</s>`` (text after it is ignored), upper-case tag names and the Crab v1 forms.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import Any

from crabzoo.tasks.base import ParseFailure

FRAME = 224
"""Side of the pixel frame that coordinates refer to (224 x 224, whatever the media resolution)."""

_STOP = re.compile(r"</s>|<\|im_end\|>|<\|endoftext\|>")
_NUM = r"\d+(?:\.\d+)?"
_SPAN = re.compile(rf"\(\s*({_NUM})\s*[, ]\s*({_NUM})\s*\)")
_BOX = re.compile(r"\[\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\]")
_POINT = re.compile(r"\[\s*(\d+)\s*,\s*(\d+)\s*\]")
_OBJ = re.compile(r"<\s*obj\s*>\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*<\s*/\s*obj\s*>", re.I)
_OBJ_V1 = re.compile(
    r"top left corner is\s*\(\s*(\d+)\s*,\s*(\d+)\s*\).*?bottom right corner is\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)",
    re.I | re.S,
)
_AVE_REF = re.compile(rf"event\s*:\s*(.+?)\s+start_time\s*:\s*({_NUM})\s+end_time\s*:\s*({_NUM})", re.I | re.S)
_AVVP = re.compile(r"<\s*(audio|visual)(?:_event)?\s*>(.*?)<\s*/\s*\1(?:_event)?\s*>", re.I | re.S)
_SEG_CATEGORY = re.compile(r"making the sound(?: in the video)? is\s+(.+?)(?:\.\s|\.$|$|\s*<)", re.I | re.S)
_REF_NAME = re.compile(r"The object is\s+(.+?)(?:\.\s|\.$|$)", re.I | re.S)
_ARIG_CATEGORY = re.compile(r"sounding object is\s+(.+?)(?:\.\s|\.$|$)", re.I | re.S)
_WORDS = {"1": "1", "one": "1", "first": "1", "2": "2", "two": "2", "second": "2"}


def never_raises(fn: Callable[[str], Any]) -> Callable[[Any], Any]:
    """Wrap a parser so that a non-string input or an unexpected error becomes a :class:`ParseFailure`."""

    @functools.wraps(fn)
    def wrapper(text: Any) -> Any:
        if not isinstance(text, str):
            return ParseFailure(f"expected text, got {type(text).__name__}", repr(text)[:200])
        try:
            return fn(text)
        except Exception as err:  # noqa: BLE001 - a parser reports, it never raises
            return ParseFailure(f"parser error: {type(err).__name__}: {err}", text[:200])

    return wrapper


def clean(text: str) -> str:
    """The generation up to the first end-of-sequence marker (``</s>``, ``<|im_end|>``), stripped."""
    return _STOP.split(text, maxsplit=1)[0].strip()


def _tag(name: str) -> re.Pattern[str]:
    return re.compile(rf"<\s*{name}\s*>(.*?)<\s*/\s*{name}\s*>", re.I | re.S)


_ANSWER, _EVENT, _RANGE = _tag("answer"), _tag("event"), _tag("range")


def _fail(reason: str, text: str) -> ParseFailure:
    return ParseFailure(reason, text[:200])


def _number(value: str) -> int | float:
    number = float(value)
    return int(number) if number.is_integer() else number


def answer_text(text: str, which: int = -1) -> str | None:
    """Content of the ``which``-th ``<answer>`` block (stripped), or ``None`` when there is none."""
    found = _ANSWER.findall(text)
    return found[which].strip() if found else None


# --------------------------------------------------------------------------- answers
@never_raises
def parse_answer(text: str) -> dict[str, str] | ParseFailure:
    """``<answer>X</answer>`` -> ``{"answer": "X"}`` (the last answer block)."""
    body = clean(text)
    answer = answer_text(body)
    if answer is None:
        return _fail("no <answer> tag", text)
    if not answer:
        return _fail("empty <answer> tag", text)
    return {"answer": answer}


@never_raises
def parse_choice(text: str) -> dict[str, str] | ParseFailure:
    """Matching answer: ``<answer>1</answer>`` / ``<answer>2</answer>`` (``one`` / ``two`` accepted)."""
    out = parse_answer(text)
    if isinstance(out, ParseFailure):
        return out
    choice = _WORDS.get(out["answer"].strip().strip(".").lower())
    if choice is None:
        return _fail(f"answer {out['answer']!r} is not 1 or 2", text)
    return {"answer": choice}


@never_raises
def parse_caption(text: str) -> dict[str, str] | ParseFailure:
    """Caption: the ``<answer>`` content when present, else the whole stripped text."""
    body = clean(text)
    caption = answer_text(body)
    caption = body if caption is None else caption
    if not caption:
        return _fail("empty caption", text)
    return {"caption": caption}


# --------------------------------------------------------------------------- temporal events
def _spans(body: str, horizon: float) -> list[list[int | float]] | str:
    spans = []
    for s, e in _SPAN.findall(body):
        start, end = _number(s), _number(e)
        if not 0 <= start < end <= horizon:
            return f"span ({s} {e}) is not inside [0, {horizon:g}] with start < end"
        spans.append([start, end])
    return spans


def canonical_events(events: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Events grouped by label (first-appearance order), spans sorted by start, duplicates removed.

    This is the order in which :func:`format_events` writes them and :func:`parse_events` reads them back.
    """
    order: dict[str, list[list[Any]]] = {}
    for label, start, end in events:
        spans = order.setdefault(str(label), [])
        if [start, end] not in spans:
            spans.append([start, end])
    return [[label, s, e] for label, spans in order.items() for s, e in sorted(spans)]


def _event_blocks(body: str, horizon: float) -> list[list[Any]] | str | None:
    blocks = _EVENT.findall(body)
    if not blocks:
        return None
    if not any(_SPAN.search(b) for b in blocks):
        ranges = _RANGE.findall(body)
        if not ranges:
            return "<event> tags without time spans or <range> tags"
        labels = [b.strip().strip(",").strip() for b in blocks]
        if len(labels) == 1:
            labels = labels * len(ranges)
        if len(labels) != len(ranges):
            return f"{len(labels)} <event> tags but {len(ranges)} <range> tags"
        events = []
        for label, rng in zip(labels, ranges):
            spans = _spans(f"({rng.strip()})", horizon)
            if isinstance(spans, str):
                return spans
            if not label or not spans:
                return f"unreadable v1 event {label!r} / range {rng!r}"
            events += [[label, s, e] for s, e in spans]
        return events
    events = []
    for block in blocks:
        head = block.split("(", 1)[0]
        label = head.strip().rstrip(",").strip()
        spans = _spans(block, horizon)
        if isinstance(spans, str):
            return spans
        if not label:
            return f"event block without a label: {block.strip()!r}"
        if not spans:
            return f"event {label!r} has no (start end) span"
        events += [[label, s, e] for s, e in spans]
    return events


def parse_events_text(text: str, horizon: float = 10) -> list[list[Any]] | ParseFailure:
    """Events ``[[label, start, end], ...]`` from ``<event>`` blocks, the v1 form or the AVE reference form."""
    body = clean(text)
    events = _event_blocks(body, horizon)
    if events is None:
        ref = _AVE_REF.search(body)
        if ref is None:
            return _fail("no <event> tag", text)
        start, end = _number(ref.group(2)), _number(ref.group(3))
        if not 0 <= start < end <= horizon:
            return _fail(f"start_time {start} / end_time {end} not inside [0, {horizon:g}]", text)
        events = [[ref.group(1).strip(), start, end]]
    if isinstance(events, str):
        return _fail(events, text)
    return canonical_events(events)


@never_raises
def parse_events(text: str) -> dict[str, list[list[Any]]] | ParseFailure:
    """Temporal events (ave, unav) -> ``{"events": [[label, start, end], ...]}`` (seconds, end exclusive)."""
    events = parse_events_text(text)
    return events if isinstance(events, ParseFailure) else {"events": events}


def format_events(events: Sequence[Sequence[Any]]) -> str:
    """``<event>{label}, ({s} {e})({s} {e})</event>`` blocks, one per label, separated by spaces."""
    blocks = []
    grouped: dict[str, list[str]] = {}
    for label, s, e in canonical_events(events):
        grouped.setdefault(label, []).append(f"({s} {e})")
    for label, spans in grouped.items():
        blocks.append(f"<event>{label}, {''.join(spans)}</event>")
    return " ".join(blocks)


@never_raises
def parse_avvp(text: str) -> dict[str, list[list[Any]]] | ParseFailure:
    """AVVP blocks -> ``{"audio": [[label, s, e], ...], "visual": [...]}`` (``<audio_event>`` accepted)."""
    body = clean(text)
    blocks = _AVVP.findall(body)
    if not blocks:
        return _fail("no <visual> or <audio> tag", text)
    out: dict[str, list[list[Any]]] = {"audio": [], "visual": []}
    for modality, block in blocks:
        head = block.split("(", 1)[0]
        label = head.strip().rstrip(",").strip()
        spans = _spans(block, 10)
        if isinstance(spans, str):
            return _fail(spans, text)
        if not label or not spans:
            return _fail(f"<{modality.lower()}> block needs a label and (start end) spans: {block.strip()!r}", text)
        out[modality.lower()] += [[label, s, e] for s, e in spans]
    return {"audio": canonical_events(out["audio"]), "visual": canonical_events(out["visual"])}


def format_avvp(events: dict[str, Sequence[Sequence[Any]]]) -> str:
    """``<visual>{label},({s} {e})...</visual>`` blocks then ``<audio>...</audio>`` blocks."""
    blocks = []
    for modality in ("visual", "audio"):
        grouped: dict[str, list[str]] = {}
        for label, s, e in canonical_events(events.get(modality, [])):
            grouped.setdefault(label, []).append(f"({s} {e})")
        blocks += [f"<{modality}>{label},{''.join(spans)}</{modality}>" for label, spans in grouped.items()]
    return " ".join(blocks)


# --------------------------------------------------------------------------- spatial
def _valid_box(box: Sequence[int], limit: int = FRAME) -> bool:
    x1, y1, x2, y2 = box
    return all(0 <= v < limit for v in box) and x1 < x2 and y1 < y2


def read_box_points(body: str) -> tuple[list[int] | None, list[list[int]]]:
    """First valid ``[x1,y1,x2,y2]`` box and the last three valid ``[x,y]`` points (224 x 224 frame)."""
    box = None
    for match in _BOX.finditer(body):
        candidate = [int(v) for v in match.groups()]
        if _valid_box(candidate):
            box = candidate
            break
    points = [[int(x), int(y)] for x, y in _POINT.findall(body) if int(x) < FRAME and int(y) < FRAME]
    return box, points[-3:]


def _category(pattern: re.Pattern[str], body: str) -> str | None:
    match = pattern.search(body)
    if match is None:
        return None
    name = match.group(1).strip().rstrip(".").strip()
    return name or None


@never_raises
def parse_segmentation(text: str) -> dict[str, Any] | ParseFailure:
    """s4 / ms3 -> ``{"category": str | None, "box": [x1,y1,x2,y2] | None, "points": [[x,y], ...]}``."""
    body = clean(text)
    box, points = read_box_points(body)
    if box is None and len(points) < 3:
        return _fail("no valid [x1,y1,x2,y2] box and fewer than 3 valid [x,y] points", text)
    return {"category": _category(_SEG_CATEGORY, body), "box": box, "points": points}


@never_raises
def parse_ref(text: str) -> dict[str, Any] | ParseFailure:
    """ref_avs -> ``{"exists": bool, "name": str | None, "box": ..., "points": [...]}``."""
    body = clean(text)
    answer = answer_text(body, which=0)
    if answer is None:
        return _fail("no <answer>true/false</answer> tag", text)
    verdict = answer.strip().strip(".").lower()
    if verdict == "false":
        return {"exists": False, "name": None, "box": None, "points": []}
    if verdict != "true":
        return _fail(f"answer {answer!r} is not true or false", text)
    box, points = read_box_points(body)
    if box is None and len(points) < 3:
        return _fail("answer true but no valid box and fewer than 3 valid points", text)
    return {"exists": True, "name": _category(_REF_NAME, body), "box": box, "points": points}


@never_raises
def parse_grounding(text: str) -> dict[str, Any] | ParseFailure:
    """arig ``<obj>(x1,y1)(x2,y2)</obj>`` (or the v1 corner sentence) -> ``{"category", "box"}``."""
    body = clean(text)
    match = _OBJ.search(body) or _OBJ_V1.search(body)
    if match is None:
        return _fail("no <obj>(x1,y1)(x2,y2)</obj> box", text)
    box = [int(v) for v in match.groups()]
    if not _valid_box(box, FRAME + 1):
        return _fail(f"box {box} is not inside [0, {FRAME}] with x1 < x2 and y1 < y2", text)
    return {"category": _category(_ARIG_CATEGORY, body), "box": box}


def format_box_points(box: Sequence[int], points: Sequence[Sequence[int]]) -> str:
    """``Its bounding box is [x1,y1,x2,y2] and three points on it are [x,y], [x,y], [x,y].``"""
    b = ",".join(str(int(v)) for v in box)
    p = ", ".join(f"[{int(x)},{int(y)}]" for x, y in points)
    return f"Its bounding box is [{b}] and three points on it are {p}."
