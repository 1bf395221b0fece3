"""Example AV-UIE v2 records for every task (train and test layouts of AVUIE_SPEC §2.5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TRAIN = {
    "a2v": {"video1_path": "x_10.mp4", "video2_path": "y_30.mp4", "audio_path": "x_10.mp3", "correct_video": 1,
            "audio_event": "dog", "video1_event": "dog", "video2_event": "violin", "label": "R. <answer>1</answer>"},
    "v2a": {"video_path": "x.mp4", "audio1_path": "a.mp3", "audio2_path": "b.mp3", "correct_audio": "2",
            "audio1_event": "dog", "video_event": "cat", "audio2_event": "cat", "label": "<answer>2</answer>"},
    "ks": {"video_path": "k.mp4", "audio_path": "k.wav", "action": "playing drums", "label": "<answer>playing drums</answer>"},
    "ucf": {"video_path": "ApplyEyeMakeup/v_1.avi", "audio_path": "ApplyEyeMakeup/v_1.wav", "label": "ApplyEyeMakeup",
            "new_label": "<answer>applyeyemakeup</answer>"},
    "meld": {"video_path": "train/d1.mp4", "audio_path": "train/d1.mp3", "Emotion": "joy", "label": "<answer>joy</answer>"},
    "mer24": {"video_path": "m.mp4", "audio_path": "m.wav", "discrete": "happy", "label": "<answer>happy</answer>"},
    "cremad": {"video_path": "c.mp4", "audio_path": "c.wav", "emotion": "angry", "label": "<answer>angry</answer>"},
    "mafw": {"video_path": "c.mp4", "audio_path": "c.wav", "emotion": "sad", "label": "<answer>sad</answer>"},
    "dfew": {"video_path": "c.mp4", "audio_path": "c.wav", "emotion": "fear", "label": "<answer>fear</answer>"},
    "emotion": {"video_path": "c.mp4", "audio_path": "c.wav", "emotion": "calm", "label": "<answer>calm</answer>"},
    "avqa": {"video_path": "00000823.mp4", "audio_path": "00000823.mp3", "video_id": "00000823", "question_id": 4521,
             "type": "[\"Audio-Visual\", \"Counting\"]", "question": "How many instruments are sounding in the video?",
             "answer": "two", "label": "<answer>two</answer>"},
    "avqa_thu": {"id": 17, "video_name": "-HG3_000030", "video_id": 341, "question_relation": "Both",
                 "question_type": "Which", "multi_choice": ["motorboat", "car", "train", "plane"],
                 "question_text": "What vehicle is making the sound?", "answer": "motorboat",
                 "label": "<answer>motorboat</answer>", "video_path": "-HG3_000030.mp4", "audio_path": "-HG3_000030.mp3"},
    "ave": {"video_path": "v.mp4", "audio_path": "v.mp3", "event": "Church bell", "vid": "v", "start_time": 2,
            "end_time": 9, "label_content": "R. <event>Church bell, (2 9)</event>"},
    "unav": {"video_path": "u.mp4", "audio_path": "u.mp3", "vid": "u",
             "label_content": "R. <event>dog barking, (0 3)(5 7)</event> <event>car, (2 9)</event>"},
    "avvp": {"video_path": "p.mp4", "audio_path": "p.mp3", "filename": "p", "vid": "p", "event": "Speech,Dog",
             "label_content": "R. <visual>Dog,(1 3)</visual> <audio>Speech,(0 10)</audio>"},
    "avcap": {"video_path": "c.mp4", "audio_path": "c.mp3", "video_id": "c1",
              "label_content": "I hear music. <answer>A man plays the guitar.</answer>"},
    "s4": {"image_path": "AVS/v1s/clip1/frames/0.jpg", "audio_path": "AVS/v1s/clip1/audio.wav", "vid": "clip", "uid": "clip1",
           "a_obj": "baby", "label_content": "The object making the sound is baby. Its bounding box is [1,2,30,40] and three points on it are [5,6], [7,8], [9,10]."},
    "ms3": {"image_path": "AVS/v1m/clip2/frames/3.jpg", "audio_path": "AVS/v1m/clip2/audio.wav", "vid": "clip", "uid": "clip2",
            "a_obj": "guitar", "frame_idx": 3, "label_content": "x"},
    "arig": {"image_path": "AVS/v1s/clip1/frames/2.jpg", "audio_path": "AVS/v1s/clip1/audio.wav", "a_obj": "dog",
             "label_content": "The sounding object is dog. Its coordinates are <obj>(10,20)(100,200)</obj>."},
    "ref_avs": {"image_path": "REFAVS/media/clipR/frames/7.jpg", "audio_path": "REFAVS/media/clipR/audio.wav",
                "vid": "clipR", "fid": 11, "uid": "clipR_1_x", "idx": 7, "description": "The Loudest Guitar",
                "output": "<answer>true</answer> The object is guitar. Its bounding box is [1,2,30,40] and three points on it are [5,6], [7,8], [9,10]."},
}

TEST = {
    "a2v": {"video1_path": "x_10.mp4", "video2_path": "y_30.mp4", "audio_path": "x_10.mp3", "correct_video": 2},
    "v2a": {"video_path": "x.mp4", "audio1_path": "a.mp3", "audio2_path": "b.mp3", "correct_audio": 1},
    "ks": {"video_path": "k.mp4", "audio_path": "k.wav", "action": "playing drums"},
    "ucf": {"video_path": "ApplyEyeMakeup/v_1.avi", "audio_path": "ApplyEyeMakeup/v_1.wav", "label": "ApplyEyeMakeup"},
    "meld": {"video_path": "test/d1.mp4", "audio_path": "test/d1.mp3", "Emotion": "joy"},
    "cremad": {"video_path": "c.mp4", "audio_path": "c.wav", "emotion": "angry"},
    "mafw": {"video_path": "c.mp4", "audio_path": "c.wav", "emotion": "sad"},
    "dfew": {"video_path": "c.mp4", "audio_path": "c.wav", "emotion": "fear"},
    "emotion": {"video_path": "c.mp4", "audio_path": "c.wav", "emotion": "calm"},
    "avqa": {k: v for k, v in TRAIN["avqa"].items() if k != "label"},
    "avqa_thu": {k: v for k, v in TRAIN["avqa_thu"].items() if k != "label"},
    "ave": {k: v for k, v in TRAIN["ave"].items() if k != "label_content"},
    "unav": {**TRAIN["unav"], "avsynth": {"events": [["car", 2, 9], ["dog barking", 5, 7], ["dog barking", 0, 3]]}},
    "avvp": {"video_path": "p.mp4", "audio_path": "p.mp3", "filename": "p", "vid": "p",
             "event": "<visual>Dog,(1 3)</visual> <audio>Speech,(0 10)</audio>"},
    "avcap": {**TRAIN["avcap"], "avsynth": {"captions": ["A man plays the guitar.", "Someone strums a guitar."]}},
    "s4": {"visual_path": "AVS/v1s/clip1/frames/4.jpg", "audio_path": "AVS/v1s/clip1/audio.wav", "vid": "clip",
           "uid": "clip1", "a_obj": "baby", "frame_idx": 4},
    "ms3": {"visual_path": "AVS/v1m/clip2/frames/1.jpg", "audio_path": "AVS/v1m/clip2/audio.wav", "vid": "clip",
            "uid": "clip2", "a_obj": "guitar", "frame_idx": 1},
    "arig": {"visual_path": "AVS/v1s/clip1/frames/2.jpg", "audio_path": "AVS/v1s/clip1/audio.wav", "top_left": [10, 20],
             "bottom_right": [100, 200], "a_obj": "dog", "frame_idx": 2},
    "ref_avs": {"visual_path": "REFAVS/media/clipR/frames/7.jpg", "audio_path": "REFAVS/media/clipR/audio.wav",
                "object": "Making The Loudest Sound", "split": "test_s", "vid": "clipR", "uid": "clipR_1_x", "fid": 11,
                "frame_idx": 7},
}


def write_wav(path: Path, seconds: float, sr: int = 16000, value: float | None = None) -> np.ndarray:
    import soundfile as sf

    n = int(seconds * sr)
    wave = (np.full(n, value, dtype=np.float32) if value is not None
            else (np.sin(np.arange(n) / 20.0) * 0.5).astype(np.float32))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, sr, subtype="FLOAT")
    return wave


def write_video(path: Path, n_frames: int, size: tuple[int, int] = (32, 48), fps: int = 10) -> None:
    """A tiny MPEG-4 video whose frame k is filled with grey level 10 * k."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        for k in range(n_frames):
            frame = av.VideoFrame.from_ndarray(np.full((*size, 3), 10 * k, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
