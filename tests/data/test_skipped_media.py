"""Samples whose media cannot be read are never silent: warned once per file, counted per task and split,
written into results.json, scored as wrong at test time; strict mode stops on the first with one line (exit 2)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def corrupt_root(tmp_path: Path) -> tuple[Path, list[str]]:
    """A tiny ``ks`` AVSynth folder with two train clips and one test clip made unreadable."""
    from crabzoo.data.avsynth.writer import synthesize

    root = tmp_path / "data"
    synthesize(root, clips=8, seed=0, tasks=["ks"], soundtrack=False, reasoning=False)
    task = root / "AVUIE_2" / "ks"
    train = json.loads((task / "train.json").read_text())
    test = json.loads((task / "test.json").read_text())
    assert len(train) == 6 and len(test) == 2
    bad = [
        task / "video" / train[0]["video_path"],  # garbage mp4, valid wav
        task / "audio" / train[1]["audio_path"],  # empty wav
        task / "video" / test[0]["video_path"],  # garbage mp4 in the evaluated set
    ]
    bad[0].write_bytes(b"\x00garbage, not an mp4\xff" * 10)
    bad[1].write_bytes(b"")
    bad[2].write_bytes(b"\x00garbage, not an mp4\xff" * 10)
    return root, [p.name for p in bad]


def cli_args(command: str, root: Path, run_dir: Path, workers: int) -> list[str]:
    return [
        command, "--config", str(ROOT / "paradigms/tiny/mlp.yaml"), "--config", str(ROOT / "recipes/avsynth/multitask-ilora.yaml"),
        "--data.init_args.root", str(root), "--data.init_args.synth", "null", "--data.init_args.tasks", '["ks"]',
        "--data.init_args.num_workers", str(workers), "--data.init_args.batch_size", "2", "--data.init_args.max_train_per_task", "4",
        "--model.init_args.backbone.init_args.tokenizer_corpus", str(root / "AVUIE_2"),
        "--model.init_args.max_new_tokens", "4", "--trainer.max_steps", "2", "--trainer.max_epochs", "-1",
        "--trainer.check_val_every_n_epoch", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_checkpointing", "false", "--trainer.callbacks", "[]", "--trainer.logger", "false",
        "--trainer.default_root_dir", str(run_dir),
    ]


def run_cli(args: list[str]) -> None:
    from crabzoo.cli import main

    try:
        main(args)
    except SystemExit as exit_:
        assert exit_.code in (0, None), exit_.code


def totals(stdout: str, stage: str) -> dict[str, int]:
    """The printed skip totals of one stage (``split/task -> n``)."""
    block = stdout.split(f"unreadable media during {stage}:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^  (\S+): (\d+)$", block.split("\n\n", 1)[0], re.M)}


@pytest.mark.slow
def test_skips_are_warned_once_counted_written_and_scored(corrupt_root, tmp_path, capsys, recwarn, monkeypatch):
    import crabzoo.data.skips as skips

    monkeypatch.setattr(skips, "_WARNED", set())
    root, bad = corrupt_root
    run_cli(cli_args("fit", root, tmp_path / "fit", workers=1))  # decoding in a data worker
    fit_out = capsys.readouterr()
    run_cli(cli_args("test", root, tmp_path / "test", workers=0))
    test_out = capsys.readouterr()

    messages = [str(w.message) for w in recwarn if "skipped sample" in str(w.message)]
    for name in bad:  # each unreadable file named once, over both runs of this process
        assert sum(name in m for m in messages) == 1, (name, messages)
    assert any("cannot decode" in m or "no " in m or "empty" in m for m in messages)

    assert totals(fit_out.out, "fit") == {"train/ks": 2, "test/ks": 1}
    assert totals(test_out.out, "test") == {"test/ks": 1}

    fit_json = json.loads((tmp_path / "fit" / "results.json").read_text())
    assert fit_json["skipped"]["total"] == 3 and fit_json["skipped"]["by_task"] == {"train/ks": 2, "test/ks": 1}
    test_json = json.loads((tmp_path / "test" / "results.json").read_text())
    assert test_json["skipped"]["by_task"] == {"test/ks": 1}
    assert {Path(f).name for f, _ in test_json["skipped"]["files"]} == {bad[2]}
    # the skipped test sample is scored as wrong: both test samples are in n_total, at most one parsed
    assert test_json["results"]["ks"]["n_total"] == 2
    assert test_json["results"]["ks"]["n_parsed"] <= 1
    assert "Skipped samples (unreadable media): 1" in (tmp_path / "test" / "results.md").read_text()


@pytest.mark.slow
def test_strict_mode_exits_2_with_one_line_naming_the_file(corrupt_root, tmp_path):
    root, bad = corrupt_root
    args = [*cli_args("test", root, tmp_path / "strict", workers=1), "--data.init_args.strict", "true"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "crabzoo.cli", *args], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 2, out.stderr[-3000:]
    err = out.stderr
    assert "Traceback" not in err  # raised in a data worker, still one line
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    assert bad[2] in lines[0] and "strict: false" in lines[0]


def test_collate_lists_skipped_items_and_counts_them(monkeypatch):
    import crabzoo.data.skips as skips
    from crabzoo.data.collate import Processor
    from crabzoo.data.schema import Sample
    from crabzoo.data.skips import SkipTally, skipped_item, skipped_predictions
    from crabzoo.tasks.base import ParseFailure

    sample = Sample(id="ks/test/0", task="ks", split="test", instruction="?", truth="hopping", video=["a.mp4"], audio=["a.wav"])
    batch = Processor.collate([skipped_item(sample, "a.mp4", "cannot decode video"), None])
    assert batch["n_skipped"] == 2 and batch["tasks"] == []
    assert [(r["task"], r["id"], r["file"], r["reason"]) for r in batch["skipped"]] == [("ks", "ks/test/0", "a.mp4", "cannot decode video")]
    preds, truths = skipped_predictions(batch)["ks"]
    assert isinstance(preds[0], ParseFailure) and truths == ["hopping"]
    monkeypatch.setattr(skips, "_WARNED", set())
    tally = SkipTally()
    with pytest.warns(UserWarning, match="a.mp4"):
        tally.add("test", batch)
    tally.add("test", batch)  # the same sample again (another epoch): counted once
    assert tally.gathered("test") == {"total": 1, "by_task": {"test/ks": 1}, "files": [["a.mp4", "cannot decode video"]]}


def test_eval_step_scores_an_all_skipped_batch_and_training_makes_no_step(monkeypatch):
    from types import SimpleNamespace

    import torch

    import crabzoo.data.skips as skips
    from crabzoo.data.collate import Processor
    from crabzoo.data.schema import Sample
    from crabzoo.data.skips import skipped_item
    from crabzoo.paradigms.base import AVLLM

    monkeypatch.setattr(skips, "_WARNED", set())
    samples = [Sample(id=f"ks/test/{i}", task="ks", split="test", truth={"answer": "hopping"}) for i in range(2)]
    batch = Processor.collate([skipped_item(s, f"{i}.mp4", "cannot decode video") for i, s in enumerate(samples)])
    logged: list[tuple[str, float]] = []
    module = SimpleNamespace(
        generate_val=True, val_metrics={}, _truths={"ks": []}, device=torch.device("cpu"), mask_protocol="avsbench",
        log=lambda name, value, **kw: logged.append((name, value)),
    )
    module.make_metric = lambda task: AVLLM.make_metric(module, task)
    module._score_skipped = lambda b: AVLLM._score_skipped(module, b)
    module._log_skipped = lambda b: AVLLM._log_skipped(module, b)
    AVLLM._eval_step(module, batch, "test")  # no forward pass: the batch holds no decodable sample
    values = module.val_metrics["ks"].compute()
    assert int(values["n_total"]) == 2 and int(values["n_parsed"]) == 0
    assert module._truths["ks"] == [{"answer": "hopping"}] * 2
    assert AVLLM.training_step(module, batch, 0) is None
    assert logged == [("data/skipped_media", 2.0)]
