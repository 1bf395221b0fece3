"""Runs that train on different task subsets share one generated AVSynth folder (a transfer study)."""

from crabzoo.data.datamodule import AVUIEDataModule


def test_synth_tasks_generate_once_for_every_subset(tmp_path):
    root = tmp_path / "avsynth"
    synth = {"clips": 4, "seed": 0, "soundtrack": False, "reasoning": False, "tasks": ["ks", "a2v"]}
    AVUIEDataModule(str(root), tasks=["ks"], synth=synth).prepare_data()
    assert {p.name for p in (root / "AVUIE_2").iterdir() if p.is_dir()} == {"ks", "a2v"}
    manifest = next(root.rglob("*manifest*"))
    before = manifest.stat().st_mtime_ns
    dm = AVUIEDataModule(str(root), tasks=["a2v"], synth=synth)
    dm.prepare_data()  # the same dataset: nothing regenerated
    assert manifest.stat().st_mtime_ns == before
    assert dm.task_names == ["a2v"]


def test_without_synth_tasks_the_run_tasks_are_generated(tmp_path):
    root = tmp_path / "avsynth"
    AVUIEDataModule(str(root), tasks=["emotion"], synth={"clips": 2, "seed": 0, "soundtrack": False}).prepare_data()
    assert {p.name for p in (root / "AVUIE_2").iterdir() if p.is_dir()} == {"emotion"}
