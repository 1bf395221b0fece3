"""Fixture replicas of the 19 source datasets' official layouts, with clips rendered by AVSynth's renderers.

:func:`build_source` writes, for one task folder, a raw dataset under ``<tmp>/raw/<task>`` (the official folder
and file names, annotation files with the official columns) and the release's annotations under
``<tmp>/AVUIE_2/<task>/{train,test}.json`` whose records name those clips. Clips are 2 s at 32 x 32 pixels.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np

from crabzoo.data.avsynth.render_audio import render_audio
from crabzoo.data.avsynth.render_video import render_frames, write_audio, write_jpg, write_mask, write_video
from crabzoo.data.avsynth.world import Scene, SceneObject
from release_records import TEST, TRAIN

SIZE, FPS, SECONDS, RATE = 32, 4, 2, 16000
TRAIN_ONLY = ("mer24", "unav", "avcap")
ROOT = Path(__file__).resolve().parents[2]


def scene(seed: int, seconds: int = SECONDS) -> Scene:
    """One sounding, visible object (category by seed)."""
    obj = SceneObject(category=seed % 12, x=0.5, y=0.5, radius=0.3, visible=[True] * seconds, audible=[True] * seconds)
    return Scene(duration=seconds, objects=[obj], noise=0.0, seed=seed)


def video(path: Path, seed: int, seconds: int = SECONDS, soundtrack: bool = True) -> Path:
    """Render a clip to ``path`` (MP4 or AVI with a soundtrack; FLV without one)."""
    s = scene(seed, seconds)
    frames, _ = render_frames(s, SIZE, np.arange(seconds * FPS) / FPS)
    if path.suffix == ".flv":
        _write_flv(path, frames)
    else:
        write_video(path, frames, FPS, render_audio(s, RATE) if soundtrack else None, RATE)
    return path


def _write_flv(path: Path, frames: np.ndarray) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="flv") as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = SIZE, SIZE, "yuv420p"
        for img in frames:
            for packet in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)


def audio(path: Path, seed: int, seconds: int = SECONDS) -> Path:
    """Render a clip's soundtrack to ``path`` (WAV)."""
    write_audio(path, render_audio(scene(seed, seconds), RATE), RATE)
    return path


def avs_clip(folder: Path, seed: int, frames: int) -> None:
    """An AVSBench-semantic / Ref-AVS clip folder: ``audio.wav``, ``frames/<k>.jpg`` (and masks, by the caller)."""
    s = scene(seed, frames)
    imgs, masks = render_frames(s, SIZE, np.arange(frames) + 0.5)
    audio(folder / "audio.wav", seed, frames)
    for k in range(frames):
        write_jpg(folder / "frames" / f"{k}.jpg", imgs[k])
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder.parent / f".{folder.name}_masks.npy", masks[:, 0])  # the caller writes them in its own layout


def _masks(folder: Path) -> np.ndarray:
    path = folder.parent / f".{folder.name}_masks.npy"
    masks = np.load(path)
    path.unlink()
    return masks


def record(task: str, split: str, **fields: Any) -> dict[str, Any]:
    """A release record of ``task`` (the field layout of ``release_records``) with the given fields replaced."""
    rec = copy.deepcopy((TRAIN if split == "train" else TEST)[task])
    rec.update(fields)
    return rec


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------------------------------------- the layouts
def _vggsound(task: str, raw: Path) -> dict[str, list[dict[str, Any]]]:
    ids = [("vA1", 30), ("vB2", 0), ("vC3", 120)]
    for k, (yt, start) in enumerate(ids):
        video(raw / "video" / f"{yt}_{start:06d}.mp4", k)
    _write(raw / "vggsound.csv", "".join(f"{yt},{start},label {k},{'train' if k < 2 else 'test'}\n"
                                         for k, (yt, start) in enumerate(ids)))
    name = [f"{yt}_{start}" for yt, start in ids]
    if task == "a2v":
        return {"train": [record("a2v", "train", video1_path=f"{name[0]}.mp4", video2_path=f"{name[1]}.mp4",
                                 audio_path=f"{name[0]}.mp3"),
                          record("a2v", "train", video1_path=f"{name[1]}.mp4", video2_path=f"{name[2]}.mp4",
                                 audio_path=f"{name[2]}.mp3", correct_video=2)],
                "test": [record("a2v", "test", video1_path=f"{name[2]}.mp4", video2_path=f"{name[0]}.mp4",
                                audio_path=f"{name[0]}.mp3")]}
    return {"train": [record("v2a", "train", video_path=f"{name[0]}.mp4", audio1_path=f"{name[1]}.mp3",
                             audio2_path=f"{name[0]}.mp3"),
                      record("v2a", "train", video_path=f"{name[1]}.mp4", audio1_path=f"{name[1]}.mp3",
                             audio2_path=f"{name[2]}.mp3", correct_audio=1)],
            "test": [record("v2a", "test", video_path=f"{name[2]}.mp4", audio1_path=f"{name[2]}.mp3",
                            audio2_path=f"{name[0]}.mp3")]}


def _simple(task: str, raw: Path, folder: str, names: list[str], suffix: str = ".mp4",
            audio_suffix: str = ".wav") -> dict[str, list[dict[str, Any]]]:
    """Clips ``<folder>/<name><suffix>``: two train records and (except train-only tasks) one test record."""
    for k, name in enumerate(names):
        video(raw / folder / f"{name}{suffix}", k)
    out = {"train": [record(task, "train", video_path=f"{n}.mp4", audio_path=f"{n}{audio_suffix}") for n in names[:2]]}
    if task not in TRAIN_ONLY:
        out["test"] = [record(task, "test", video_path=f"{names[2]}.mp4", audio_path=f"{names[2]}{audio_suffix}")]
    return out


def _ks(raw: Path) -> dict[str, list[dict[str, Any]]]:
    ids = [("kA1", 10), ("kB2", 0), ("kC3", 45)]
    for k, (yt, s) in enumerate(ids):
        video(raw / ("val" if k == 2 else "train") / f"{yt}_{s:06d}_{s + 10:06d}.mp4", k)
    _write(raw / "annotations" / "train.csv", "label,youtube_id,time_start,time_end,split\n"
           + "".join(f"playing drums,{yt},{s},{s + 10},train\n" for yt, s in ids[:2]))
    _write(raw / "annotations" / "validate.csv", "label,youtube_id,time_start,time_end,split\n"
           + f"playing drums,{ids[2][0]},{ids[2][1]},{ids[2][1] + 10},val\n")
    names = [f"{yt}_{s:06d}" for yt, s in ids]
    return {"train": [record("ks", "train", video_path=f"{n}.mp4", audio_path=f"{n}.wav") for n in names[:2]],
            "test": [record("ks", "test", video_path=f"{names[2]}.mp4", audio_path=f"{names[2]}.wav")]}


def _ucf(raw: Path) -> dict[str, list[dict[str, Any]]]:
    clips = [("ApplyEyeMakeup", "g08_c01"), ("Drumming", "g01_c02"), ("Drumming", "g02_c01")]
    for k, (cls, gc) in enumerate(clips):
        video(raw / "UCF-101" / cls / f"v_{cls}_{gc}.avi", k)
    _write(raw / "ucfTrainTestlist" / "classInd.txt", "1 ApplyEyeMakeup\n2 Drumming\n")
    _write(raw / "ucfTrainTestlist" / "trainlist01.txt",
           "".join(f"{c}/v_{c}_{g}.avi {1 + (c == 'Drumming')}\n" for c, g in clips[:2]))
    _write(raw / "ucfTrainTestlist" / "testlist01.txt", f"{clips[2][0]}/v_{clips[2][0]}_{clips[2][1]}.avi\n")
    rel = [f"{c}/v_{c}_{g}" for c, g in clips]
    return {"train": [record("ucf", "train", video_path=f"{r}.avi", audio_path=f"{r}.wav", label=r.split("/")[0])
                      for r in rel[:2]],
            "test": [record("ucf", "test", video_path=f"{rel[2]}.avi", audio_path=f"{rel[2]}.wav", label="Drumming")]}


def _meld(raw: Path) -> dict[str, list[dict[str, Any]]]:
    header = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"
    video(raw / "train_splits" / "dia0_utt0.mp4", 0)
    video(raw / "dev_splits_complete" / "dia3_utt1.mp4", 1)
    video(raw / "output_repeated_splits_test" / "dia0_utt0.mp4", 2)  # the same name as a train clip, another clip
    _write(raw / "train_sent_emo.csv", header + '1,"Oh, hi!",Joey,joy,positive,0,0,1,1,"00:00:01,000","00:00:03,000"\n')
    _write(raw / "dev_sent_emo.csv", header + '1,"No.",Ross,sadness,negative,3,1,2,4,"00:01:01,000","00:01:02,000"\n')
    _write(raw / "test_sent_emo.csv", header + '1,"What?",Rachel,surprise,positive,0,0,8,3,"00:00:05,000","00:00:06,000"\n')
    return {"train": [record("meld", "train", video_path="train/dia0_utt0.mp4", audio_path="train/dia0_utt0.mp3"),
                      record("meld", "train", video_path="train/dia3_utt1.mp4", audio_path="train/dia3_utt1.mp3")],
            "test": [record("meld", "test", video_path="test/dia0_utt0.mp4", audio_path="test/dia0_utt0.mp3")]}


def _cremad(raw: Path) -> dict[str, list[dict[str, Any]]]:
    names = ["1001_DFA_ANG_XX", "1002_IEO_HAP_HI", "1003_TAI_SAD_XX"]
    for k, name in enumerate(names):
        video(raw / "VideoFlash" / f"{name}.flv", k)
        audio(raw / "AudioWAV" / f"{name}.wav", k)
    return {"train": [record("cremad", "train", video_path=f"{n}.mp4", audio_path=f"{n}.wav") for n in names[:2]],
            "test": [record("cremad", "test", video_path=f"{names[2]}.mp4", audio_path=f"{names[2]}.wav")]}


def _avqa(raw: Path) -> dict[str, list[dict[str, Any]]]:
    ids = ["00000823", "00001002", "00007114"]
    for k, vid in enumerate(ids):
        video(raw / "MUSIC-AVQA-videos-Real" / f"{vid}.mp4", k)
    for split, chosen in (("train", ids[:2]), ("test", ids[2:])):
        rows = [{"video_id": v, "question_id": 10 + i, "type": "[\"Audio-Visual\", \"Counting\"]",
                 "question_content": "How many <Object> are sounding?", "templ_values": "[\"instruments\"]",
                 "question_deleted": 0, "anser": "two"} for i, v in enumerate(chosen)]
        _write(raw / "json" / f"avqa-{split}.json", json.dumps(rows))
    return {"train": [record("avqa", "train", video_path=f"{v}.mp4", audio_path=f"{v}.mp3", video_id=v) for v in ids[:2]],
            "test": [record("avqa", "test", video_path=f"{ids[2]}.mp4", audio_path=f"{ids[2]}.mp3", video_id=ids[2])]}


def _avqa_thu(raw: Path) -> dict[str, list[dict[str, Any]]]:
    names = ["-HG3Omg_89c_000030", "aT9x_Q2_000010", "Zz81kq_000000"]
    for k, name in enumerate(names):
        video(raw / "videos" / f"{name}.mp4", k)
    for split, chosen in (("train", names[:2]), ("val", names[2:])):
        rows = [{"id": i, "video_name": n, "video_id": 100 + i, "question_text": "What makes the sound?",
                 "multi_choice": ["car", "dog", "bell", "drum"], "answer": 1, "question_relation": "Both",
                 "question_type": "Which"} for i, n in enumerate(chosen)]
        _write(raw / f"{split}_qa.json", json.dumps(rows))
    return {"train": [record("avqa_thu", "train", video_name=n, video_path=f"{n}.mp4", audio_path=f"{n}.mp3")
                      for n in names[:2]],
            "test": [record("avqa_thu", "test", video_name=names[2], video_path=f"{names[2]}.mp4",
                            audio_path=f"{names[2]}.mp3")]}


def _ave(raw: Path) -> dict[str, list[dict[str, Any]]]:
    ids = ["-0A9suni5YA", "RUhOCu3LNXM", "x5Jm0_tE8s4"]
    for k, vid in enumerate(ids):
        video(raw / "AVE" / f"{vid}.mp4", k)
    _write(raw / "Annotations.txt", "Category&VideoID&Quality&StartTime&EndTime\n"
           + "".join(f"Church bell&{vid}&good&0&2\n" for vid in ids))
    _write(raw / "trainSet.txt", "".join(f"Church bell&{vid}&good&0&2\n" for vid in ids[:2]))
    _write(raw / "testSet.txt", f"Church bell&{ids[2]}&good&0&2\n")
    return {"train": [record("ave", "train", video_path=f"{v}.mp4", audio_path=f"{v}.mp3", vid=v) for v in ids[:2]],
            "test": [record("ave", "test", video_path=f"{ids[2]}.mp4", audio_path=f"{ids[2]}.mp3", vid=ids[2])]}


def _unav(raw: Path) -> dict[str, list[dict[str, Any]]]:
    ids = ["uA1", "uB2"]
    for k, vid in enumerate(ids):
        video(raw / "videos" / f"{vid}.mp4", k)
    database = {vid: {"subset": "train", "duration": 2.0, "annotations": [{"segment": [0.0, 1.5], "label": "dog barking"}]}
                for vid in ids}
    _write(raw / "annotations" / "unav100_annotations.json", json.dumps({"database": database}))
    return {"train": [record("unav", "train", video_path=f"{v}.mp4", audio_path=f"{v}.mp3", vid=v) for v in ids]}


def _avvp(raw: Path) -> dict[str, list[dict[str, Any]]]:
    video(raw / "LLP_dataset" / "video" / "00BDwKBD5i8_0_2.mp4", 0)  # a downloaded 2-s clip
    video(raw / "LLP_dataset" / "video" / "Bb1xHn_x.mp4", 1, seconds=4)  # a full video: the clip is cut out
    video(raw / "LLP_dataset" / "video" / "c0ffee99_10_12.mp4", 2)
    _write(raw / "data" / "AVVP_train.csv", "filename\tevent_labels\n00BDwKBD5i8_0_2\tSpeech,Dog\nBb1xHn_x_1_3\tDog\n")
    _write(raw / "data" / "AVVP_test_pd.csv", "filename\tevent_labels\nc0ffee99_10_12\tSpeech\n")
    rows = [("00BDwKBD5i8_0_2", "00BDwKBD5i8"), ("Bb1xHn_x_1_3", "Bb1xHn_x"), ("c0ffee99_10_12", "c0ffee99")]
    return {"train": [record("avvp", "train", filename=f, vid=v, video_path=f"{v}.mp4", audio_path=f"{v}.mp3")
                      for f, v in rows[:2]],
            "test": [record("avvp", "test", filename=rows[2][0], vid=rows[2][1], video_path=f"{rows[2][1]}.mp4",
                            audio_path=f"{rows[2][1]}.mp3")]}


def _avcap(raw: Path) -> dict[str, list[dict[str, Any]]]:
    ids = ["vl_A1_30", "vl_B2_0"]
    for k, vid in enumerate(ids):
        video(raw / "videos" / f"{vid}.mp4", k)
    _write(raw / "desc_train.json", json.dumps([{"video_id": v, "desc": "a man talks while a dog barks"} for v in ids]))
    return {"train": [record("avcap", "train", video_path=f"{v}.mp4", audio_path=f"{v}.mp3", video_id=v) for v in ids]}


def _avsbench(task: str, raw: Path) -> dict[str, list[dict[str, Any]]]:
    part = "v1m" if task == "ms3" else "v1s"
    uids = ["_4R3qHn1n50_0_5000", "b7Wq2_x_1000_6000", "a7dRtKHcyE_3000_8000"]
    rows = ["vid,uid,s_min,s_sec,a_obj,split,label"]
    for k, uid in enumerate(uids):
        folder = raw / part / uid
        avs_clip(folder, k, 5)
        masks = _masks(folder)
        annotated = 5 if (k == 2 or part == "v1m") else 1  # S4 train clips: the first frame is annotated only
        for f in range(annotated):
            write_mask(folder / "labels_rgb" / f"{f}.png", masks[f])
            write_mask(folder / "labels_semantic" / f"{f}.png", masks[f], value=k + 1)
        rows.append(f"{uid.rsplit('_', 2)[0]},{uid},0,0,dog,{'train' if k < 2 else 'test'},{part}")
    _write(raw / "metadata.csv", "\n".join(rows) + "\n")
    base = [f"AVS/{part}/{uid}" for uid in uids]
    if task == "arig":
        return {"train": [record("arig", "train", image_path=f"{b}/frames/{f}.jpg", audio_path=f"{b}/audio.wav")
                          for b, f in ((base[0], 0), (base[1], 2))],
                "test": [record("arig", "test", visual_path=f"{base[2]}/frames/2.jpg", audio_path=f"{base[2]}/audio.wav",
                                frame_idx=2)]}
    train = [record(task, "train", image_path=f"{base[k]}/frames/0.jpg", audio_path=f"{base[k]}/audio.wav",
                    vid=uids[k].rsplit("_", 2)[0], uid=uids[k], **({"frame_idx": 0} if task == "ms3" else {}))
             for k in (0, 1)]
    test = [record(task, "test", visual_path=f"{base[2]}/frames/{f}.jpg", audio_path=f"{base[2]}/audio.wav",
                   vid=uids[2].rsplit("_", 2)[0], uid=uids[2], frame_idx=f) for f in (3, 4)]
    return {"train": train, "test": test}


def _ref_avs(raw: Path) -> dict[str, list[dict[str, Any]]]:
    clips = ["-8mcyL3kWNQ_8000_18000", "qQ3x_0_10000"]
    rows = ["vid,uid,s_min,s_sec,e_min,e_sec,fid,exp,split"]
    for k, clip in enumerate(clips):
        folder = raw / "media" / clip
        avs_clip(folder, k, 10)
        masks = _masks(folder)
        for f in range(10):
            write_mask(raw / "gt_mask" / clip / "fid_11" / f"0000{f}.png", masks[f])
        rows.append(f"{clip.rsplit('_', 2)[0]},{clip}_11_x,0,8,0,18,11,the dog barking,{'train' if k == 0 else 'test_s'}")
    _write(raw / "metadata.csv", "\n".join(rows) + "\n")
    return {"train": [record("ref_avs", "train", image_path=f"REFAVS/media/{clips[0]}/frames/{f}.jpg",
                             audio_path=f"REFAVS/media/{clips[0]}/audio.wav", idx=f, fid=11) for f in (2, 7)],
            "test": [record("ref_avs", "test", visual_path=f"REFAVS/media/{clips[1]}/frames/7.jpg",
                            audio_path=f"REFAVS/media/{clips[1]}/audio.wav", frame_idx=7, fid=11)]}


def _records(task: str, raw: Path) -> dict[str, list[dict[str, Any]]]:
    if task in ("a2v", "v2a"):
        return _vggsound(task, raw)
    if task in ("s4", "ms3", "arig"):
        return _avsbench(task, raw)
    builders = {"ks": _ks, "ucf": _ucf, "meld": _meld, "cremad": _cremad, "avqa": _avqa, "avqa_thu": _avqa_thu,
                "ave": _ave, "unav": _unav, "avvp": _avvp, "avcap": _avcap, "ref_avs": _ref_avs}
    if task in builders:
        return builders[task](raw)
    folder = {"mer24": "video", "mafw": "data/clips", "dfew": "Clip/original"}[task]
    names = {"mer24": ["sample_00000001", "sample_00000002"], "mafw": ["00025", "00031", "01007"],
             "dfew": ["1", "2", "3"]}[task]
    return _simple(task, raw, folder, names)


def build_source(task: str, tmp: Path) -> tuple[Path, Path]:
    """Write the raw replica of ``task``'s source dataset and the release's annotation files.

    Returns:
        ``(raw, annotations)``: the folder to pass as ``--src`` and the ``AVUIE_2`` folder for ``--annotations``.
    """
    raw, annotations = tmp / "raw" / task, tmp / "AVUIE_2"
    for split, recs in _records(task, raw).items():
        _write(annotations / task / f"{split}.json", json.dumps(recs, indent=1))
    return raw, annotations


def fit_args(root: Path, tasks: list[str], run_dir: Path) -> list[str]:
    """A 2-step ``crabzoo fit`` of the tiny MLP paradigm on a prepared folder."""
    return [
        "fit", "--config", str(ROOT / "paradigms/tiny/mlp.yaml"), "--config", str(ROOT / "recipes/avsynth/multitask-ilora.yaml"),
        "--data.init_args.root", str(root), "--data.init_args.synth", "null", "--data.init_args.tasks", json.dumps(tasks),
        "--data.init_args.num_workers", "0", "--data.init_args.batch_size", "2",
        "--model.init_args.backbone.init_args.tokenizer_corpus", str(root / "AVUIE_2"),
        "--model.init_args.max_new_tokens", "4", "--trainer.max_steps", "2", "--trainer.max_epochs", "-1",
        "--trainer.limit_train_batches", "2",
        "--trainer.check_val_every_n_epoch", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_checkpointing", "false", "--trainer.callbacks", "[]", "--trainer.logger", "false",
        "--trainer.default_root_dir", str(run_dir),
    ]


# ------------------------------------------------------------------------- the original AVSBench release (v1)
RELEASE_SIZE = 224
"""Side of the original AVSBench release's frames and masks."""

V1_CLIPS = (("_4R3qHn1n50", "dog_barking", "train"), ("b7Wq2_x", "cat_meowing", "train"),
            ("a7dRtKHcyE", "dog_barking", "test"))
"""``(name, category, split)`` of the replica's clips; the records' uid is ``<name>_<start ms>_<end ms>``."""


def avsbench_release(task: str, tmp: Path) -> tuple[Path, Path]:
    """The original AVSBench release's layout of ``s4`` or ``ms3`` and release records naming its clips.

    ``<tmp>/raw/<task>-v1/{Single-source,Multi-sources}/`` holds the meta CSV and ``<part>_data/`` with
    ``visual_frames`` (the frame 15/16 of the way through each second of the raw video, 224 x 224 PNG),
    ``audio_wav``, ``gt_masks`` (S4 train: the first frame only) and the 5-s ``raw_videos`` (4 frames/s).

    Returns:
        ``(src, annotations)``: the folder holding the part folder, and the ``AVUIE_2`` folder.
    """
    from crabzoo.data.prepare.ops import second_frame_index

    src = tmp / "raw" / f"{task}-v1"
    part = src / ("Single-source" if task == "s4" else "Multi-sources")
    data = part / f"{task}_data"
    rows = ["name,start,category,split"] if task == "s4" else ["video_id,split"]
    for k, (name, category, split) in enumerate(V1_CLIPS):
        s = scene(k, 5)
        frames, _ = render_frames(s, RELEASE_SIZE, np.arange(5 * FPS) / FPS)
        picked = [second_frame_index(j, FPS) for j in range(5)]
        _, masks = render_frames(s, RELEASE_SIZE, np.array(picked) / FPS)
        where = f"{split}/{category}/" if task == "s4" else f"{split}/"
        video_dir = f"raw_videos/{where}" if task == "s4" else "raw_videos/"
        write_video(_mkdir(data / video_dir) / f"{name}.mp4", frames, FPS, render_audio(s, RATE), RATE)
        audio(data / f"audio_wav/{where}{name}.wav", k, 5)
        for j, index in enumerate(picked):
            if task == "s4":
                target = data / f"visual_frames/{where}{name}/{name}_{j + 1}.png"
            else:
                target = data / f"visual_frames/{name}/{name}.mp4_{j + 1}.png"
            _png(target, frames[index])
        for j in range(1 if (task == "s4" and split == "train") else 5):
            write_mask(_mkdir(data / f"gt_masks/{where}{name}") / f"{name}_{j + 1}.png", masks[j, 0])
        rows.append(f"{name},0,{category},{split}" if task == "s4" else f"{name},{split}")
    _write(part / f"{task}_meta_data.csv", "\n".join(rows) + "\n")
    folder = "v1s" if task == "s4" else "v1m"
    uid = [f"{name}_0_5000" for name, _, _ in V1_CLIPS]
    base = [f"AVS/{folder}/{u}" for u in uid]
    extra = {"frame_idx": 0} if task == "ms3" else {}
    train = [record(task, "train", image_path=f"{base[k]}/frames/0.jpg", audio_path=f"{base[k]}/audio.wav",
                    vid=V1_CLIPS[k][0], uid=uid[k], **extra) for k in (0, 1)]
    test = [record(task, "test", visual_path=f"{base[2]}/frames/{f}.jpg", audio_path=f"{base[2]}/audio.wav",
                   vid=V1_CLIPS[2][0], uid=uid[2], frame_idx=f) for f in (3, 4)]
    annotations = tmp / "AVUIE_2"
    for split, recs in (("train", train), ("test", test)):
        _write(annotations / task / f"{split}.json", json.dumps(recs, indent=1))
    return src, annotations


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _png(path: Path, frame: np.ndarray) -> None:
    from PIL import Image

    _mkdir(path.parent)
    Image.fromarray(frame).save(path, format="PNG")
