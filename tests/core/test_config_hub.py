"""Every shipped YAML in recipes/ and paradigms/ is parsed by the real CLI (types, class paths, keys)."""

import contextlib
import io
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if "transfer" not in p.parts and "scale" not in p.parts)
PARADIGMS = sorted((ROOT / "paradigms").rglob("*.yaml"))
TRANSFER = sorted((ROOT / "recipes" / "transfer").glob("*.yaml"))
SCALE = sorted((ROOT / "recipes" / "scale").glob("*.yaml"))
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"


def parse(*configs: Path) -> str:
    """Run `crabzoo fit --print_config` in-process and return the resolved config."""
    import sys

    from crabzoo.lightning_cli import run_lightning_cli

    sys.argv = ["crabzoo"]
    argv = ["fit"]
    for c in configs:
        argv += ["--config", str(c)]
    argv.append("--print_config")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        run_lightning_cli(argv)
    assert exit_info.value.code in (0, None), out.getvalue()
    return out.getvalue()


def documented_configs(recipe: Path) -> list[Path]:
    """The --config files of the `crabzoo fit` command in the recipe's header comment (else the recipe alone,
    or the recipe after the tiny MLP paradigm when it describes no model class)."""
    import re

    header = []
    for line in recipe.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("# ").strip())
    commands = " ".join(header).replace("\\ ", " ").split("crabzoo fit")[1:]
    if commands:
        return [ROOT / path for path in re.findall(r"--config\s+(\S+)", commands[0])]
    text = recipe.read_text()
    if "class_path: crabzoo.paradigms" in text:
        return [recipe]
    return [ROOT / "paradigms" / "tiny" / "mlp.yaml", recipe]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_recipe_parses(recipe):
    configs = documented_configs(recipe)
    assert recipe in configs, f"{recipe}: its documented command does not use it"
    resolved = parse(*configs)
    assert "class_path:" in resolved and "trainer:" in resolved


@pytest.mark.parametrize("paradigm", PARADIGMS, ids=lambda p: str(p.relative_to(ROOT)))
def test_paradigm_parses_with_a_recipe(paradigm):
    resolved = parse(paradigm, ROOT / "recipes" / "avsynth" / "multitask-ilora.yaml")
    assert "backbone:" in resolved


@pytest.mark.parametrize("study", TRANSFER, ids=lambda p: p.name)
def test_transfer_study_parses(study):
    from crabzoo.transfer.study import StudyConfig, build_runs

    config = StudyConfig.from_yaml(study)
    runs = build_runs(config)
    assert runs
    for configs in config.paradigms.values():
        for c in configs:
            assert (ROOT / c).is_file(), c
    for c in config.recipe:
        assert (ROOT / c).is_file(), c


@pytest.mark.parametrize("snippet", SCALE, ids=lambda p: p.name)
def test_scale_snippet_parses_with_the_quickstart(snippet):
    assert "trainer:" in parse(QUICKSTART, snippet)


def test_quickstart_exists():
    assert QUICKSTART.is_file()
