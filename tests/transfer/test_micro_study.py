"""A 2-task x 2-regime x 1-seed study end to end: real `crabzoo fit` runs, resume, report and plots."""

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_micro_study_runs_resumes_and_reports(avsynth_root, tmp_path, capsys):
    from crabzoo.transfer.cli import main

    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({
        "data": {"init_args": {
            "root": str(avsynth_root), "synth": None, "num_workers": 0, "batch_size": 2, "max_val_per_task": 2,
        }},
        "model": {"init_args": {
            "max_new_tokens": 6,
            "backbone": {"init_args": {"tokenizer_corpus": str(avsynth_root / "AVUIE_2")}},
        }},
        "trainer": {"limit_val_batches": 2, "enable_progress_bar": False},
    }))
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "out": str(tmp_path / "study"),
        "recipe": [str(ROOT / "recipes" / "avsynth" / "transfer-base.yaml"), str(base)],
        "paradigms": {"mlp": [str(ROOT / "paradigms" / "tiny" / "mlp.yaml")]},
        "regimes": {
            "single": {"multitask": False, "configs": [str(ROOT / "recipes" / "adapters" / "lora.yaml")]},
            "ilora": {"configs": [str(ROOT / "recipes" / "adapters" / "ilora.yaml")]},
        },
        "tasks": ["ks", "a2v"],
        "seeds": [0],
        "budget": "steps",
        "steps": 2,
    }))
    main(["--config", str(study)])
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "study" / "report.json").read_text())
    assert report["failures"] == []
    tasks = {d["task"] for d in report["deltas"] if d["regime"] == "ilora"}
    assert tasks == {"ks", "a2v"}
    shares = {r["scope"]: r for r in report["shares"]}
    assert shares["dataset"]["n"] == 2
    assert (tmp_path / "study" / "heatmap.png").is_file() and (tmp_path / "study" / "delta_mlp.png").is_file()
    assert "Share of tasks with positive transfer" in out
    assert list((tmp_path / "study" / "routes").glob("mlp_ilora_seed0*.png"))  # the I-LoRA router heat-maps
    # a second invocation skips the three finished runs
    main(["--config", str(study)])
    assert capsys.readouterr().out.count("done, skipped") == 3
    # a run whose samples.json lost a task's states is validated again from its checkpoint: the same states
    run = tmp_path / "study" / "mlp" / "ilora" / "all" / "seed0"
    path = next(run.glob("version_*/samples.json"))
    before = json.loads(path.read_text())
    stripped = {**before, "tasks": {k: v for k, v in before["tasks"].items() if k != "ks"}}
    path.write_text(json.dumps(stripped))
    main(["--config", str(study), "--rescore", "ks"])
    assert "1 run(s) to score again on ks" in capsys.readouterr().out
    after = json.loads(path.read_text())
    assert after["tasks"]["ks"] == before["tasks"]["ks"]
    assert after["tasks"]["a2v"] == before["tasks"]["a2v"] and after["rescored"] == {"ks": str(next(run.glob("version_*/checkpoints/last.ckpt")))}
    main(["--config", str(study), "--rescore", "ks"])  # nothing left to score again
    assert "0 run(s) to score again on ks" in capsys.readouterr().out
