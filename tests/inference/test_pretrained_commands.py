"""predict, ask, chat, export and serve through the real CLI on one checkpoint of the pretrained MLP paradigm
(Whisper tiny.en + DINOv2-S/14 + SmolLM2-135M-Instruct, real weights), fit for one step in this module.

The commands must agree with each other: predict and the exported model give ``crabzoo ask``'s answer to the
ks prompt, the exported model and the server give ``crabzoo chat``'s answers (each command loads the model
anew, so they are independent). Uses the packaged weights (installed by ``make install``) and the shared
conversion cache (``$CRABZOO_CACHE``).
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from ask_helpers import ROOT, Clip, ks_clip, run_main
from serve_helpers import serving, user_message

from crabzoo import pretrained

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("pretrained"),  # one worker: the real weights load and convert once
    pytest.mark.skipif(
        not all(pretrained.available(n) for n in pretrained.WEIGHTS),
        reason="needs the packaged weights (`make install`)",
    ),
]

CONFIGS = ["--config", str(ROOT / "paradigms" / "pretrained" / "mlp.yaml"),
           "--config", str(ROOT / "recipes" / "quickstart-pretrained.yaml")]
TASKS = ("ks", "a2v")
MAX_NEW_TOKENS = 4
Q1, Q2 = "What is making the sound?", "And what does it look like?"


def data_args(root: Path, run_dir: Path, features: Path) -> list[str]:
    """Data and trainer options of the module's fit and predict (two tasks, one validation batch, no workers)."""
    return [
        *CONFIGS,
        "--data.init_args.root", str(root),
        "--data.init_args.synth", "null",
        "--data.init_args.tasks", json.dumps(list(TASKS)),
        "--data.init_args.num_workers", "0",
        "--data.init_args.batch_size", "2",
        "--data.init_args.max_val_per_task", "1",
        "--model.init_args.feature_cache", str(features),
        "--model.init_args.max_new_tokens", str(MAX_NEW_TOKENS),
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(run_dir),
    ]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pretrained-commands")


@pytest.fixture(scope="module")
def ckpt(avsynth_root: Path, workdir: Path) -> Path:
    """``last.ckpt`` of a 1-step fit without validation; it holds the adapter and projectors only."""
    result = run_main([
        "fit", *data_args(avsynth_root, workdir / "run", workdir / "features"),
        "--trainer.max_steps", "1",
        "--trainer.max_epochs", "-1",
        "--trainer.limit_val_batches", "0",
    ])
    assert result.code == 0, result.err[-3000:]
    (path,) = (workdir / "run").glob("version_*/checkpoints/last.ckpt")
    return path


@pytest.fixture(scope="module")
def clip(avsynth_root: Path) -> Clip:
    return ks_clip(avsynth_root, 0)


def media_args(ckpt: Path, clip: Clip) -> list[str]:
    return ["--ckpt_path", str(ckpt), "--video", str(clip.video), "--audio", str(clip.audio),
            "--max_new_tokens", str(MAX_NEW_TOKENS)]


@pytest.fixture(scope="module")
def asked(ckpt: Path, clip: Clip) -> dict:
    """``crabzoo ask --task ks --json`` about the clip."""
    result = run_main(["ask", *media_args(ckpt, clip), "--task", "ks", "--json"])
    assert result.code == 0, result.err
    return json.loads(result.out)


@pytest.fixture(scope="module")
def chatted(ckpt: Path, clip: Clip) -> list[str]:
    """The two answers of ``crabzoo chat`` to Q1 and Q2 piped in (one line each)."""
    from crabzoo.cli import main

    with pytest.MonkeyPatch.context() as patch:
        out, err = io.StringIO(), io.StringIO()
        patch.setattr(sys, "stdin", io.StringIO(f"{Q1}\n\n{Q2}\n"))
        patch.setattr(sys, "stdout", out)
        patch.setattr(sys, "stderr", err)
        main(["chat", *media_args(ckpt, clip)])
    assert "Traceback" not in err.getvalue()
    lines = out.getvalue().split("\n")
    assert len(lines) == 3 and lines[2] == "", lines
    return lines[:2]


def history(chatted: list[str]) -> list[dict[str, str]]:
    return [{"role": "user", "content": Q1}, {"role": "assistant", "content": chatted[0].replace("\\n", "\n")}]


def greedy(answerer, clip: Clip, question: str, task: str | None = None, turns=()) -> str:
    item = answerer.build(question, video=str(clip.video), audio=str(clip.audio), task=task, history=list(turns))
    (text,) = answerer.generate([item], MAX_NEW_TOKENS)
    return text


def test_checkpoint_holds_the_trained_weights_only(ckpt):
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert state and all("lora" in k or "connector" in k for k in state), sorted(state)[:5]
    assert ckpt.stat().st_size < 60e6  # not the 540 MB of the frozen LLM


def test_ask_prints_the_parsed_answer(asked):
    assert asked["task"] == "ks" and set(asked) >= {"generation", "answer", "parse_ok"}
    assert isinstance(asked["generation"], str) and asked["generation"].strip()
    assert asked["parse_ok"] == (asked["answer"] is not None)


def test_predict_writes_one_record_per_test_sample(ckpt, avsynth_root, workdir, asked):
    out = workdir / "predict"
    result = run_main(["predict", *data_args(avsynth_root, out, workdir / "features"), "--ckpt_path", str(ckpt)])
    assert result.code == 0, result.err[-3000:]
    (path,) = out.glob("version_*/predictions.jsonl")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    n_test = {t: len(json.loads((avsynth_root / "AVUIE_2" / t / "test.json").read_text())) for t in TASKS}
    assert [r["id"] for r in records] == [f"{t}/test/{i}" for t in sorted(TASKS) for i in range(n_test[t])]
    assert all(isinstance(r["generation"], str) and r["parse_ok"] == (r["answer"] is not None) for r in records)
    # the first ks test sample is the clip asked about: predict saw the same prompt and media
    assert next(r for r in records if r["id"] == "ks/test/0")["generation"] == asked["generation"]


def test_piped_chat_answers_each_question_on_one_line(chatted):
    assert all(line.strip() for line in chatted)


def test_export_reloads_to_the_checkpoints_generations(ckpt, workdir, clip, asked, chatted):
    from crabzoo.export import load_exported
    from crabzoo.inference.session import Answerer

    folder = workdir / "export"
    result = run_main(["export", "--ckpt_path", str(ckpt), "--out", str(folder)])
    assert result.code == 0, result.err
    assert "LoRA merged into the LLM" in result.out
    assert "audio_encoder: reference, visual_encoder: reference" in result.out  # left out of the checkpoint
    assert not (folder / "encoders").exists() and (folder / "llm" / "model.safetensors").is_file()
    exported = Answerer(load_exported(folder))
    assert greedy(exported, clip, "", task="ks") == asked["generation"]
    # the chat's second answer, which had the first exchange before it
    assert greedy(exported, clip, Q2, turns=history(chatted)).replace("\n", "\\n") == chatted[1]


def test_serve_answers_plain_and_streamed_requests(ckpt, workdir, clip, chatted):
    from openai import OpenAI

    args = ["--ckpt_path", str(ckpt), "--model_name", "smollm2-av", "--max_tokens", str(MAX_NEW_TOKENS)]
    with serving(args, workdir / "serve.log") as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        messages = user_message(Q1, video=clip.video, audio=clip.audio)
        reply = client.chat.completions.create(model="smollm2-av", messages=messages)
        assert reply.choices[0].message.content.replace("\n", "\\n") == chatted[0]
        assert 1 <= reply.usage.completion_tokens <= MAX_NEW_TOKENS
        turns = [*messages, *history(chatted)[1:], {"role": "user", "content": Q2}]
        chunks = list(client.chat.completions.create(model="smollm2-av", messages=turns, stream=True))
        pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert "".join(pieces).replace("\n", "\\n") == chatted[1]


def test_checkpoint_of_a_tiny_paradigm_is_one_line(avsynth_root, workdir, clip):
    from ask_helpers import fit_tiny

    tiny = fit_tiny(avsynth_root, workdir / "tiny-qformer", paradigm="modular-qformer")
    result = run_main(["ask", *media_args(tiny, clip), "--config", CONFIGS[1], "--task", "ks"])
    assert result.code == 2 and result.out == ""
    # the last line (transformers prints its loading bars before it)
    errors = [line for line in result.err.strip().splitlines() if "error" in line]
    assert errors == [result.err.strip().splitlines()[-1]]
    assert errors[0].startswith(f"crabzoo ask: error: {tiny}: its weights do not fit this model (another paradigm")
