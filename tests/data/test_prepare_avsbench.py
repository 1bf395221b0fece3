"""s4 / ms3 from the original AVSBench release: layout choice, linked and extracted frames, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crabzoo.cli import main as crabzoo
from crabzoo.data.media import MediaError
from crabzoo.data.prepare import MANIFEST, REPORT
from crabzoo.data.prepare.ops import extract_frames, second_frame_index
from crabzoo.data.avsynth.render_video import render_frames, write_video
from prepare_fixtures import FPS, RELEASE_SIZE, V1_CLIPS, avsbench_release, build_source, scene


def prepare(task: str, raw: Path, ann: Path, out: Path) -> None:
    crabzoo(["data", "prepare", task, "--src", str(raw), "--annotations", str(ann), "--out", str(out), "--quiet"])


def check(out: Path) -> int:
    try:
        crabzoo(["data", "check", str(out), "--deep"])
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float32)


def test_second_frame_index_is_the_releases_rule() -> None:
    # frame s*r + floor(15 r / 16) with r = round(fps): hand-computed
    assert [second_frame_index(s, 25) for s in range(5)] == [23, 48, 73, 98, 123]
    assert [second_frame_index(s, 4) for s in range(3)] == [3, 7, 11]
    assert second_frame_index(2, 29.97) == 2 * 30 + 28
    assert second_frame_index(0, 1) == 0


def test_extract_frames_takes_each_seconds_frame(tmp_path: Path) -> None:
    base, _ = render_frames(scene(3, 5), 32, np.zeros(1))
    # 20 frames (5 s at 4 frames/s), each brighter by 9 than the one before: the frame taken is recognisable
    frames = np.stack([np.clip(base[0] * 0.25 + 9 * i, 0, 255).astype(np.uint8) for i in range(5 * FPS)])
    video = tmp_path / "clip.mp4"
    write_video(video, frames, FPS, None, 16000)
    dests = [tmp_path / "out" / f"{k}.jpg" for k in range(6)]
    extract_frames(video, dests, [0, 1, 2, 3, 4, 7])  # second 7 is past the end: the last frame
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{k}.jpg" for k in range(6)]  # no temporaries
    for dest, index in zip(dests, [3, 7, 11, 15, 19, 19]):
        with Image.open(dest) as img:
            assert (img.format, img.size) == ("PNG", (RELEASE_SIZE, RELEASE_SIZE))
        got = pixels(dest)
        expected = [np.asarray(Image.fromarray(frames[i]).resize((RELEASE_SIZE,) * 2, Image.Resampling.BILINEAR),
                               dtype=np.float32) for i in range(len(frames))]
        errors = [float(np.abs(got - e).mean()) for e in expected]
        assert errors[index] < 3.0, (dest, errors[index])  # codec tolerance (H.264, crf 18)
        assert int(np.argmin(errors)) == index

    extract_frames(video, [tmp_path / "own.png"], [1], size=None)
    assert pixels(tmp_path / "own.png").shape == (32, 32, 3)

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(video.read_bytes()[:200])
    with pytest.raises(MediaError):
        extract_frames(broken, [tmp_path / "bad" / "0.png"], [0])
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
    with pytest.raises(MediaError, match="file not found"):
        extract_frames(tmp_path / "absent.mp4", [tmp_path / "x.png"], [0])


@pytest.mark.parametrize("task", ["s4", "ms3"])
def test_original_release_prepared_then_check_clean(task: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    src, ann = avsbench_release(task, tmp_path)
    out = tmp_path / "out"
    prepare(task, src, ann, out)
    text = capsys.readouterr().out
    part = "S4" if task == "s4" else "MS3"
    assert f"from AVSBench (original release, {part})" in text and "known gap: AVSBench" in text
    task_dir = out / "AVUIE_2" / task
    report = json.loads((task_dir / REPORT).read_text())
    assert report["problems"] == [] and report["complete"] == report["records"] == {"train": 2, "test": 2}
    files = {f["path"]: f for f in json.loads((task_dir / MANIFEST).read_text())["files"]}
    folder = "v1s" if task == "s4" else "v1m"
    name, category, _ = V1_CLIPS[2]
    clip = f"AVS/{folder}/{name}_0_5000"
    # 3 clips: 4 frames, 3 audio files, 2 train masks (frame 0) + 2 test masks (frames 3 and 4)
    assert len(files) == 11 and {f["op"] for f in files.values()} == {"link"}
    data = src / ("Single-source" if task == "s4" else "Multi-sources") / f"{task}_data"
    sub = f"test/{category}/" if task == "s4" else "test/"  # the release's folders of a test clip
    frame = f"visual_frames/{sub}{name}/{name}_5.png" if task == "s4" else f"visual_frames/{name}/{name}.mp4_5.png"
    sources = {p: files[p]["source"] for p in (f"{clip}/frames/4.jpg", f"{clip}/labels_rgb/3.png", f"{clip}/audio.wav")}
    assert sources == {f"{clip}/frames/4.jpg": str(data / frame),
                       f"{clip}/labels_rgb/3.png": str(data / f"gt_masks/{sub}{name}/{name}_4.png"),
                       f"{clip}/audio.wav": str(data / f"audio_wav/{sub}{name}.wav")}
    assert check(out) == 0
    assert "all referenced files exist and decode" in capsys.readouterr().out

    before = {p: (task_dir / p).read_bytes() for p in (MANIFEST, REPORT)}
    prepare(task, src, ann, out)  # a rerun: nothing written, the same manifest and report
    assert "(0 written, 11 reused)" in capsys.readouterr().out
    assert before == {p: (task_dir / p).read_bytes() for p in (MANIFEST, REPORT)}


def test_frames_and_audio_extracted_where_the_release_lacks_them(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    src, ann = avsbench_release("s4", tmp_path)
    data = src / "Single-source" / "s4_data"
    name, category, split = V1_CLIPS[2]  # the test clip: frames 3 and 4 are needed
    frames_dir = data / f"visual_frames/{split}/{category}/{name}"
    shipped = {k: pixels(frames_dir / f"{name}_{k + 1}.png") for k in (3, 4)}
    shutil.rmtree(frames_dir)
    (data / f"audio_wav/{split}/{category}/{name}.wav").unlink()
    out = tmp_path / "out"
    prepare("s4", src, ann, out)
    capsys.readouterr()
    task_dir = out / "AVUIE_2" / "s4"
    report = json.loads((task_dir / REPORT).read_text())
    assert report["problems"] == [] and report["complete"] == {"train": 2, "test": 2}
    files = {f["path"]: f for f in json.loads((task_dir / MANIFEST).read_text())["files"]}
    clip = f"AVS/v1s/{name}_0_5000"
    video = str(data / f"raw_videos/{split}/{category}/{name}.mp4")
    assert {k: (files[f"{clip}/frames/{k}.jpg"]["op"], files[f"{clip}/frames/{k}.jpg"]["source"]) for k in (3, 4)} \
        == {3: ("frame", video), 4: ("frame", video)}
    wav = files[f"{clip}/audio.wav"]
    assert wav["op"] == "audio" and wav["duration"] == pytest.approx(5.0, abs=0.1)  # AAC priming adds a few ms
    for k in (3, 4):  # the extracted frame is the one the release shipped, within codec tolerance
        got = pixels(task_dir / clip / "frames" / f"{k}.jpg")
        assert got.shape == (RELEASE_SIZE, RELEASE_SIZE, 3)
        assert float(np.abs(got - shipped[k]).mean()) < 3.0
    assert check(out) == 0

    before = (task_dir / MANIFEST).read_bytes()
    prepare("s4", src, ann, out)
    assert "(0 written, 11 reused)" in capsys.readouterr().out
    assert (task_dir / MANIFEST).read_bytes() == before


def test_missing_clips_and_layouts_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, ann = avsbench_release("s4", tmp_path)
    data = src / "Single-source" / "s4_data"
    name, category, split = V1_CLIPS[1]  # listed in the CSV, neither frames nor video nor audio
    shutil.rmtree(data / f"visual_frames/{split}/{category}/{name}")
    (data / f"raw_videos/{split}/{category}/{name}.mp4").unlink()
    (data / f"audio_wav/{split}/{category}/{name}.wav").unlink()
    test_mask = data / f"gt_masks/test/{V1_CLIPS[2][1]}/{V1_CLIPS[2][0]}/{V1_CLIPS[2][0]}_5.png"
    test_mask.unlink()
    train = json.loads((ann / "s4" / "train.json").read_text())
    train.append(dict(train[0], image_path="AVS/v1s/zZnotThere_0_5000/frames/0.jpg",
                      audio_path="AVS/v1s/zZnotThere_0_5000/audio.wav", vid="zZnotThere", uid="zZnotThere_0_5000"))
    (ann / "s4" / "train.json").write_text(json.dumps(train))
    out = tmp_path / "out"
    prepare("s4", src, ann, out)
    text = capsys.readouterr().out
    assert "3 record(s) with missing or unreadable media" in text
    report = json.loads((out / "AVUIE_2" / "s4" / REPORT).read_text())
    lines = [f"{p['split']}[{p['index']}] {p['kind']}: {p['detail']}" for p in report["problems"]]
    assert len(lines) == 5
    assert lines[0].startswith(f"train[1] missing: image 'AVS/v1s/{name}_0_5000/frames/0.jpg': no file ")
    assert "and no raw video" in lines[0] and f"(clip {name!r} is listed in s4_meta_data.csv)" in lines[0]
    assert lines[1].startswith(f"train[1] missing: audio 'AVS/v1s/{name}_0_5000/audio.wav': no file ")
    assert lines[2] == ("train[2] missing: image 'AVS/v1s/zZnotThere_0_5000/frames/0.jpg': clip "
                        "'zZnotThere_0_5000' (vid 'zZnotThere') is not listed in s4_meta_data.csv")
    assert lines[4] == (f"test[1] missing: mask 'AVS/v1s/{V1_CLIPS[2][0]}_0_5000/labels_rgb/4.png': no file "
                        f"{test_mask} (the evaluation needs the test masks)")
    assert report["complete"] == {"train": 1, "test": 1}
    assert check(out) == 2

    raw_ave, _ = build_source("ave", tmp_path)
    with pytest.raises(SystemExit) as info:  # neither layout: one line naming both, exit 2
        prepare("s4", raw_ave, ann, out)
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "holds neither AVSBench layout that `s4` is prepared from" in err
    assert "AVSBench-semantic (v1s/, metadata.csv)" in err and "s4_meta_data.csv and s4_data/" in err

    (src / "Single-source" / "s4_meta_data.csv").write_text("name,start,category\nabc,0,dog_barking\n")
    with pytest.raises(SystemExit) as info:  # a CSV without the official columns
        prepare("s4", src, ann, out)
    assert info.value.code == 2 and "s4_meta_data.csv does not have the official columns (missing split" in \
        capsys.readouterr().err
