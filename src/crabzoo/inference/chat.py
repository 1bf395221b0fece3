"""``crabzoo chat``: a multi-turn conversation with a trained model about one media file.

    crabzoo chat --ckpt_path runs/quickstart/version_0/checkpoints/last.ckpt --video clip.mp4 --audio clip.wav

Each line you type is a question; the answer is printed token by token as the model generates it, and the
conversation so far (your questions and its answers) goes with every next question. The media sit in the first
user turn, as in training. Commands:

- ``/task NAME [TEXT]``: ask the task's exact prompt about the media (``TEXT`` fills the slot of tasks that have
  one: the question of ``avqa``, the object of ``ref_avs``) and print the parsed answer as one line of JSON, as
  ``crabzoo ask --task NAME --json`` does. Task questions stay out of the conversation history.
- ``/reset``: forget the conversation (the media stay).
- ``/help``: the list of commands.
- ``/quit`` (or end of input, Ctrl-D): leave.

In a terminal the prompt ``you> `` is shown (with line editing when ``readline`` is available) and a mistake in
one turn is reported and the chat goes on. With piped input nothing but answers reaches stdout: one line per
question or ``/task`` line (line breaks inside an answer are written as ``\\n``), blank lines are skipped, and the
first error ends the run with one line on stderr and exit status 2.

The conversation, the media and the answer must fit the LLM's context (``max_position_embeddings``): when the
next question would not, the oldest exchanges are dropped (the first one, which the media came with, last) and
one line says so (on stderr when piped). A question that does not fit even alone is an error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from crabzoo.errors import CrabzooError

PROMPT = "you> "
"""The terminal prompt."""

COMMANDS = "/task NAME [TEXT], /reset, /help, /quit"
"""The commands, as listed to the user."""


class Conversation:
    """The turns of a conversation about one set of media files, and the questions asked about them.

    Args:
        answerer: An :class:`~crabzoo.inference.session.Answerer` of the trained model.
        video: Video file, or ``None``.
        audio: Audio file, or ``None``.
        image: Image file (instead of a video), or ``None``.
        max_new_tokens: Generation length of each answer (``None``: the model's).
    """

    def __init__(
        self,
        answerer: Any,
        video: str | None = None,
        audio: str | None = None,
        image: str | None = None,
        max_new_tokens: int | None = None,
    ) -> None:
        self.answerer = answerer
        self.media = {"video": video, "audio": audio, "image": image}
        self.max_new_tokens = max_new_tokens
        self.history: list[dict[str, str]] = []
        self.context = answerer.context_length()
        self.media_positions = 0

    @property
    def answer_tokens(self) -> int:
        """Tokens each answer may take (``max_new_tokens``, else the model's)."""
        return int(self.max_new_tokens or self.answerer.model.max_new_tokens)

    def check_media(self) -> None:
        """Decode (and encode) the media once, so that an unreadable file fails before the first question.

        Raises:
            CrabzooError: ``"FILE: reason"``.
        """
        item = self.answerer.build("?", **self.media)
        if self.context is not None:
            self.media_positions = self.answerer.media_positions(item)

    def fit_history(self, question: str) -> int:
        """Drop the oldest exchanges until ``question``, the history and an answer fit the LLM's context.

        The first exchange (the question the media came with) goes last; the media themselves always stay (they
        sit in the first user turn, whichever it is). Returns the number of exchanges dropped.

        Raises:
            CrabzooError: the question and the media alone, plus an answer, exceed the context (the history is
                kept as it was).
        """
        if self.context is None:
            return 0
        history = list(self.history)
        dropped = 0
        while True:
            need = self.answerer.prompt_length(question, history, self.media_positions, **self.media)
            if need + self.answer_tokens <= self.context:
                self.history = history
                return dropped
            if not history:
                raise CrabzooError(
                    f"the question and the media take {need} positions and the answer up to {self.answer_tokens} more, "
                    f"over the LLM's context of {self.context}; ask a shorter question (or lower --max_new_tokens)"
                )
            first = 2 if len(history) > 2 else 0
            del history[first : first + 2]
            dropped += 1

    def ask(self, question: str) -> Iterator[str]:
        """Pieces of the answer to ``question`` as they are generated; the turn joins the history at the end.

        Call :meth:`fit_history` first when the conversation may have outgrown the LLM's context.
        """
        item = self.answerer.build(question, history=self.history, **self.media)
        pieces = []
        for piece in self.answerer.stream(item, self.max_new_tokens):
            pieces.append(piece)
            yield piece
        self.history += [{"role": "user", "content": question}, {"role": "assistant", "content": "".join(pieces)}]

    def task(self, name: str, text: str = "") -> dict[str, Any]:
        """The parsed answer of task ``name`` about the media (the task's exact prompt, no history)."""
        from crabzoo.inference.ask import parsed_answer

        item = self.answerer.build(text, task=name, **self.media)
        (generation,) = self.answerer.generate([item], self.max_new_tokens)
        return parsed_answer(name, generation)

    def reset(self) -> None:
        """Forget the turns so far."""
        self.history = []


def read_lines(interactive: bool, stdin: TextIO, stdout: TextIO) -> Iterator[str]:
    """The user's lines: with the prompt in a terminal (on stderr when stdout is redirected), plain when piped."""
    if not interactive:
        for line in stdin:
            yield line.rstrip("\r\n")
        return
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    while True:
        if stdout.isatty():
            line = input(PROMPT)
        else:
            sys.stderr.write(PROMPT)
            sys.stderr.flush()
            line = input()
        yield line


def turn(conversation: Conversation, line: str, out: TextIO, interactive: bool) -> bool:
    """Answer one line (a question or a command) on ``out``; ``False`` when the chat should end."""
    from crabzoo.inference.ask import to_json

    note = out if interactive else sys.stderr
    text = line.strip()
    if not text:
        return True
    if not text.startswith("/"):
        dropped = conversation.fit_history(text)
        if dropped:
            note.write(
                f"(dropped the {dropped} oldest exchange{'s' if dropped > 1 else ''} to fit the LLM's context of "
                f"{conversation.context} positions)\n"
            )
            note.flush()
        for piece in conversation.ask(text):
            out.write(piece if interactive else piece.replace("\r", "\\r").replace("\n", "\\n"))
            out.flush()
        out.write("\n")
        out.flush()
        return True
    command, _, rest = text.partition(" ")
    if command == "/quit":
        return False
    if command == "/reset":
        conversation.reset()
        note.write("(conversation cleared)\n")
    elif command == "/help":
        note.write(f"commands: {COMMANDS}; any other line is a question about the media\n")
    elif command == "/task":
        name, _, slot = rest.strip().partition(" ")
        if not name:
            raise CrabzooError("/task needs a task name, e.g. /task ks")
        out.write(to_json(conversation.task(name, slot.strip()), compact=True) + "\n")
    else:
        raise CrabzooError(f"unknown command {command}; commands: {COMMANDS}")
    note.flush()
    out.flush()
    return True


def build_parser() -> argparse.ArgumentParser:
    from crabzoo.inference.ask import add_model_arguments

    parser = argparse.ArgumentParser(
        prog="crabzoo chat",
        description="Talk to a trained model about one media file (answers streamed, the conversation kept).",
        epilog=f"Commands: {COMMANDS}. Piped input: one answer line per question or /task line, nothing else on "
        "stdout; the first error ends the run (exit 2).",
    )
    add_model_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``crabzoo chat``."""
    from crabzoo.inference.ask import check_inputs, load
    from crabzoo.inference.session import Answerer

    args = build_parser().parse_args(argv)
    check_inputs(args)
    if len(args.video) > 1 or len(args.audio) > 1:
        raise CrabzooError("chat talks about one clip: give at most one --video (or --image) and one --audio")
    if not (args.video or args.audio or args.image):
        raise CrabzooError("give the media to talk about (--video, --audio and/or --image)")
    answerer = Answerer(load(args, "chat"))
    conversation = Conversation(
        answerer,
        video=args.video[0] if args.video else None,
        audio=args.audio[0] if args.audio else None,
        image=args.image,
        max_new_tokens=args.max_new_tokens,
    )
    conversation.check_media()
    interactive = sys.stdin.isatty()
    out = sys.stdout
    if interactive:
        files = ", ".join(p for p in (*args.video, args.image, *args.audio) if p)
        out.write(f"crabzoo chat about {files} (commands: {COMMANDS})\n")
        out.flush()
    lines = read_lines(interactive, sys.stdin, out)
    while True:
        try:
            line = next(lines)
        except StopIteration:
            break
        except (EOFError, KeyboardInterrupt):  # Ctrl-D / Ctrl-C at the prompt
            out.write("\n")
            break
        try:
            if not turn(conversation, line, out, interactive):
                break
        except CrabzooError as err:
            if not interactive:
                raise
            print(f"crabzoo chat: error: {err}", file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            out.write("\n")
            break
    out.flush()


if __name__ == "__main__":
    main()
