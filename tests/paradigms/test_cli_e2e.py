"""The real `crabzoo` command end to end: the quickstart, a user's own class by class_path, checkpoint reload,
and one-line errors (exit 2) for user mistakes."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def crabzoo(*args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "crabzoo.cli", *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=900)


def small_run(root: Path, run_dir: Path, tasks: str = '["ks"]', steps: int = 2) -> list[str]:
    return [
        "--data.init_args.root", str(root), "--data.init_args.synth", "null", "--data.init_args.tasks", tasks,
        "--data.init_args.num_workers", "0", "--data.init_args.batch_size", "2", "--data.init_args.max_val_per_task", "2",
        "--model.init_args.backbone.init_args.tokenizer_corpus", str(root / "AVUIE_2"),
        "--model.init_args.max_new_tokens", "6", "--trainer.max_steps", str(steps), "--trainer.max_epochs", "-1",
        "--trainer.check_val_every_n_epoch", "1", "--trainer.limit_val_batches", "2",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(run_dir),
    ]


@pytest.mark.slow
def test_quickstart_recipe_runs_and_prints_the_table(avsynth_root, tmp_path):
    out = crabzoo("fit", "--config", "recipes/quickstart.yaml", *small_run(avsynth_root, tmp_path / "qs", tasks='["ks", "a2v"]', steps=3))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| task | group | metric | value | chance | parsed / total |" in out.stdout
    (results,) = (tmp_path / "qs").glob("version_*/results.json")
    payload = json.loads(results.read_text())
    assert set(payload["results"]) == {"ks", "a2v"} and payload["global_step"] == 3


USER_CONNECTOR = '''
import torch
from torch import nn

from crabzoo.connectors.base import Connector


class GatedConnector(Connector):
    """A linear projection scaled by a learned per-channel gate."""

    def __init__(self, in_dim: int, out_dim: int, init_gate: float = 1.0) -> None:
        super().__init__(in_dim, out_dim)
        self.proj = nn.Linear(in_dim, out_dim)
        self.gate = nn.Parameter(torch.full((out_dim,), init_gate))

    def forward(self, features):
        return features.replace(self.proj(features.tokens) * self.gate)
'''


@pytest.mark.slow
def test_user_connector_by_class_path_and_checkpoint_reload(avsynth_root, tmp_path):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "connectors.py").write_text(USER_CONNECTOR)
    (tmp_path / "mine.yaml").write_text(textwrap.dedent("""
        model:
          init_args:
            visual_connector:
              class_path: userpkg.connectors.GatedConnector
              init_args: {init_gate: 0.5}
    """))
    env = {"PYTHONPATH": str(tmp_path)}
    run_dir = tmp_path / "run"
    fit = crabzoo(
        "fit", "--config", "paradigms/tiny/mlp.yaml", "--config", "recipes/avsynth/multitask-ilora.yaml",
        "--config", str(tmp_path / "mine.yaml"), *small_run(avsynth_root, run_dir), env=env,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    (version,) = run_dir.glob("version_*")
    config = (version / "config.yaml").read_text()
    assert "userpkg.connectors.GatedConnector" in config
    ckpt = next((version / "checkpoints").glob("*.ckpt"))

    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert "visual_connector.gate" in state

    validate = crabzoo("validate", "--config", str(version / "config.yaml"), "--ckpt_path", str(ckpt),
                       "--trainer.default_root_dir", str(tmp_path / "val"), env=env)
    assert validate.returncode == 0, validate.stderr[-3000:]
    (val_results,) = (tmp_path / "val").glob("version_*/results.json")
    assert json.loads(val_results.read_text())["stage"] == "validate"


def one_line_error(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr
    errors = [ln for ln in out.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1, out.stderr
    return errors[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, expected",
    [
        (["--model.init_args.visual_connector.class_path", "crabzoo.connectors.NoSuchConnector"], "crabzoo list"),
        (["--model.init_args.visual_connector.init_args.poool", "3"], "Option 'poool' is not accepted"),
        (["--trainer.max_stepz", "3"], "unrecognized arguments"),
    ],
    ids=["unknown-class-path", "mistyped-init-arg", "unknown-trainer-key"],
)
def test_config_mistakes_exit_2_with_one_line(override, expected):
    out = crabzoo("fit", "--config", "paradigms/tiny/mlp.yaml", "--config", "recipes/avsynth/multitask-ilora.yaml", *override, "--print_config")
    assert expected in one_line_error(out)


@pytest.mark.slow
def test_missing_data_directory_exits_2(tmp_path):
    missing = tmp_path / "nowhere"
    out = crabzoo(
        "fit", "--config", "paradigms/tiny/mlp.yaml", "--config", "recipes/avsynth/multitask-ilora.yaml",
        "--data.init_args.root", str(missing), "--data.init_args.synth", "null", "--trainer.max_steps", "1",
    )
    line = one_line_error(out)
    assert str(missing) in line and "crabzoo data synth" in line


@pytest.mark.slow
def test_malformed_record_names_file_and_index_in_strict_mode(avsynth_root, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(avsynth_root / "AVUIE_2" / "ks", root / "AVUIE_2" / "ks")
    train = root / "AVUIE_2" / "ks" / "train.json"
    records = json.loads(train.read_text())
    del records[0]["audio_path"]
    train.write_text(json.dumps(records))
    out = crabzoo(
        "fit", "--config", "paradigms/tiny/mlp.yaml", "--config", "recipes/avsynth/multitask-ilora.yaml",
        *small_run(root, tmp_path / "run"), "--data.init_args.strict", "true",
    )
    line = one_line_error(out)
    assert "train.json" in line and "[0]" in line and "audio_path" in line
