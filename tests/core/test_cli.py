"""The crabzoo command's fast paths and error handling."""

import subprocess
import sys

CRABZOO = [sys.executable, "-m", "crabzoo.cli"]


def run(*args, **kw):
    return subprocess.run([*CRABZOO, *args], capture_output=True, text=True, **kw)


def test_help_lists_every_command():
    out = run("--help")
    assert out.returncode == 0
    for command in ("fit", "validate", "test", "predict", "list", "data", "evaluate", "transfer", "plot", "cache"):
        assert f"  {command}" in out.stdout


def test_help_and_list_do_not_import_heavy_packages():
    code = (
        "import sys; from crabzoo.cli import main; main(['--help']); main(['list', '--no-plugins']);"
        "heavy = [m for m in ('lightning', 'torch', 'transformers', 'timm', 'open_clip') if m in sys.modules];"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout


def test_list_shows_roles():
    out = run("list", "--no-plugins")
    assert out.returncode == 0
    assert "paradigms:" in out.stdout and "crabzoo.paradigms.base.AVLLM" in out.stdout


def test_unknown_command_exits_2_with_one_line():
    out = run("frobnicate")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "unknown command 'frobnicate'" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_role_exits_2():
    out = run("list", "--role", "spaceships")
    assert out.returncode == 2 and "unknown role" in out.stderr


def test_missing_config_file_exits_2():
    out = run("fit", "--config", "does/not/exist.yaml")
    assert out.returncode == 2
    assert "does/not/exist.yaml" in out.stderr and "Traceback" not in out.stderr


def test_list_shows_packaged_weights_and_whether_installed():
    from crabzoo import pretrained

    out = run("list", "--role", "pretrained weights")
    assert out.returncode == 0, out.stderr
    lines = [ln.strip() for ln in out.stdout.splitlines() if ln.startswith("  packaged:")]
    assert [ln.split()[0] for ln in lines] == [f"packaged:{n}" for n in pretrained.WEIGHTS]
    for line, (name, w) in zip(lines, pretrained.WEIGHTS.items()):
        assert w.licence in line and w.component in line
        assert ("(installed)" in line) == pretrained.available(name)
