"""``crabzoo chat`` with piped stdin (a subprocess and in-process) and in a real pseudo-terminal."""

from __future__ import annotations

import io
import json
import os
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest
from ask_helpers import MAX_NEW_TOKENS, ROOT, Clip, cli_env, fit_tiny, ks_clip, model_args, run_cli_process

pytestmark = pytest.mark.slow

Q1, Q2 = "What do you see?", "And what do you hear?"


@pytest.fixture(scope="module")
def ckpt(avsynth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fit_tiny(avsynth_root, tmp_path_factory.mktemp("chat-run") / "run")


@pytest.fixture(scope="module")
def answerer(ckpt: Path):
    from crabzoo.inference.loading import load_trained
    from crabzoo.inference.session import Answerer

    return Answerer(load_trained(str(ckpt)))


@pytest.fixture(scope="module")
def clip(avsynth_root: Path) -> Clip:
    return ks_clip(avsynth_root, 0)


def generate(answerer, clip: Clip, question: str, history=(), task=None) -> str:
    item = answerer.build(question, video=str(clip.video), audio=str(clip.audio), task=task, history=list(history))
    (text,) = answerer.generate([item], MAX_NEW_TOKENS)
    return text


@pytest.fixture(scope="module")
def expected(answerer, clip) -> dict[str, str]:
    """The answers of Answerer.generate for the conversation of the tests (same history as the chat keeps)."""
    from crabzoo.inference.ask import parsed_answer, to_json

    a1 = generate(answerer, clip, Q1)
    a2 = generate(answerer, clip, Q2, history=[{"role": "user", "content": Q1}, {"role": "assistant", "content": a1}])
    ks = to_json(parsed_answer("ks", generate(answerer, clip, "", task="ks")), compact=True)
    return {"a1": a1, "a2": a2, "a2_alone": generate(answerer, clip, Q2), "ks": ks}


def one_line(text: str) -> str:
    """An answer as chat writes it to a pipe (its own line breaks escaped)."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def test_piped_conversation_keeps_history_and_answers_one_line_each(ckpt, clip, expected):
    # the history reaches the model: the second question alone gets another answer
    assert expected["a2"] != expected["a2_alone"]
    stdin = "\n".join([Q1, Q2, "", "/task ks", "/reset", Q1, "/quit", "never asked"]) + "\n"
    proc = run_cli_process(["chat", *model_args(ckpt, clip)], stdin)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n") == [
        one_line(expected["a1"]), one_line(expected["a2"]), expected["ks"], one_line(expected["a1"]), ""
    ]
    assert json.loads(proc.stdout.split("\n")[2])["task"] == "ks"
    assert "(conversation cleared)" in proc.stderr and "Traceback" not in proc.stderr
    assert "you>" not in proc.stdout + proc.stderr


def run_chat_in_process(argv: list[str], stdin: str, monkeypatch) -> tuple[int, list[str], str]:
    """``crabzoo.cli.main(["chat", ...])`` on piped ``stdin``: exit code, every write to stdout, stderr."""
    from crabzoo.cli import main

    class Recorder(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.writes: list[str] = []

        def write(self, text: str) -> int:
            self.writes.append(text)
            return super().write(text)

    out, err = Recorder(), io.StringIO()
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    code = 0
    try:
        main(["chat", *argv])
    except SystemExit as exit_:
        code = exit_.code
    return code, out.writes, err.getvalue()


def test_answers_are_written_piece_by_piece_as_generated(ckpt, clip, expected, monkeypatch):
    code, writes, err = run_chat_in_process(model_args(ckpt, clip), f"{Q1}\n", monkeypatch)
    assert code == 0, err
    assert writes[-1] == "\n"
    pieces = [w for w in writes[:-1] if w]
    assert len(pieces) > 1  # streamed: more than one write before the end of the line
    assert "".join(pieces) == one_line(expected["a1"])


def test_piped_error_ends_the_run_with_one_line(ckpt, clip, expected, monkeypatch):
    code, writes, err = run_chat_in_process(model_args(ckpt, clip), f"{Q1}\n/task kinetics\n{Q2}\n", monkeypatch)
    assert code == 2
    assert "".join(writes) == one_line(expected["a1"]) + "\n"  # the answer before the error, nothing after
    assert err.strip().splitlines() == [
        "crabzoo chat: error: unknown task 'kinetics'; known tasks: " + err.split("known tasks: ")[1].strip()
    ]
    code, writes, err = run_chat_in_process(model_args(ckpt, clip), "/dance\n", monkeypatch)
    assert code == 2 and "unknown command /dance" in err and len(err.strip().splitlines()) == 1


def test_unreadable_media_fails_before_the_first_question(ckpt, clip, tmp_path, monkeypatch):
    garbage = tmp_path / "x.mp4"
    garbage.write_bytes(b"\x00not a video" * 300)
    code, writes, err = run_chat_in_process(model_args(ckpt, Clip(garbage, clip.audio)), f"{Q1}\n", monkeypatch)
    assert code == 2 and writes == []
    assert err.strip().splitlines() == [f"crabzoo chat: error: {garbage}: " + err.split(f"{garbage}: ")[1].strip()]
    assert "cannot decode video" in err


def with_context(ckpt: Path, positions: int) -> Path:
    """A copy of ``ckpt`` (same run folder) whose stored model configuration gives the LLM ``positions`` positions."""
    import torch

    data = torch.load(ckpt, map_location="cpu", weights_only=True)
    data["hyper_parameters"]["backbone"]["init_args"]["config"]["max_position_embeddings"] = positions
    out = ckpt.with_name(f"context-{positions}.ckpt")
    torch.save(data, out)
    return out


def prompt_positions(answerer, clip: Clip, question: str, history=()) -> int:
    """Positions of the spliced prompt the model generates from (its prompt ids, media embeddings spliced in)."""
    import torch

    item = answerer.build(question, video=str(clip.video), audio=str(clip.audio), history=list(history))
    batch = answerer.collate([item])
    with torch.inference_mode():
        inputs, _, _ = answerer.model.splice(batch["prompt_ids"], None, answerer.model.media_embeddings(batch))
    return int(inputs.shape[1])


def test_piped_conversation_over_the_context_drops_the_oldest_exchanges(ckpt, answerer, clip, expected, monkeypatch):
    q3 = "Describe the clip in one sentence."
    first = [{"role": "user", "content": Q1}, {"role": "assistant", "content": expected["a1"]}]
    both = first + [{"role": "user", "content": Q2}, {"role": "assistant", "content": expected["a2"]}]
    # a context that holds Q3 after the first exchange, but not after both
    context = prompt_positions(answerer, clip, q3, first) + MAX_NEW_TOKENS
    assert prompt_positions(answerer, clip, Q2, first) + MAX_NEW_TOKENS <= context
    assert prompt_positions(answerer, clip, q3, both) + MAX_NEW_TOKENS > context
    a3 = generate(answerer, clip, q3, history=first)  # the second exchange dropped, the first (with the media) kept
    assert a3 not in (generate(answerer, clip, q3, history=both), generate(answerer, clip, q3))
    too_long = " ".join(["Tell me everything about the clip."] * 40)
    small = with_context(ckpt, context)
    stdin = "\n".join([Q1, Q2, q3, too_long, Q1]) + "\n"
    code, writes, err = run_chat_in_process(model_args(small, clip), stdin, monkeypatch)
    assert code == 2
    assert "".join(writes).split("\n") == [one_line(expected["a1"]), one_line(expected["a2"]), one_line(a3), ""]
    notes = err.strip().splitlines()
    assert notes[0] == f"(dropped the 1 oldest exchange to fit the LLM's context of {context} positions)"
    assert len(notes) == 2 and notes[1].startswith("crabzoo chat: error: the question and the media take ")
    assert f"over the LLM's context of {context}; ask a shorter question" in notes[1]


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]")


class Terminal:
    """A ``crabzoo chat`` subprocess on a pseudo-terminal (stdin, stdout and stderr all on it)."""

    def __init__(self, args: list[str]) -> None:
        self.master, slave = os.openpty()
        env = dict(cli_env(), TERM="xterm", PYTHONIOENCODING="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crabzoo.cli", "chat", *args], stdin=slave, stdout=slave, stderr=slave,
            env=env, cwd=str(ROOT), close_fds=True,
        )
        os.close(slave)
        self.buffer = b""

    def read_until(self, marker: str, limit: float = 300) -> str:
        """Everything up to and including the next ``marker`` (escape sequences and ``\\r`` removed)."""
        want = marker.encode()
        waited = 0.0
        while want not in self.buffer:
            ready, _, _ = select.select([self.master], [], [], 1.0)
            waited += 1.0
            if not ready:
                assert waited < limit and self.proc.poll() is None, f"no {marker!r} in {self.buffer!r}"
                continue
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # the child closed the terminal
                chunk = b""
            assert chunk, f"terminal closed before {marker!r}: {self.buffer!r}"
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(want)
        return ANSI.sub("", (head + want).decode("utf-8", errors="replace")).replace("\r", "")

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=120)
        finally:
            os.close(self.master)


def test_terminal_shows_the_prompt_and_streams_answers(ckpt, clip, expected):
    term = Terminal(model_args(ckpt, clip))
    try:
        banner = term.read_until("you> ")
        assert "crabzoo chat about" in banner and "/task NAME" in banner
        term.send(Q1 + "\n")
        reply = term.read_until("you> ")
        assert reply.startswith(Q1 + "\n")  # the terminal echoes the line
        assert reply[len(Q1) + 1 : -len("you> ")] == expected["a1"] + "\n"
        term.send(Q2 + "\n")
        assert term.read_until("you> ")[len(Q2) + 1 : -len("you> ")] == expected["a2"] + "\n"
        term.send("/task ks\n")
        assert term.read_until("you> ")[len("/task ks") + 1 : -len("you> ")] == expected["ks"] + "\n"
        term.send("/task kinetics\n")  # a mistake in a terminal is reported, and the chat goes on
        assert "crabzoo chat: error: unknown task 'kinetics'" in term.read_until("you> ")
        term.send("\x04")  # Ctrl-D
        assert term.close() == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
            term.proc.wait()
