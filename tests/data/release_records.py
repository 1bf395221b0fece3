"""Hand-written records in the exact field layout of the AV-UIE v2 release (AVUIE_SPEC.md section 2.5).

One train record and one test record per task folder (train-only tasks have no test record), values made up.
"""

from __future__ import annotations

from typing import Any

BOX_TEXT = "The object making the sound is dog. Its bounding box is [52,30,180,210] and three points on it are [110,96], [120,140], [98,170]."

TRAIN: dict[str, dict[str, Any]] = {
    "a2v": {"video1_path": "xYz_10.mp4", "video2_path": "aBc_30.mp4", "audio_path": "xYz_10.mp3", "correct_video": 1,
            "audio_event": "dog barking", "video1_event": "dog barking", "video2_event": "playing violin",
            "label": "I hear barking and the first video shows a dog. <answer>1</answer>"},
    "v2a": {"video_path": "xYz_10.mp4", "audio1_path": "aBc_30.mp3", "audio2_path": "xYz_10.mp3", "correct_audio": 2,
            "audio1_event": "violin", "video_event": "dog barking", "audio2_event": "dog barking",
            "label": "The video shows a dog; the second clip barks. <answer>2</answer>"},
    "ks": {"video_path": "abc123_000010.mp4", "audio_path": "abc123_000010.wav", "action": "playing drums",
           "label": "Drum hits are heard and sticks are seen. <answer>playing drums</answer>"},
    "ucf": {"video_path": "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
            "audio_path": "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.wav", "label": "ApplyEyeMakeup",
            "new_label": "A brush touches an eye. <answer>applyeyemakeup</answer>"},
    "meld": {"video_path": "train/dia3_utt1.mp4", "audio_path": "train/dia3_utt1.mp3", "Emotion": "joy",
             "label": "She laughs and smiles. <answer>joy</answer>"},
    "mer24": {"video_path": "sample_00001.mp4", "audio_path": "sample_00001.wav", "discrete": "happy",
              "label": "A bright voice and a smile. <answer>happy</answer>"},
    "cremad": {"video_path": "1001_DFA_ANG_XX.mp4", "audio_path": "1001_DFA_ANG_XX.wav", "emotion": "anger",
               "label": "A loud harsh voice and a frown. <answer>anger</answer>"},
    "mafw": {"video_path": "00025.mp4", "audio_path": "00025.wav", "emotion": "sad",
             "label": "A slow low voice. <answer>sad</answer>"},
    "dfew": {"video_path": "1.mp4", "audio_path": "1.wav", "emotion": "neutral",
             "label": "A calm face. <answer>neutral</answer>"},
    "avqa": {"video_path": "00000823.mp4", "audio_path": "00000823.mp3", "video_id": "00000823", "question_id": 4521,
             "type": "[\"Audio-Visual\", \"Counting\"]", "question": "How many instruments are sounding in the video?",
             "answer": "two", "label": "A piano and a violin sound. <answer>two</answer>"},
    "avqa_thu": {"id": 17, "video_name": "-HG3Omg_89c_000030", "video_id": 341, "question_relation": "Both",
                 "question_type": "Which", "multi_choice": ["motorboat", "car", "train", "plane"],
                 "question_text": "What vehicle is making the sound?", "answer": "motorboat",
                 "label": "An engine on water. <answer>motorboat</answer>",
                 "video_path": "-HG3Omg_89c_000030.mp4", "audio_path": "-HG3Omg_89c_000030.mp3"},
    "ave": {"video_path": "-0A9suni5YA.mp4", "audio_path": "-0A9suni5YA.mp3", "event": "Church bell",
            "vid": "-0A9suni5YA", "start_time": 0, "end_time": 8,
            "label_content": "A bell rings and a tower is seen. <event>Church bell, (0 8)</event>"},
    "unav": {"video_path": "abc.mp4", "audio_path": "abc.mp3", "vid": "abc",
             "label_content": "<event>dog barking, (0 3)(5 7)</event> <event>car passing, (2 10)</event>"},
    "avvp": {"video_path": "00BDwKBD5i8.mp4", "audio_path": "00BDwKBD5i8.mp3", "filename": "00BDwKBD5i8_30_40",
             "vid": "00BDwKBD5i8", "event": "Speech,Dog",
             "label_content": "<visual>Dog,(0 10)</visual> <audio>Speech,(0 4)(6 10)</audio> <audio>Dog,(2 3)</audio>"},
    "avcap": {"video_path": "vid1.mp4", "audio_path": "vid1.mp3", "video_id": "vid1",
              "label_content": "A man talks. <answer>a man talks while a dog barks</answer>"},
    "ms3": {"image_path": "AVS/v1m/clipA/frames/3.jpg", "audio_path": "AVS/v1m/clipA/audio.wav", "vid": "clipA",
            "uid": "clipA", "a_obj": "dog", "frame_idx": 3, "label_content": BOX_TEXT},
    "s4": {"image_path": "AVS/v1s/_4R3qHn1n50_0_5000/frames/0.jpg", "audio_path": "AVS/v1s/_4R3qHn1n50_0_5000/audio.wav",
           "vid": "_4R3qHn1n50", "uid": "_4R3qHn1n50_0_5000", "a_obj": "dog", "label_content": BOX_TEXT},
    "arig": {"image_path": "AVS/v1s/_4R3qHn1n50_0_5000/frames/2.jpg",
             "audio_path": "AVS/v1s/_4R3qHn1n50_0_5000/audio.wav", "a_obj": "dog",
             "label_content": "The sounding object is dog. Its coordinates are <obj>(10,20)(100,200)</obj>."},
    "ref_avs": {"image_path": "REFAVS/media/clipR/frames/7.jpg", "audio_path": "REFAVS/media/clipR/audio.wav",
                "vid": "clipR", "fid": 11, "uid": "clipR_11_x", "idx": 7, "description": "The Dog Barking",
                "output": "<answer>true</answer> The object is dog. Its bounding box is [52,30,180,210] and three "
                          "points on it are [110,96], [120,140], [98,170]."},
}

TEST: dict[str, dict[str, Any]] = {
    "a2v": {"video1_path": "xYz_10.mp4", "video2_path": "aBc_30.mp4", "audio_path": "xYz_10.mp3", "correct_video": 2},
    "v2a": {"video_path": "xYz_10.mp4", "audio1_path": "aBc_30.mp3", "audio2_path": "xYz_10.mp3", "correct_audio": 1},
    "ks": {"video_path": "abc123_000010.mp4", "audio_path": "abc123_000010.wav", "action": "playing drums"},
    "ucf": {"video_path": "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
            "audio_path": "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.wav", "label": "ApplyEyeMakeup"},
    "meld": {"video_path": "test/dia3_utt1.mp4", "audio_path": "test/dia3_utt1.mp3", "Emotion": "joy"},
    "cremad": {"video_path": "1001_DFA_ANG_XX.mp4", "audio_path": "1001_DFA_ANG_XX.wav", "emotion": "anger"},
    "mafw": {"video_path": "00025.mp4", "audio_path": "00025.wav", "emotion": "sad"},
    "dfew": {"video_path": "1.mp4", "audio_path": "1.wav", "emotion": "neutral"},
    "avqa": {"video_path": "00000823.mp4", "audio_path": "00000823.mp3", "video_id": "00000823", "question_id": 4521,
             "type": "[\"Audio-Visual\", \"Counting\"]", "question": "How many instruments are sounding in the video?",
             "answer": "two"},
    "avqa_thu": {"id": 17, "video_name": "-HG3Omg_89c_000030", "video_id": 341, "question_relation": "Both",
                 "question_type": "Which", "multi_choice": ["motorboat", "car", "train", "plane"],
                 "question_text": "What vehicle is making the sound?", "answer": "motorboat",
                 "video_path": "-HG3Omg_89c_000030.mp4", "audio_path": "-HG3Omg_89c_000030.mp3"},
    "ave": {"video_path": "-0A9suni5YA.mp4", "audio_path": "-0A9suni5YA.mp3", "event": "Church bell",
            "vid": "-0A9suni5YA", "start_time": 2, "end_time": 9},
    "avvp": {"video_path": "00BDwKBD5i8.mp4", "audio_path": "00BDwKBD5i8.mp3", "filename": "00BDwKBD5i8_30_40",
             "vid": "00BDwKBD5i8", "event": "<visual>Dog,(0 10)</visual> <audio>Speech,(0 4)(6 10)</audio>"},
    "ms3": {"visual_path": "AVS/v1m/clipA/frames/3.jpg", "audio_path": "AVS/v1m/clipA/audio.wav", "vid": "clipA",
            "uid": "clipA", "a_obj": "dog", "frame_idx": 3},
    "s4": {"visual_path": "AVS/v1s/_4R3qHn1n50_0_5000/frames/4.jpg",
           "audio_path": "AVS/v1s/_4R3qHn1n50_0_5000/audio.wav", "vid": "_4R3qHn1n50", "uid": "_4R3qHn1n50_0_5000",
           "a_obj": "dog", "frame_idx": 4},
    "arig": {"visual_path": "AVS/v1s/_4R3qHn1n50_0_5000/frames/2.jpg",
             "audio_path": "AVS/v1s/_4R3qHn1n50_0_5000/audio.wav", "top_left": [10, 20], "bottom_right": [100, 200],
             "a_obj": "dog", "frame_idx": 2},
    "ref_avs": {"visual_path": "REFAVS/media/-8mcyL3kWNQ_8000_18000/frames/7.jpg",
                "audio_path": "REFAVS/media/-8mcyL3kWNQ_8000_18000/audio.wav", "object": "making the loudest sound",
                "split": "test_s", "vid": "-8mcyL3kWNQ", "uid": "-8mcyL3kWNQ_8000_18000_1_x", "fid": 11,
                "frame_idx": 7},
}

RELEASE_TASKS = ("a2v", "v2a", "ks", "ucf", "meld", "mer24", "cremad", "mafw", "dfew", "avqa", "avqa_thu", "ave",
                 "unav", "avvp", "ms3", "s4", "ref_avs", "arig", "avcap")
"""The 19 task folders of the release."""
