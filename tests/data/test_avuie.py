"""The AV-UIE v2 reader on hand-written release records: every task folder, malformed records, strict mode."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from crabzoo.data.avuie import check_media, mask_paths, read_split, read_tasks, resolve_root
from crabzoo.data.media import MediaLoader
from crabzoo.errors import CrabzooError

from release_records import RELEASE_TASKS, TEST, TRAIN


def write_release(root: Path, train: dict | None = None, test: dict | None = None) -> Path:
    """``root/AVUIE_2/<task>/{train,test}.json`` with one record each (two copies of the train record)."""
    base = root / "AVUIE_2"
    for task in RELEASE_TASKS:
        (base / task).mkdir(parents=True, exist_ok=True)
        rec = (train or TRAIN)[task]
        (base / task / "train.json").write_text(json.dumps([rec, rec]))
        if task in (test or TEST):
            (base / task / "test.json").write_text(json.dumps([(test or TEST)[task]]))
    return base


def test_release_covers_19_folders() -> None:
    assert len(RELEASE_TASKS) == 19 and set(TRAIN) == set(RELEASE_TASKS)
    assert set(RELEASE_TASKS) - set(TEST) == {"mer24", "unav", "avcap"}  # train-only in the release


@pytest.mark.parametrize("task", RELEASE_TASKS)
def test_reads_release_records(tmp_path: Path, task: str) -> None:
    write_release(tmp_path)
    train = read_split(tmp_path, task, "train", strict=True)
    assert len(train.samples) == 2 and train.skipped == []
    sample = train.samples[0]
    assert sample.task == task and sample.split == "train"
    assert sample.target  # the train target field was read
    assert sample.video and sample.audio
    assert all(p.is_absolute() for p in sample.video + sample.audio)
    assert all(str(p).startswith(str(tmp_path / "AVUIE_2" / task)) for p in sample.video + sample.audio)
    test = read_split(tmp_path / "AVUIE_2", task, "test")  # the folder holding the task folders works too
    if task in TEST:
        assert len(test.samples) == 1 and not test.missing
    else:
        assert test.samples == [] and test.missing


def test_media_paths_follow_release_layout(tmp_path: Path) -> None:
    base = write_release(tmp_path)
    ucf = read_split(tmp_path, "ucf", "train").samples[0]
    assert ucf.video == [base / "ucf" / "video" / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi"]
    assert ucf.audio == [base / "ucf" / "audio" / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.wav"]
    s4 = read_split(tmp_path, "s4", "test").samples[0]
    assert s4.video == [base / "s4" / "AVS/v1s/_4R3qHn1n50_0_5000/frames/4.jpg"]
    assert mask_paths(s4) == [base / "s4" / "AVS/v1s/_4R3qHn1n50_0_5000/labels_rgb/4.png"]
    ref = read_split(tmp_path, "ref_avs", "test").samples[0]
    assert mask_paths(ref) == [base / "ref_avs" / "REFAVS/gt_mask/-8mcyL3kWNQ_8000_18000/fid_11/00007.png"]
    a2v = read_split(tmp_path, "a2v", "train").samples[0]
    assert [p.name for p in a2v.video] == ["xYz_10.mp4", "aBc_30.mp4"]


def test_malformed_records_are_skipped_and_counted(tmp_path: Path) -> None:
    train = copy.deepcopy(TRAIN)
    write_release(tmp_path, train)
    path = tmp_path / "AVUIE_2" / "ave" / "train.json"
    bad = dict(TRAIN["ave"])
    del bad["audio_path"]
    path.write_text(json.dumps([TRAIN["ave"], bad, "not a record", TRAIN["ave"]]))
    result = read_split(tmp_path, "ave", "train")
    assert len(result.samples) == 2
    assert [(Path(f).name, i) for f, i, _ in result.skipped] == [("train.json", 1), ("train.json", 2)]
    assert "audio_path" in result.skipped[0][2]
    with pytest.raises(CrabzooError, match=r"2 malformed record\(s\).*\[1\].*audio_path"):
        read_split(tmp_path, "ave", "train", strict=True)


def test_missing_root_and_task_errors(tmp_path: Path) -> None:
    with pytest.raises(CrabzooError, match="crabzoo data synth --out"):
        read_split(tmp_path / "nowhere", "ave", "train")
    (tmp_path / "AVUIE_2").mkdir()
    with pytest.raises(CrabzooError, match="task folder .*ave"):
        read_split(tmp_path, "ave", "train")
    with pytest.raises(CrabzooError, match="unknown task"):
        read_split(tmp_path, "not_a_task", "train")
    (tmp_path / "AVUIE_2" / "ave").mkdir()
    (tmp_path / "AVUIE_2" / "ave" / "train.json").write_text("{broken")
    with pytest.raises(CrabzooError, match="not valid JSON"):
        read_split(tmp_path, "ave", "train")
    (tmp_path / "AVUIE_2" / "ave" / "train.json").write_text('{"a": 1}')
    with pytest.raises(CrabzooError, match="JSON array"):
        read_split(tmp_path, "ave", "train")
    assert resolve_root(tmp_path) == tmp_path / "AVUIE_2"


def test_read_tasks_discovers_folders(tmp_path: Path) -> None:
    write_release(tmp_path)
    results = read_tasks(tmp_path, None, "train")
    assert set(results) == set(RELEASE_TASKS)
    assert sum(len(r.samples) for r in results.values()) == 38


def test_check_media_counts_missing_and_corrupt(tmp_path: Path) -> None:
    base = write_release(tmp_path)
    clip = base / "s4" / "AVS/v1s/_4R3qHn1n50_0_5000"
    (clip / "frames").mkdir(parents=True)
    (clip / "labels_rgb").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(clip / "frames" / "4.jpg")
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = 255
    Image.fromarray(mask).save(clip / "labels_rgb" / "4.png")
    sf.write(clip / "audio.wav", np.zeros(16000 * 5, np.float32), 16000)
    samples = read_split(tmp_path, "s4", "test").samples
    assert check_media(samples, MediaLoader()) == []
    (clip / "audio.wav").write_bytes(b"RIFF garbage")
    (clip / "labels_rgb" / "4.png").unlink()
    problems = check_media(samples)
    assert len(problems) == 2
    assert any("audio.wav" in p and "cannot decode" in p for p in problems)
    assert any("labels_rgb/4.png" in p and "not found" in p for p in problems)
    assert len(check_media(samples, masks=False)) == 1
