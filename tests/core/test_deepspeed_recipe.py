"""recipes/scale/deepspeed-zero2.yaml: Lightning's ZeRO-2 strategy, its class form in the header, and one clear
error when deepspeed is missing (the real CLI; test_config_hub.py parses the recipe with the quickstart too)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "scale" / "deepspeed-zero2.yaml"
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"


def cli(*args: str) -> tuple[int, str, str]:
    """``crabzoo.cli.main(args)`` in process: (exit code, stdout, stderr)."""
    from crabzoo.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    argv = sys.argv
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        finally:
            sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def header_class_form(tmp_path: Path) -> Path:
    """The ``strategy:`` block commented in the recipe's header, as a config file of its own."""
    lines = RECIPE.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip() == "#   strategy:")
    block = []
    for ln in lines[start:]:
        if not ln.startswith("#    ") and block:
            break
        block.append(ln[4:])
    path = tmp_path / "class-form.yaml"
    path.write_text(yaml.safe_dump({"trainer": yaml.safe_load("\n".join(block))}))
    return path


def test_the_registered_name_is_deepspeed_zero_stage_2():
    from lightning.pytorch.strategies import DeepSpeedStrategy, StrategyRegistry

    trainer = yaml.safe_load(RECIPE.read_text())["trainer"]
    entry = StrategyRegistry[trainer["strategy"]]
    assert entry["strategy"] is DeepSpeedStrategy and entry["init_params"] == {"stage": 2}
    assert (trainer["accelerator"], trainer["devices"], trainer["precision"]) == ("gpu", -1, "bf16-mixed")
    assert trainer["use_distributed_sampler"] is False


def test_the_class_form_of_the_header_parses(tmp_path):
    code, out, err = cli("fit", "--config", str(QUICKSTART), "--config", str(RECIPE),
                         "--config", str(header_class_form(tmp_path)), "--print_config")
    assert code == 0, err
    strategy = yaml.safe_load(out)["trainer"]["strategy"]
    assert strategy["class_path"] == "lightning.pytorch.strategies.DeepSpeedStrategy"
    assert strategy["init_args"]["stage"] == 2 and strategy["init_args"]["exclude_frozen_parameters"] is True


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="deepspeed is installed")
@pytest.mark.parametrize("form", ["name", "class"])
def test_fit_without_deepspeed_is_one_line(tmp_path, form):
    corpus = tmp_path / "corpus" / "ks"
    corpus.mkdir(parents=True)
    records = [{"instruction": "What is making the sound?", "output": f"<answer>guitar {i}</answer>"} for i in range(8)]
    (corpus / "train.json").write_text(json.dumps(records))  # a tokenizer in a blink instead of the AVSynth one
    extra = ["--config", str(header_class_form(tmp_path))] if form == "class" else []
    code, _, err = cli("fit", "--config", str(QUICKSTART), "--config", str(RECIPE), *extra,
                       "--model.init_args.backbone.init_args.tokenizer_corpus", str(corpus.parent),
                       "--trainer.accelerator", "cpu", "--trainer.devices", "1",
                       "--trainer.default_root_dir", str(tmp_path / "runs"))
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1 and "deepspeed package is not installed" in lines[0] and "fsdp2.yaml" in lines[0]
    assert "Traceback" not in err
