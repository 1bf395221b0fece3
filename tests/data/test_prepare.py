"""``crabzoo data prepare`` on fixture replicas of every source dataset, ``crabzoo data check`` on the result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

from crabzoo.cli import main as crabzoo
from crabzoo.data.prepare import MANIFEST, PREPARERS, REPORT
from prepare_fixtures import TRAIN_ONLY, build_source, fit_args, video
from release_records import RELEASE_TASKS


def prepare(task: str, raw: Path, ann: Path, out: Path, *extra: str) -> None:
    crabzoo(["data", "prepare", task, "--src", str(raw), "--annotations", str(ann), "--out", str(out), "--quiet", *extra])


def check(out: Path, *extra: str) -> int:
    try:
        crabzoo(["data", "check", str(out), *extra])
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def test_a_preparer_for_every_release_task() -> None:
    assert sorted(PREPARERS) == sorted(RELEASE_TASKS)


@pytest.mark.parametrize("task", RELEASE_TASKS)
def test_prepare_then_check_clean(task: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw, ann = build_source(task, tmp_path)
    out = tmp_path / "out"
    prepare(task, raw, ann, out)
    text = capsys.readouterr().out
    task_dir = out / "AVUIE_2" / task
    report = json.loads((task_dir / REPORT).read_text())
    assert report["problems"] == [] and report["complete"] == report["records"]
    assert report["records"]["train"] >= 2 and ("test" in report["records"]) == (task not in TRAIN_ONLY)
    assert report["known_gaps"] and report["known_gaps"][0] in text
    for split in report["records"]:  # the release's annotation files, byte for byte
        assert (task_dir / f"{split}.json").read_bytes() == (ann / task / f"{split}.json").read_bytes()
    manifest = json.loads((task_dir / MANIFEST).read_text())
    files = manifest["files"]
    assert len(files) == report["files"] > 0 and all(f["decodable"] for f in files)
    for entry in files:
        path = task_dir / entry["path"]
        assert path.stat().st_size == entry["size"]
        if path.suffix == ".wav":
            info = sf.info(str(path))
            assert (info.samplerate, info.channels) == (16000, 1)
        if path.suffix in (".mp4", ".avi", ".mp3", ".wav") and "AVS" not in entry["path"]:
            assert entry["duration"] == pytest.approx(2.0, abs=0.1), entry  # 2-s clips (and 2-s cuts)
    assert f"{report['files']} files ({report['files']} written, 0 reused)" in text

    assert check(out, "--deep") == 0
    text = capsys.readouterr().out
    assert f"{task:<9} manifest: {len(files)} files, 0 problem(s) (decoded)" in text
    assert "all referenced files exist and decode" in text

    before = {p: (task_dir / p).read_bytes() for p in (MANIFEST, REPORT)}
    prepare(task, raw, ann, out)  # idempotent: nothing written, the same manifest and report
    assert f"(0 written, {len(files)} reused)" in capsys.readouterr().out
    assert before == {p: (task_dir / p).read_bytes() for p in (MANIFEST, REPORT)}


def test_annotations_from_the_release_zip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import zipfile

    raw, ann = build_source("ave", tmp_path)
    with zipfile.ZipFile(tmp_path / "AVUIE_2.zip", "w") as archive:
        for split in ("train", "test"):
            archive.write(ann / "ave" / f"{split}.json", f"AVUIE_2/ave/{split}.json")
    prepare("ave", raw, tmp_path / "AVUIE_2.zip", tmp_path / "out")
    assert "6 files (6 written, 0 reused)" in capsys.readouterr().out
    assert (tmp_path / "out" / "AVUIE_2" / "ave" / "test.json").read_bytes() == (ann / "ave" / "test.json").read_bytes()
    with pytest.raises(SystemExit) as info:
        prepare("s4", raw, tmp_path / "AVUIE_2.zip", tmp_path / "out")
    assert info.value.code == 2 and "holds no s4/train.json" in capsys.readouterr().err


def test_resume_redoes_only_missing_or_changed_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw, ann = build_source("cremad", tmp_path)
    out = tmp_path / "out"
    prepare("cremad", raw, ann, out, "--copy")
    task_dir = out / "AVUIE_2" / "cremad"
    (task_dir / "video" / "1001_DFA_ANG_XX.mp4").unlink()  # as if interrupted before this file
    (task_dir / "audio" / "1002_IEO_HAP_HI.wav").write_bytes(b"RIFF damaged")
    capsys.readouterr()
    assert check(out) == 2
    err = capsys.readouterr().err
    assert "1001_DFA_ANG_XX.mp4: listed in prepare_manifest.json but missing" in err
    assert "1002_IEO_HAP_HI.wav: size 12 bytes" in err
    prepare("cremad", raw, ann, out)
    assert "6 files (2 written, 4 reused)" in capsys.readouterr().out
    assert check(out, "--deep") == 0


def test_an_interrupted_run_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from crabzoo.data.prepare import engine, get_preparer

    raw, ann = build_source("ave", tmp_path)
    real, done = engine.produce, []

    def interrupted(job, task_dir, copy):  # the run is killed after 3 files
        if len(done) == 3:
            raise KeyboardInterrupt
        done.append(job.dest)
        return real(job, task_dir, copy)

    monkeypatch.setattr(engine, "produce", interrupted)
    monkeypatch.setattr(engine, "CHECKPOINT_SECONDS", 0.0)
    with pytest.raises(KeyboardInterrupt):
        engine.prepare(get_preparer("ave"), raw, ann, tmp_path / "out")
    task_dir = tmp_path / "out" / "AVUIE_2" / "ave"
    partial = task_dir / "video" / ".x5Jm0_tE8s4.k3j2h1.tmp.mp4"
    partial.write_bytes(b"half an encode")  # what a killed encoder leaves behind
    assert len(json.loads((task_dir / MANIFEST).read_text())["files"]) == 3
    monkeypatch.setattr(engine, "produce", real)
    prepare("ave", raw, ann, tmp_path / "out")
    assert "6 files (3 written, 3 reused)" in capsys.readouterr().out
    assert not partial.exists()
    assert check(tmp_path / "out", "--deep") == 0


def test_parallel_workers_give_the_same_manifest(tmp_path: Path) -> None:
    raw, ann = build_source("avvp", tmp_path)
    prepare("avvp", raw, ann, tmp_path / "one")
    prepare("avvp", raw, ann, tmp_path / "two", "--workers", "2")
    one, two = (json.loads((tmp_path / d / "AVUIE_2" / "avvp" / MANIFEST).read_text()) for d in ("one", "two"))
    assert one == two and len(one["files"]) == 6
    cut = next(f for f in one["files"] if f["path"] == "video/Bb1xHn_x.mp4")
    assert cut["op"] == "video" and cut["duration"] == pytest.approx(2.0)  # seconds 1-3 of a 4-s video


def test_bad_inputs_are_named_and_nothing_is_lost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    raw, ann = build_source("ks", tmp_path)
    bad_mp4 = raw / "train" / "kA1_000010_000020.mp4"
    bad_mp4.write_bytes(bad_mp4.read_bytes()[: bad_mp4.stat().st_size // 2])  # truncated mp4
    raw_c, ann_c = build_source("cremad", tmp_path)
    (raw_c / "AudioWAV" / "1002_IEO_HAP_HI.wav").write_bytes(b"")  # zero-byte wav
    (raw_c / "AudioWAV" / "1003_TAI_SAD_XX.wav").unlink()  # missing file
    raw_a, ann_a = build_source("ave", tmp_path)
    (raw_a / "AVE" / "RUhOCu3LNXM.mp4").unlink()  # listed in Annotations.txt, not downloaded
    train = json.loads((ann_a / "ave" / "train.json").read_text())
    train.append(dict(train[0], video_path="nOtThErE123.mp4", audio_path="nOtThErE123.mp3", vid="nOtThErE123"))
    train.append(dict(train[0], video_path="../../x5Jm0_tE8s4.mp4", audio_path="../../x5Jm0_tE8s4.mp3"))
    (ann_a / "ave" / "train.json").write_text(json.dumps(train))  # a video that is not there; a path outside
    raw_u, ann_u = build_source("ucf", tmp_path)
    video(raw_u / "UCF-101" / "Drumming" / "v_Drumming_g01_c02.avi", 1, soundtrack=False)  # a silent UCF101 clip
    for task, src, annotations in (("ks", raw, ann), ("cremad", raw_c, ann_c), ("ave", raw_a, ann_a),
                                   ("ucf", raw_u, ann_u)):
        prepare(task, src, annotations, out)
    text = capsys.readouterr().out

    def problems(task: str) -> list[str]:
        report = json.loads((out / "AVUIE_2" / task / REPORT).read_text())
        return [f"{p['split']}[{p['index']}] {p['kind']}: {p['detail']}" for p in report["problems"]]

    ks = problems("ks")
    assert len(ks) == 2 and all(p.startswith("train[0] unreadable: ") and "kA1_000010_000020.mp4" in p for p in ks)
    assert not (out / "AVUIE_2" / "ks" / "video" / "kA1_000010.mp4").exists()  # no partial or placeholder file
    cremad = problems("cremad")
    assert any(p.startswith("train[1] unreadable: audio/1002_IEO_HAP_HI.wav") for p in cremad)
    assert any(p.startswith("test[0] missing: audio '1003_TAI_SAD_XX.wav'") for p in cremad)
    assert problems("ucf") == [f"train[1] unreadable: audio/Drumming/v_Drumming_g01_c02.wav: "
                               f"{raw_u / 'UCF-101/Drumming/v_Drumming_g01_c02.avi'}: no audio stream"]
    ave = problems("ave")
    assert any(p.startswith("train[1] missing: video 'RUhOCu3LNXM.mp4'") and "listed in Annotations.txt" in p
               for p in ave)
    assert any(p.startswith("train[2] missing: video 'nOtThErE123.mp4'") and "not listed in Annotations.txt" in p
               for p in ave)
    assert any(p.startswith("train[3] missing: 'video/../../x5Jm0_tE8s4.mp4': the path leaves the task folder")
               for p in ave)
    assert not (out / "AVUIE_2" / "x5Jm0_tE8s4.mp4").exists()
    assert "1 record(s) with missing or unreadable media" in text and "3 record(s) with missing" in text
    assert "dead YouTube ids" in text  # the known gap, by name
    report = json.loads((out / "AVUIE_2" / "ave" / REPORT).read_text())
    assert report["records"] == {"train": 4, "test": 1} and report["complete"] == {"train": 1, "test": 1}
    assert len(json.loads((out / "AVUIE_2" / "ave" / "train.json").read_text())) == 4  # nothing lost

    assert check(out) == 2
    err = capsys.readouterr().err
    for name in ("kA1_000010.mp4", "1002_IEO_HAP_HI.wav", "1003_TAI_SAD_XX.wav", "RUhOCu3LNXM.mp4", "nOtThErE123.mp4"):
        assert name in err

    prepare("ave", raw_a, ann_a, out, "--drop-incomplete")
    kept = json.loads((out / "AVUIE_2" / "ave" / "train.json").read_text())
    assert [r["vid"] for r in kept] == ["-0A9suni5YA"]
    assert len(problems("ave")) == 6  # still reported: a video and an audio file for each of the 3 records

    with pytest.raises(SystemExit) as info:  # wrong --src layout: one line, exit 2
        prepare("ave", raw_c, ann_a, out)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "does not have the AVE layout" in err and "missing AVE, Annotations.txt" in err


@pytest.mark.slow
def test_prepared_folders_train_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a re-encoded video, a cut clip, an image task on linked AVSBench frames, and s4, whose release test records
    # hold a mask path but no box: validated by generation and mask scoring, with no teacher-forced target
    tasks = ["cremad", "avvp", "arig", "s4"]
    out = tmp_path / "out"
    for task in tasks:
        raw, ann = build_source(task, tmp_path)
        prepare(task, raw, ann, out)
    try:
        crabzoo(fit_args(out, tasks, tmp_path / "run"))
    except SystemExit as exit_:
        assert exit_.code in (0, None)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(results["results"]) == set(tasks)
    assert results["skipped"]["total"] == 0
    assert {t: results["results"][t]["n_total"] for t in tasks} == {"cremad": 1, "avvp": 1, "arig": 1, "s4": 2}
