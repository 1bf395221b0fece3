"""Parsers never raise, and every ground truth round-trips through format_target -> parse."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crabzoo.tasks import TASKS, ParseFailure, get_task

FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

label = st.from_regex(r"[A-Za-z][A-Za-z0-9 ,'_-]{0,18}[A-Za-z0-9]", fullmatch=True)
word = st.from_regex(r"[A-Za-z][A-Za-z0-9 '_-]{0,18}[A-Za-z0-9]", fullmatch=True)
evidence = st.sampled_from([
    None,
    "I hear a dog barking and see a dog running across the yard.",
    "The audio contains a steady engine hum; the frames show a car on a road.",
])
tag_words = st.sampled_from(["<answer>", "</answer>", "<event>", "</event>", "<range>", "</range>", "<visual>",
                             "</visual>", "<audio>", "</audio_event>", "<obj>", "</obj>", "</s>", "(", ")", "[", "]",
                             ",", " ", "true", "false", "1", "2", "224", "(3 5)", "(0,10)", "[1,2,3,4]", "[5,6]",
                             "event:", "start_time:", "end_time:", "The object is", "making the sound is"])
salad = st.lists(st.one_of(tag_words, st.text(max_size=6)), max_size=30).map("".join)


def spans(draw: st.DrawFn, n: int) -> list[list[int]]:
    out = []
    for _ in range(n):
        s = draw(st.integers(0, 9))
        out.append([s, draw(st.integers(s + 1, 10))])
    return out


@st.composite
def events(draw: st.DrawFn, max_labels: int = 3) -> list[list]:
    labels = draw(st.lists(label, min_size=1, max_size=max_labels, unique=True))
    out = []
    for name in labels:
        out += [[name, s, e] for s, e in spans(draw, draw(st.integers(1, 3)))]
    from crabzoo.tasks.parsers import canonical_events

    return canonical_events(out)


coord = st.integers(0, 223)


@st.composite
def box(draw: st.DrawFn) -> list[int]:
    x1, y1 = draw(st.integers(0, 222)), draw(st.integers(0, 222))
    return [x1, y1, draw(st.integers(x1 + 1, 223)), draw(st.integers(y1 + 1, 223))]


points = st.lists(st.lists(coord, min_size=2, max_size=2), min_size=3, max_size=3)


@st.composite
def truth_for(draw: st.DrawFn, name: str) -> dict:
    group = TASKS[name].group
    if group == "matching":
        return {"answer": draw(st.sampled_from(["1", "2"]))}
    if group in ("action", "emotion") or name == "avqa":
        return {"answer": draw(word), "type": "[\"Audio\", \"Counting\"]"}
    if name == "avqa_thu":
        options = draw(st.lists(word, min_size=2, max_size=4, unique=True))
        return {"answer": draw(st.sampled_from(options)), "options": options}
    if name == "ave":
        return {"events": draw(events(max_labels=1))[:1]}
    if name == "unav":
        return {"events": draw(events())}
    if name == "avvp":
        return {"audio": draw(events()), "visual": draw(events())}
    if name in ("s4", "ms3"):
        return {"category": draw(word), "box": draw(box()), "points": draw(points)}
    if name == "ref_avs":
        if draw(st.booleans()):
            return {"exists": False, "name": None, "box": None, "points": []}
        return {"exists": True, "name": draw(word), "box": draw(box()), "points": draw(points)}
    if name == "arig":
        return {"category": draw(word), "box": draw(box())}
    if name == "avcap":
        caption = draw(st.from_regex(r"[A-Za-z][A-Za-z0-9 ,.'!?-]{0,60}[A-Za-z0-9.]", fullmatch=True))
        return {"caption": caption, "captions": [caption]}
    raise AssertionError(name)


@pytest.mark.parametrize("name", list(TASKS))
@FUZZ
@given(data=st.data())
def test_round_trip(name: str, data: st.DataObject) -> None:
    task = get_task(name)
    truth = data.draw(truth_for(name))
    reasoning = data.draw(st.booleans())
    text = task.format_target(truth, evidence=data.draw(evidence), reasoning=reasoning)
    parsed = task.parse(text)
    assert not isinstance(parsed, ParseFailure), (text, parsed)
    assert task.answer_part(parsed) == task.answer_part(truth), text
    # a trailing end-of-sequence marker and junk after it change nothing
    assert task.answer_part(task.parse(text + "</s> <answer>junk</answer> [1,2,3,4]")) == task.answer_part(truth)


@pytest.mark.parametrize("name", list(TASKS))
@FUZZ
@given(text=st.one_of(st.text(max_size=200), salad))
def test_parse_never_raises(name: str, text: str) -> None:
    out = get_task(name).parse(text)
    assert isinstance(out, (dict, ParseFailure))


@pytest.mark.parametrize("name", list(TASKS))
@pytest.mark.parametrize("bad", [None, 3, b"<answer>1</answer>", ["x"], ""])
def test_non_text_is_a_failure(name: str, bad: object) -> None:
    out = get_task(name).parse(bad)  # type: ignore[arg-type]
    assert isinstance(out, ParseFailure) and not out and out.reason


def test_answer_forms() -> None:
    a2v = get_task("a2v")
    assert a2v.parse("<answer>1</answer>.") == {"answer": "1"}
    assert a2v.parse("Reasoning. < answer > two </ANSWER>") == {"answer": "2"}
    assert a2v.parse("<answer>3</answer>").reason.startswith("answer '3' is not 1 or 2")
    assert get_task("avqa").parse("so the answer is <answer> saxophone </answer>.") == {"answer": "saxophone"}
    assert get_task("ks").parse("playing drums").reason == "no <answer> tag"
    assert get_task("ks").parse("<answer> </answer>").reason == "empty <answer> tag"


def test_event_forms() -> None:
    ave = get_task("ave")
    v1 = "the event is <event> Male speech, man speaking </event>, and the time range is <range> 0,8 </range>.</s>x"
    assert ave.parse(v1) == {"events": [["Male speech, man speaking", 0, 8]]}
    assert ave.parse("event:Church bell start_time:2 end_time:10") == {"events": [["Church bell", 2, 10]]}
    assert ave.parse("<event>Dog, (3 3)</event>").reason.startswith("span (3 3)")
    assert ave.parse("<event>Dog, (3 11)</event>").reason.startswith("span (3 11)")
    assert ave.parse("<event>(1 2)</event>").reason.startswith("event block without a label")
    unav = get_task("unav")
    assert unav.parse("<event>dog, (5 7)(0 3)</event><event> cat ,(2 9)</event>") == {
        "events": [["dog", 0, 3], ["dog", 5, 7], ["cat", 2, 9]]
    }
    avvp = get_task("avvp")
    out = avvp.parse("<visual_event>Chainsaw,(0 10)</visual_event> and <audio_event>Speech,(1 4)(6 8)</audio_event>")
    assert out == {"audio": [["Speech", 1, 4], ["Speech", 6, 8]], "visual": [["Chainsaw", 0, 10]]}
    assert avvp.parse("<visual>Dog</visual>").reason.startswith("<visual> block needs")


def test_spatial_forms() -> None:
    s4 = get_task("s4")
    text = "The object making the sound is baby. Its bounding box is [52,30,180,210] and three points on it are [110,96], [120,140], [98,170].</s>[1,1,2,2]"
    assert s4.parse(text) == {"category": "baby", "box": [52, 30, 180, 210], "points": [[110, 96], [120, 140], [98, 170]]}
    # invalid box (x1 >= x2) is ignored; three points suffice
    assert s4.parse("[50,50,10,60] [1,2] [3,4] [5,6]") == {"category": None, "box": None, "points": [[1, 2], [3, 4], [5, 6]]}
    assert s4.parse("The object making the sound in the video is baby.").reason.startswith("no valid")
    assert s4.parse("[0,0,224,10] [1,2]").reason.startswith("no valid")  # 224 is outside [0, 224)
    ref = get_task("ref_avs")
    assert ref.parse("<answer>false</answer> The object is absent.") == {"exists": False, "name": None, "box": None, "points": []}
    assert ref.parse("The object is a guitar. [1,2,3,4]").reason.startswith("no <answer>")
    assert ref.parse("<answer>maybe</answer>").reason.startswith("answer 'maybe'")
    arig = get_task("arig")
    assert arig.parse("The sounding object is dog. Its coordinates are <obj>(0,5)(224,100)</obj>.") == {"category": "dog", "box": [0, 5, 224, 100]}
    v1 = "The sounding object is dog. Its coordinate of top left corner is (3,4) and coordinate of bottom right corner is (50,60)"
    assert arig.parse(v1) == {"category": "dog", "box": [3, 4, 50, 60]}
    assert arig.parse("<obj>(50,5)(10,100)</obj>").reason.startswith("box [50, 5, 10, 100]")
    cap = get_task("avcap")
    assert cap.parse("I see a dog. <answer>A dog barks.</answer></s>") == {"caption": "A dog barks."}
    assert cap.parse("  A dog barks. ") == {"caption": "A dog barks."}
    assert cap.parse("</s>").reason == "empty caption"
