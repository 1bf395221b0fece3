"""Every task builds Samples from the record layouts of the release, with the exact prompts and paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crabzoo.data.media import MediaLoader
from crabzoo.errors import CrabzooError, MalformedRecordError
from crabzoo.tasks import GROUPS, RELEASE_TASKS, TASKS, Task, get_task

from task_records import TEST, TRAIN, write_png, write_video, write_wav

AV = "This is a video and an audio:"
IA = "This is an image and an audio:"


def test_registry() -> None:
    assert RELEASE_TASKS == ("a2v", "v2a", "ks", "ucf", "meld", "mer24", "cremad", "mafw", "dfew", "avqa", "avqa_thu",
                             "ave", "unav", "avvp", "s4", "ms3", "ref_avs", "arig", "avcap")
    assert set(TASKS) == set(RELEASE_TASKS) | {"emotion"}
    for name, cls in TASKS.items():
        task = get_task(name)
        assert isinstance(task, Task) and isinstance(task, cls) and task.name == name
        assert task.group in GROUPS and task.instruction_template and task.answer_format and task.chance_text
    assert get_task("ave") is get_task("ave")
    with pytest.raises(CrabzooError, match="unknown task 'nope'; known tasks: a2v, v2a"):
        get_task("nope")


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = "import sys, crabzoo.tasks; print('torch' in sys.modules, 'PIL' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


@pytest.mark.parametrize("name", list(TRAIN))
def test_train_records(name: str, tmp_path: Path) -> None:
    task = get_task(name)
    sample = task.sample_from_record(TRAIN[name], 3, "train", tmp_path)
    assert sample.id == f"{name}/train/3" and sample.task == name and sample.split == "train"
    assert sample.target == TRAIN[name][task.target_field]
    assert all(p.is_absolute() for p in sample.video + sample.audio)
    assert task.parse(sample.target) is not None


@pytest.mark.parametrize("name", list(TEST))
def test_test_records_round_trip(name: str, tmp_path: Path) -> None:
    task = get_task(name)
    sample = task.sample_from_record(TEST[name], 0, "test", tmp_path)
    assert sample.split == "test"
    if name not in ("s4", "ms3", "ref_avs"):  # release records carry no box: format_target needs AVSynth's
        text = task.format_target(sample.truth, evidence="Some evidence.")
        assert task.answer_part(task.parse(text)) == task.answer_part(sample.truth)


def test_prompts_are_exact(tmp_path: Path) -> None:
    s = {n: get_task(n).sample_from_record(TEST[n], 0, "test", tmp_path) for n in TEST}
    assert get_task("a2v").header == "These are two videos and an audio:"
    assert get_task("v2a").header == "This is a video and two audio clips:"
    assert get_task("ks").header == AV and get_task("s4").header == IA
    assert s["a2v"].instruction == "Please listen to the audio and indicate which of the two videos matches what you hear."
    assert s["v2a"].instruction == "Please view the video and indicate which of the two audio clips matches what you see."
    assert s["ks"].instruction == "Please identify the action taking place in the video."
    assert s["meld"].instruction == "Please judge the person's emotion at the moment."
    assert s["avqa"].instruction == "Please answer this question: How many instruments are sounding in the video?"
    assert s["avqa_thu"].instruction == ("Please answer the question based on the options: What vehicle is making the "
                                         "sound?, options:['motorboat', 'car', 'train', 'plane']")
    assert s["ave"].instruction == "Please describe the events and time range that occurred in the video."
    assert s["avvp"].instruction.startswith("Please determine the events that occur based on the visual and audio")
    assert s["avcap"].instruction == "Please describe this video and audio."
    assert s["s4"].instruction.startswith("Please identify the category of the object producing the sound in the video frame. Then,")
    assert s["arig"].instruction == "Please recognize the category of object that makes the sound and then output its bounding box."
    assert s["ref_avs"].instruction.startswith(
        "Please analyze the video frame and audio to find the object described as <des>making the loudest sound</des>. "
        'Answer with "true" or "false"')
    train = get_task("ref_avs").sample_from_record(TRAIN["ref_avs"], 0, "train", tmp_path)
    assert "<des>the loudest guitar</des>" in train.instruction


def test_paths_truth_and_meta(tmp_path: Path) -> None:
    s = {n: get_task(n).sample_from_record(TEST[n], 0, "test", tmp_path) for n in TEST}
    assert s["a2v"].video == [tmp_path / "video/x_10.mp4", tmp_path / "video/y_30.mp4"]
    assert s["a2v"].audio == [tmp_path / "audio/x_10.mp3"] and s["a2v"].truth == {"answer": "2"}
    assert s["v2a"].audio == [tmp_path / "audio/a.mp3", tmp_path / "audio/b.mp3"]
    assert s["ucf"].video == [tmp_path / "video/ApplyEyeMakeup/v_1.avi"] and s["ucf"].truth == {"answer": "applyeyemakeup"}
    assert s["meld"].truth == {"answer": "joy"}
    assert s["avqa"].meta == {"vid": "00000823", "qid": 4521, "type": "[\"Audio-Visual\", \"Counting\"]"}
    assert s["avqa"].truth["answer"] == "two" and s["avqa_thu"].truth["options"][0] == "motorboat"
    assert s["ave"].truth == {"events": [["Church bell", 2, 9]]}
    assert s["unav"].truth == {"events": [["car", 2, 9], ["dog barking", 0, 3], ["dog barking", 5, 7]]}
    assert s["avvp"].truth == {"audio": [["Speech", 0, 10]], "visual": [["Dog", 1, 3]]}
    assert s["avcap"].truth["captions"] == ["A man plays the guitar.", "Someone strums a guitar."]
    assert s["s4"].video == [tmp_path / "AVS/v1s/clip1/frames/4.jpg"]
    assert s["s4"].truth["mask_path"] == str(tmp_path / "AVS/v1s/clip1/labels_rgb/4.png")
    assert s["s4"].meta["audio_idx"] == 4 and s["ms3"].meta["audio_idx"] == 1
    train_s4 = get_task("s4").sample_from_record({**TRAIN["s4"], "image_path": "AVS/v1s/clip1/frames/3.jpg"}, 0, "train", tmp_path)
    assert train_s4.meta["audio_idx"] == 0  # Crab+ trains s4 on audio segment 0
    assert s["arig"].truth == {"category": "dog", "box": [10, 20, 100, 200]} and s["arig"].meta["idx"] == 2
    assert s["ref_avs"].truth["mask_path"] == str(tmp_path / "REFAVS/gt_mask/clipR/fid_11/00007.png")
    assert s["ref_avs"].truth["exists"] is True and s["ref_avs"].meta["split"] == "test_s"
    null = get_task("ref_avs").sample_from_record({**TEST["ref_avs"], "split": "test_n"}, 0, "test", tmp_path)
    assert null.truth["exists"] is False and null.truth["mask_path"] is None
    assert get_task("ref_avs").format_target(null.truth, reasoning=False) == "<answer>false</answer> The object is absent."


@pytest.mark.parametrize(
    ("name", "change", "reason"),
    [
        ("ks", {"video_path": None}, "field 'video_path' must be str"),
        ("a2v", {"correct_video": 3}, "field 'correct_video' must be 1 or 2"),
        ("ave", {"start_time": "two"}, "field 'start_time' must be an integer"),
        ("avqa_thu", {"multi_choice": []}, "field 'multi_choice' must be a non-empty list"),
        ("avvp", {"event": "Speech,Dog"}, "field 'event' is not a tagged AVVP string"),
        ("ms3", {"frame_idx": 7}, "frame index 7 is not in 0..4"),
        ("arig", {"top_left": [1]}, "'top_left' / 'bottom_right' must be"),
        ("ucf", {"label": True}, "field 'label' must be str, got bool"),
    ],
)
def test_malformed_records(name: str, change: dict, reason: str, tmp_path: Path) -> None:
    with pytest.raises(MalformedRecordError, match=reason) as err:
        get_task(name).sample_from_record({**TEST[name], **change}, 5, "test", tmp_path)
    assert err.value.index == 5 and err.value.path == str(tmp_path / "test.json")


@pytest.mark.parametrize("name", ["ks", "avqa", "s4", "ref_avs"])
def test_missing_field(name: str, tmp_path: Path) -> None:
    record = dict(TEST[name])
    record.pop("audio_path")
    with pytest.raises(MalformedRecordError, match="missing field 'audio_path'"):
        get_task(name).sample_from_record(record, 0, "test", tmp_path)
    with pytest.raises(MalformedRecordError, match="not a JSON object"):
        get_task(name).sample_from_record(["x"], 0, "test", tmp_path)  # type: ignore[arg-type]


def test_load_media_video_tasks(tmp_path: Path) -> None:
    loader = MediaLoader()
    write_video(tmp_path / "video/k.mp4", 25)
    write_video(tmp_path / "video/x_10.mp4", 25)
    write_video(tmp_path / "video/y_30.mp4", 12, size=(16, 16))
    wave = write_wav(tmp_path / "audio/k.wav", 10.0)
    ks = get_task("ks")
    media = ks.load_media(ks.sample_from_record(TEST["ks"], 0, "test", tmp_path), loader)
    assert media["visual"].frames.shape == (10, 32, 48, 3)  # native size; resizing is the encoder's job
    # round(linspace(0, 24, 10)) = 0, 3, 5, 8, 11, 13, 16, 19, 21, 24 -> grey levels 10 * k (lossy codec)
    grey = media["visual"].frames[:, 16, 24, 0].astype(int)
    np.testing.assert_allclose(grey, [0, 30, 50, 80, 110, 130, 160, 190, 210, 240], atol=6)
    assert media["audio"].segments.shape == (10, 16000)
    np.testing.assert_allclose(media["audio"].waveform, wave, atol=1e-6)

    emo = get_task("cremad")
    write_video(tmp_path / "video/c.mp4", 25)
    write_wav(tmp_path / "audio/c.wav", 6.0)
    media = emo.load_media(emo.sample_from_record(TEST["cremad"], 0, "test", tmp_path), loader)
    assert media["visual"].frames.shape[0] == 4 and media["audio"].segments.shape == (4, 16000)

    a2v = get_task("a2v")
    write_wav(tmp_path / "audio/x_10.mp3".replace(".mp3", ".wav"), 10.0)
    record = {**TEST["a2v"], "audio_path": "x_10.wav"}
    media = a2v.load_media(a2v.sample_from_record(record, 0, "test", tmp_path), loader)
    assert media["visual"].frames.shape == (20, 32, 48, 3)
    assert np.all(np.diff(media["visual"].timestamps) > 0)

    v2a = get_task("v2a")
    write_wav(tmp_path / "audio/a.wav", 10.0)
    write_wav(tmp_path / "audio/b.wav", 10.0, value=0.25)
    record = {**TEST["v2a"], "video_path": "k.mp4", "audio1_path": "a.wav", "audio2_path": "b.wav"}
    media = v2a.load_media(v2a.sample_from_record(record, 0, "test", tmp_path), loader)
    assert media["audio"].segments.shape == (20, 16000)
    np.testing.assert_allclose(media["audio"].waveform[160_000:], 0.25)


def test_load_media_image_tasks(tmp_path: Path) -> None:
    loader = MediaLoader()
    write_png(tmp_path / "AVS/v1s/clip1/frames/4.png", np.full((40, 60, 3), 7, dtype=np.uint8))
    (tmp_path / "AVS/v1s/clip1/frames/4.png").rename(tmp_path / "AVS/v1s/clip1/frames/4.jpg")
    wave = write_wav(tmp_path / "AVS/v1s/clip1/audio.wav", 5.0)
    s4 = get_task("s4")
    media = s4.load_media(s4.sample_from_record(TEST["s4"], 0, "test", tmp_path), loader)
    assert media["visual"].frames.shape == (1, 40, 60, 3)
    np.testing.assert_allclose(media["audio"].waveform, wave[64000:80000], atol=1e-6)  # segment 4 of 5
    arig = get_task("arig")
    record = {**TEST["arig"], "visual_path": "AVS/v1s/clip1/frames/4.jpg"}
    media = arig.load_media(arig.sample_from_record(record, 0, "test", tmp_path), loader)
    np.testing.assert_allclose(media["audio"].waveform, wave, atol=1e-6)
