"""AVSynth: determinism, options, and ground truth consistent with the rendered media."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crabzoo.data.avsynth import AVSYNTH_TASKS, CATEGORIES, ensure_avsynth, read_manifest, synthesize
from crabzoo.data.avsynth.render_audio import rms_per_second
from crabzoo.data.avsynth.tasks import box_points
from crabzoo.data.avsynth.world import COLOURS
from crabzoo.data.avuie import read_split
from crabzoo.data.media import MediaLoader
from crabzoo.errors import CrabzooError

SMALL = ("ave", "s4")


def media_arrays(root: Path) -> dict[str, np.ndarray]:
    """Decoded arrays of every media file under ``root`` (keyed by relative path)."""
    loader = MediaLoader()
    out: dict[str, np.ndarray] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = str(path.relative_to(root))
        suffix = path.suffix.lower()
        if suffix in (".wav", ".mp3"):
            out[rel] = loader.read_audio(path)
        elif suffix in (".mp4", ".avi"):
            out[rel] = loader.read_video_frames(path)[0]
        elif suffix in (".jpg", ".png"):
            out[rel] = loader.read_image(path)
    return out


def annotation_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.json"))}


def test_same_seed_same_dataset(tmp_path: Path) -> None:
    a = synthesize(tmp_path / "a", 4, seed=3, tasks=SMALL, soundtrack=False)
    b = synthesize(tmp_path / "b", 4, seed=3, tasks=SMALL, soundtrack=False)
    ra, rb = Path(a["root"]), Path(b["root"])
    assert annotation_bytes(ra) == annotation_bytes(rb)
    ma, mb = media_arrays(ra), media_arrays(rb)
    assert sorted(ma) == sorted(mb) and len(ma) > 20
    for key in ma:
        np.testing.assert_array_equal(ma[key], mb[key], err_msg=key)
    c = synthesize(tmp_path / "c", 4, seed=4, tasks=SMALL, soundtrack=False)
    assert annotation_bytes(Path(c["root"])) != annotation_bytes(ra)
    assert 0 < a["cpu_seconds"] and 0 < a["seconds"]


def test_video_soundtracks_carry_the_clip_audio(tmp_path: Path) -> None:
    """MP4s hold H.264 + AAC, the ucf AVIs H.264 + 16-bit PCM; both soundtracks are the clip's WAV (16 kHz mono)."""
    import av

    out = synthesize(tmp_path, 4, seed=0, tasks=("ks", "ucf"))
    loader = MediaLoader()
    seen = set()
    for task in ("ks", "ucf"):
        for split in ("train", "test"):
            for sample in read_split(out["root"], task, split, strict=True).samples:
                video, wav = sample.video[0], sample.audio[0]
                with av.open(str(video)) as container:
                    audio = container.streams.audio[0]
                    names = (container.streams.video[0].codec_context.name, audio.codec_context.name)
                    assert (audio.rate, audio.channels) == (16000, 1)
                seen.add((video.suffix, *names))
                track, reference = loader.read_audio(video), loader.read_audio(wav)
                assert reference.size == 160000
                if video.suffix == ".avi":  # lossless: the very samples of the WAV
                    np.testing.assert_array_equal(track, reference)
                else:  # AAC: aligned and close (the encoder pads the last frame)
                    assert 160000 <= track.size < 160000 + 1024
                    assert np.corrcoef(track[:160000], reference)[0, 1] > 0.98
                    np.testing.assert_allclose(rms_per_second(track, 16000), rms_per_second(reference, 16000), rtol=0.1)
    assert seen == {(".mp4", "h264", "aac"), (".avi", "h264", "pcm_s16le")}


@pytest.mark.slow
def test_workers_do_not_change_the_dataset(tmp_path: Path) -> None:
    one = synthesize(tmp_path / "one", 30, seed=1, workers=1, audio_format="release")
    two = synthesize(tmp_path / "two", 30, seed=1, workers=2, audio_format="release")
    assert annotation_bytes(Path(one["root"])) == annotation_bytes(Path(two["root"]))
    ma, mb = media_arrays(Path(one["root"])), media_arrays(Path(two["root"]))
    assert sorted(ma) == sorted(mb) and any(k.endswith(".mp3") for k in ma) and any(k.endswith(".mp4") for k in ma)
    for key in ma:
        np.testing.assert_array_equal(ma[key], mb[key], err_msg=key)


def test_every_task_folder_and_split(avsynth_root: Path) -> None:
    base = avsynth_root / "AVUIE_2"
    assert sorted(p.name for p in base.iterdir() if p.is_dir()) == sorted(AVSYNTH_TASKS)
    for task in AVSYNTH_TASKS:
        for split in ("train", "test"):
            records = json.loads((base / task / f"{split}.json").read_text())
            assert records, f"{task}/{split} is empty"
            assert all("avsynth" in r for r in records)
    assert (base / "arig" / "AVS" / "v1s").is_symlink() and (base / "arig" / "AVS" / "v1s").is_dir()
    manifest = read_manifest(avsynth_root)
    assert manifest is not None and manifest["seed"] == 0 and len(manifest["annotations_sha256"]) == 30


def test_release_field_layout(avsynth_root: Path) -> None:
    base = avsynth_root / "AVUIE_2"
    first = {t: {s: json.loads((base / t / f"{s}.json").read_text())[0] for s in ("train", "test")} for t in AVSYNTH_TASKS}
    keys = {t: {s: set(r) - {"avsynth"} for s, r in v.items()} for t, v in first.items()}
    assert keys["s4"]["train"] == {"image_path", "audio_path", "vid", "uid", "a_obj", "label_content"}
    assert keys["s4"]["test"] == {"visual_path", "audio_path", "vid", "uid", "a_obj", "frame_idx"}
    assert keys["ref_avs"]["train"] == {"image_path", "audio_path", "vid", "fid", "uid", "idx", "description", "output"}
    assert keys["ref_avs"]["test"] == {"visual_path", "audio_path", "object", "split", "vid", "uid", "fid", "frame_idx"}
    assert keys["a2v"]["test"] == {"video1_path", "video2_path", "audio_path", "correct_video"}
    assert keys["ucf"]["train"] == {"video_path", "audio_path", "label", "new_label"}
    assert keys["emotion"]["train"] == {"video_path", "audio_path", "emotion", "label"}
    assert keys["avqa_thu"]["test"] == {"id", "video_name", "video_id", "question_relation", "question_type",
                                        "multi_choice", "question_text", "answer", "video_path", "audio_path"}
    assert first["ucf"]["train"]["video_path"].endswith(".avi") and "/" in first["ucf"]["train"]["video_path"]
    assert first["avvp"]["test"]["event"].startswith(("<visual>", "<audio>"))


def test_bare_answers_switch(tmp_path: Path) -> None:
    out = synthesize(tmp_path, 4, seed=0, tasks=("ave", "avcap"), reasoning=False)
    root = Path(out["root"])
    ave = json.loads((root / "ave" / "train.json").read_text())[0]
    assert ave["label_content"].startswith("<event>")
    cap = json.loads((root / "avcap" / "train.json").read_text())[0]
    assert cap["label_content"] == cap["avsynth"]["captions"][0]


def test_options_are_validated(tmp_path: Path) -> None:
    with pytest.raises(CrabzooError, match="unknown AVSynth knob.*bogus"):
        synthesize(tmp_path, 4, bogus=1)
    with pytest.raises(CrabzooError, match="noise must be in"):
        synthesize(tmp_path, 4, noise=1.5)
    with pytest.raises(CrabzooError, match="size must be an even"):
        synthesize(tmp_path, 4, size=33)
    with pytest.raises(CrabzooError, match="fps \\* duration"):
        synthesize(tmp_path, 4, fps=1, duration=5)
    with pytest.raises(CrabzooError, match="unknown AVSynth task"):
        synthesize(tmp_path, 4, tasks=["ave", "nope"])
    with pytest.raises(CrabzooError, match="clips must be a positive"):
        synthesize(tmp_path, 0)
    with pytest.raises(CrabzooError, match="audio_format"):
        synthesize(tmp_path, 4, audio_format="flac")
    (tmp_path / "AVUIE_2").mkdir()
    (tmp_path / "AVUIE_2" / "real.txt").write_text("release data")
    with pytest.raises(CrabzooError, match="did not write"):
        synthesize(tmp_path, 4, tasks=["ave"])


def test_ensure_generates_only_when_needed(tmp_path: Path) -> None:
    assert ensure_avsynth(tmp_path, clips=2, seed=0, tasks=["ks"]) is True
    assert ensure_avsynth(tmp_path, clips=2, seed=0, tasks=["ks"]) is False
    (tmp_path / "AVUIE_2" / "ks" / "train.json").write_text("[]")  # tampered annotations are regenerated
    assert ensure_avsynth(tmp_path, clips=2, seed=0, tasks=["ks"]) is True
    assert ensure_avsynth(tmp_path, clips=2, seed=1, tasks=["ks"]) is True  # other options


def test_events_sound_exactly_in_their_seconds(tmp_path: Path) -> None:
    out = synthesize(tmp_path, 12, seed=5, tasks=("ave", "unav"), noise=0.0, distractor_rate=0.0)
    loader = MediaLoader()
    for task in ("ave", "unav"):
        for split in ("train", "test"):
            for sample in read_split(out["root"], task, split, strict=True).samples:
                labels = sample.record["avsynth"]["labels"]
                rms = rms_per_second(loader.read_audio(sample.audio[0]), 16000)
                frames, times = loader.read_video_frames(sample.video[0])
                diff = np.abs(frames.astype(float) - frames.astype(float).min(axis=0)).mean(axis=(1, 2, 3))
                for second, label in enumerate(labels):
                    drawn = diff[(times >= second) & (times < second + 1)]
                    if task == "ave":
                        assert (rms[second] > 5e-3) == (label != "background"), (sample.id, second)
                        assert (drawn.max() > 2.0) == (label != "background"), (sample.id, second)
                    elif label != "background":
                        assert rms[second] > 5e-3 and drawn.max() > 2.0


def test_masks_cover_the_drawn_sounding_object(avsynth_root: Path) -> None:
    loader = MediaLoader()
    colours = {c.name: np.array(COLOURS[c.colour], dtype=float) for c in CATEGORIES}
    for task in ("s4", "ms3"):
        for sample in read_split(avsynth_root, task, "test", strict=True).samples:
            image = loader.read_image(sample.video[0]).astype(float)
            mask = loader.read_mask(str(sample.video[0]).replace("/frames/", "/labels_rgb/").replace(".jpg", ".png"))
            truth = sample.record["avsynth"]
            assert mask.any()
            box, points = box_points(mask)
            assert box == truth["box"] and points == truth["points"]
            scale = mask.shape[1] / 224
            for x, y in truth["points"]:
                assert mask[int(y * scale), int(x * scale)]
            if len(truth["categories"]) == 1:  # the painted pixels carry the category colour (texture dims them)
                want = colours[truth["categories"][0]]
                got = np.median(image[mask], axis=0)
                assert np.abs(got / max(got.max(), 1) - want / want.max()).max() < 0.35, sample.id
    for sample in read_split(avsynth_root, "ref_avs", "test", strict=True).samples:
        truth = sample.record["avsynth"]
        mask_path = avsynth_root / "AVUIE_2" / "ref_avs" / truth["mask"]
        assert loader.read_mask(mask_path).any() == truth["exists"]
        assert (sample.record["split"] == "test_n") == (not truth["exists"])


@pytest.mark.slow
@pytest.mark.parametrize("knobs", [
    {"duration": 4, "fps": 3, "max_objects": 1, "size": 16, "noise": 1.0, "distractor_rate": 1.0, "motion": 0.0},
    {"duration": 12, "fps": 4, "max_objects": 3, "size": 96, "noise": 0.0, "distractor_rate": 0.0, "motion": 1.0},
])
def test_extreme_knobs_give_a_valid_dataset(tmp_path: Path, knobs: dict) -> None:
    from crabzoo.data.avuie import check_media

    out = synthesize(tmp_path, 15, seed=2, soundtrack=False, **knobs)
    for task in AVSYNTH_TASKS:
        for split in ("train", "test"):
            result = read_split(out["root"], task, split, strict=True)
            assert result.samples and check_media(result.samples) == []
