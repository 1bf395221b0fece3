"""``crabzoo serve`` on a tiny checkpoint fit in this module, through the real ``openai`` client on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from ask_helpers import MAX_NEW_TOKENS, fit_tiny, ks_clip
from serve_helpers import serving, user_message

pytestmark = pytest.mark.slow

MODEL = "tiny-mlp"
QUESTIONS = [
    "What is making the sound?", "Describe the video.", "What happens first?", "Is anyone speaking?",
    "Which instrument plays?", "Where is the sound coming from?", "How many objects move?", "What is in the scene?",
]


@pytest.fixture(scope="module")
def ckpt(avsynth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fit_tiny(avsynth_root, tmp_path_factory.mktemp("serve-run") / "run")


@pytest.fixture(scope="module")
def server(ckpt: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    args = ["--ckpt_path", str(ckpt), "--model_name", MODEL, "--max_batch_size", "8", "--batch_timeout", "0.3",
            "--max_media_bytes", "1MB", "--max_tokens", str(MAX_NEW_TOKENS)]
    with serving(args, log) as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str):
    from openai import OpenAI

    return OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def answerer(ckpt: Path):
    from crabzoo.inference.loading import load_trained
    from crabzoo.inference.session import Answerer

    return Answerer(load_trained(str(ckpt)))


@pytest.fixture(scope="module")
def clip(avsynth_root: Path):
    return ks_clip(avsynth_root, 0)


def greedy(answerer, question: str, clip, **kwargs) -> str:
    (text,) = answerer.generate([answerer.build(question, video=str(clip.video), audio=str(clip.audio), **kwargs)],
                                MAX_NEW_TOKENS)
    return text


def ask(client, question: str, clip, **kwargs):
    return client.chat.completions.create(
        model=MODEL, messages=user_message(question, video=clip.video, audio=clip.audio), **kwargs
    )


def post(server: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(f"{server}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_models_lists_the_served_name(client):
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_single_request_is_the_models_greedy_answer(client, answerer, clip):
    expected = greedy(answerer, QUESTIONS[0], clip)
    assert expected.strip()
    reply = ask(client, QUESTIONS[0], clip)
    assert reply.model == MODEL and reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == expected
    n_new = len(answerer.tokenizer(expected, add_special_tokens=False)["input_ids"])
    assert reply.choices[0].finish_reason == ("length" if reply.usage.completion_tokens == MAX_NEW_TOKENS else "stop")
    assert 1 <= reply.usage.completion_tokens <= MAX_NEW_TOKENS and n_new >= 1
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    # the same files sent inline as base64 data URLs give the same answer
    inline = client.chat.completions.create(
        model=MODEL, messages=user_message(QUESTIONS[0], video=clip.video, audio=clip.audio, inline=True)
    )
    assert inline.choices[0].message.content == expected
    # the question reaches the model
    assert ask(client, QUESTIONS[1], clip).choices[0].message.content == greedy(answerer, QUESTIONS[1], clip)


def test_shorter_max_tokens_is_a_prefix(client, answerer, clip):
    full = ask(client, QUESTIONS[0], clip).choices[0].message.content
    short = ask(client, QUESTIONS[0], clip, max_tokens=3)
    assert short.usage.completion_tokens <= 3
    assert full.startswith(short.choices[0].message.content)
    (expected,) = answerer.generate([answerer.build(QUESTIONS[0], video=str(clip.video), audio=str(clip.audio))], 3)
    assert short.choices[0].message.content == expected


def test_streamed_pieces_reassemble_the_answer(client, clip):
    expected = ask(client, QUESTIONS[2], clip).choices[0].message.content
    chunks = list(ask(client, QUESTIONS[2], clip, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 2  # streamed piece by piece, not in one go
    assert "".join(pieces) == expected
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert reasons in (["stop"], ["length"])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1


def test_eight_concurrent_requests_equal_single_answers(client, clip):
    single = [ask(client, q, clip).choices[0].message.content for q in QUESTIONS]
    assert len(set(single)) > 1  # different questions, different answers
    answers: dict[int, str] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(QUESTIONS))

    def worker(i: int) -> None:
        try:
            barrier.wait()
            stream = i % 2 == 1  # streamed and plain requests share the batches
            if stream:
                answers[i] = "".join(c.choices[0].delta.content or "" for c in ask(client, QUESTIONS[i], clip, stream=True)
                                     if c.choices)
            else:
                answers[i] = ask(client, QUESTIONS[i], clip).choices[0].message.content
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(QUESTIONS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [answers[i] for i in range(len(QUESTIONS))] == single


def test_malformed_request_between_good_ones(server, client, clip):
    before = ask(client, QUESTIONS[0], clip).choices[0].message.content
    for body in (b"{not json", b'["a list"]', json.dumps({"model": MODEL}).encode(),
                 json.dumps({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "sticker"}]}]}).encode(),
                 json.dumps({"model": MODEL, "messages": [{"role": "assistant", "content": "hi"}]}).encode()):
        status, payload = post(server, body)
        assert status == 400, payload
        assert set(payload["error"]) == {"message", "type", "param", "code"}
        assert payload["error"]["type"] == "invalid_request_error"
    assert ask(client, QUESTIONS[0], clip).choices[0].message.content == before


def test_unknown_model_is_a_404(client, clip):
    import openai

    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-4o", messages=user_message("hi", video=clip.video, audio=clip.audio))
    assert info.value.status_code == 404
    assert info.value.body["code"] == "model_not_found" and "tiny-mlp" in info.value.body["message"]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_unreadable_media_is_a_400(client, clip, tmp_path, stream):
    import openai

    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not an mp4 file" * 10)
    cases = {
        "garbage file": user_message("hi", video=garbage, audio=clip.audio),
        "garbage data URL": user_message("hi", video=garbage, audio=clip.audio, inline=True),
        "missing file": user_message("hi", video=tmp_path / "missing.mp4", audio=clip.audio),
        "not base64": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "@@@not base64@@@", "format": "wav"}}, {"type": "text", "text": "hi"}]}],
        "garbage wav": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": base64.b64encode(b"RIFF garbage" * 9).decode(), "format": "wav"}},
            {"type": "text", "text": "hi"}]}],
        "oversized": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": base64.b64encode(bytes(1_500_000)).decode(), "format": "wav"}},
            {"type": "text", "text": "hi"}]}],
    }
    codes = {}
    for name, messages in cases.items():
        with pytest.raises(openai.BadRequestError) as info:
            reply = client.chat.completions.create(model=MODEL, messages=messages, stream=stream)
            list(reply) if stream else None
        assert info.value.status_code == 400, name
        codes[name] = info.value.body["code"]
        assert info.value.body["param"].startswith("messages[0].content["), name
    assert codes == {"garbage file": "invalid_media", "garbage data URL": "invalid_media",
                     "missing file": "invalid_media", "not base64": "invalid_media", "garbage wav": "invalid_media", "oversized": "media_too_large"}
    assert ask(client, QUESTIONS[0], clip).choices[0].message.content  # still serving


def test_max_tokens_over_the_limit_and_bad_tasks_are_400s(client, clip):
    import openai

    with pytest.raises(openai.BadRequestError) as info:
        ask(client, QUESTIONS[0], clip, max_tokens=MAX_NEW_TOKENS + 1)
    assert info.value.body["code"] == "max_tokens_exceeded"
    # errors found by the inference worker (the task's media policy) are 400s too, streamed or not
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as info:
            reply = ask(client, "", clip, stream=stream, extra_body={"task": "no_such_task"})
            list(reply) if stream else None
        assert "no_such_task" in info.value.body["message"]


def test_task_prompt_through_extra_body(client, answerer, clip):
    reply = ask(client, "", clip, extra_body={"task": "ks"})
    assert reply.choices[0].message.content == greedy(answerer, "", clip, task="ks")
