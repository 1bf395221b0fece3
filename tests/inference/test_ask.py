"""``crabzoo ask`` through the real CLI on a tiny checkpoint fit in this module."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from ask_helpers import MAX_NEW_TOKENS, PARADIGMS, RECIPE, Clip, fit_tiny, ks_clip, model_args, run_main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ckpt(avsynth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fit_tiny(avsynth_root, tmp_path_factory.mktemp("ask-run") / "run")


@pytest.fixture(scope="module")
def model(ckpt: Path):
    from crabzoo.inference.loading import load_trained

    return load_trained(str(ckpt))


@pytest.fixture(scope="module")
def clip(avsynth_root: Path) -> Clip:
    return ks_clip(avsynth_root, 0)


def own_generation(model, root: Path, task: str, index: int = 0) -> str:
    """What the model's ``generate`` gives for a test sample of the data set, built by its training processor."""
    from crabzoo.data.avuie import read_split

    sample = read_split(root, task, "test").samples[index]
    processor = model.make_processor()
    (text,) = model.generate(processor.collate([processor(sample)]), MAX_NEW_TOKENS)
    return text


def test_task_prints_parsed_json_with_the_models_own_answer(ckpt, model, clip, avsynth_root):
    from crabzoo.data.avuie import read_split
    from crabzoo.tasks import get_task
    from crabzoo.tasks.base import ParseFailure

    sample = read_split(avsynth_root, "ks", "test").samples[0]
    assert [Path(p) for p in sample.video] == [clip.video] and [Path(p) for p in sample.audio] == [clip.audio]
    expected = own_generation(model, avsynth_root, "ks")
    assert expected.strip()  # an untrained model still says something (a varied token string)

    result = run_main(["ask", *model_args(ckpt, clip), "--task", "ks"])
    assert result.code == 0, result.err
    payload = json.loads(result.out)
    assert payload["task"] == "ks"
    assert payload["generation"] == expected
    parsed = get_task("ks").parse(expected)
    if isinstance(parsed, ParseFailure):
        assert payload["parse_ok"] is False and payload["answer"] is None
        assert payload["parse_error"] == parsed.reason
    else:
        assert payload["parse_ok"] is True and payload["answer"] == parsed

    compact = run_main(["ask", *model_args(ckpt, clip), "--task", "ks", "--json"])
    assert compact.code == 0 and compact.out.count("\n") == 1
    assert json.loads(compact.out) == payload


def test_prompt_prints_the_generation(ckpt, model, clip):
    from crabzoo.inference.session import Answerer

    question = "What is making the sound?"
    answerer = Answerer(model)
    (expected,) = answerer.generate([answerer.build(question, video=str(clip.video), audio=str(clip.audio))],
                                    MAX_NEW_TOKENS)
    # the question reaches the model: another question gets another answer
    (other,) = answerer.generate([answerer.build("Describe the video.", video=str(clip.video), audio=str(clip.audio))],
                                 MAX_NEW_TOKENS)
    assert other != expected

    result = run_main(["ask", *model_args(ckpt, clip), "--prompt", question])
    assert result.code == 0, result.err
    assert result.out == expected + "\n"
    result = run_main(["ask", *model_args(ckpt, clip), "--prompt", question, "--json"])
    assert json.loads(result.out) == {"prompt": question, "generation": expected}


def test_segmentation_of_a_video_writes_one_png_per_frame(ckpt, clip, tmp_path):
    import av
    from PIL import Image

    from crabzoo.tasks import get_task
    from crabzoo.tasks.base import ParseFailure

    video = tmp_path / "clip.mp4"
    shutil.copy(clip.video, video)
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        frame_size = (stream.width, stream.height)
    result = run_main(["ask", *model_args(ckpt, Clip(video, clip.audio)), "--task", "s4"])
    assert result.code == 0, result.err
    payload = json.loads(result.out)
    out_dir = tmp_path / "clip_masks"  # the default: <input>_masks next to the input
    assert payload["masks_dir"] == str(out_dir)
    assert f"5 mask(s) written to {out_dir}" in result.err
    pngs = sorted(out_dir.glob("*.png"))
    assert [str(p) for p in pngs] == payload["masks"] and len(pngs) == 5  # s4: five frames, one per audio second
    assert len(payload["generation"]) == 5 and len(payload["mask_source"]) == 5
    for path, text, source in zip(pngs, payload["generation"], payload["mask_source"]):
        with Image.open(path) as img:
            assert img.size == frame_size
            mask = np.asarray(img.convert("L")) > 0
        parsed = get_task("s4").parse(text)
        if isinstance(parsed, ParseFailure):  # no box: an empty mask
            assert source == "none" and not mask.any()
        else:
            assert source == "box" and mask.any()


BOX_ANSWER = {"category": "siren", "box": [56, 0, 167, 111], "points": [[100, 50], [110, 60], [120, 70]]}
"""A box in 224 x 224 frame pixels: the middle half of the columns, the top half of the rows."""


@pytest.fixture
def boxed(avsynth_root: Path, tmp_path: Path, monkeypatch) -> list[str]:
    """A 112 x 56 image and its s4 audio (the ``crabzoo ask`` flags); the model answers ``BOX_ANSWER``."""
    from PIL import Image

    from crabzoo.paradigms.base import AVLLM
    from crabzoo.tasks import get_task

    frames = avsynth_root / "AVUIE_2" / "s4" / "AVS" / "v1s" / "s4_00001"
    image = tmp_path / "wide.png"
    with Image.open(frames / "frames" / "0.jpg") as img:
        img.convert("RGB").resize((112, 56)).save(image)
    text = get_task("s4").format_target(BOX_ANSWER)

    def answer(self, batch, max_new_tokens=None):
        assert batch["tasks"] == ["s4"]
        return [text] * len(batch["prompt_ids"])

    monkeypatch.setattr(AVLLM, "generate", answer)
    return ["--image", str(image), "--audio", str(frames / "audio.wav"), "--task", "s4"]


def test_segmentation_mask_is_the_filled_box_at_the_image_size(ckpt, boxed, tmp_path):
    from PIL import Image

    truth = BOX_ANSWER
    out_dir = tmp_path / "masks"
    result = run_main(["ask", "--ckpt_path", str(ckpt), *boxed, "--out", str(out_dir), "--json"])
    assert result.code == 0, result.err
    payload = json.loads(result.out)
    assert payload["parse_ok"] is True and payload["answer"]["box"] == truth["box"]
    assert payload["mask_source"] == "box" and payload["masks"] == [str(out_dir / "frame_00.png")]
    with Image.open(out_dir / "frame_00.png") as img:
        assert img.size == (112, 56)
        mask = np.asarray(img.convert("L")) > 0
    expected = np.zeros((56, 112), dtype=bool)
    expected[:28, 28:84] = True
    assert np.array_equal(mask, expected)


def one_error_line(result, *parts: str) -> str:
    assert result.code == 2 and result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crabzoo ask: error: "), result.err
    for part in parts:
        assert part in lines[0]
    return lines[0]


def test_unreadable_video_is_one_line(ckpt, clip, tmp_path):
    garbage = tmp_path / "x.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    result = run_main(["ask", *model_args(ckpt, Clip(garbage, clip.audio)), "--task", "ks"])
    one_error_line(result, str(garbage), "cannot decode video")


def test_missing_file_is_one_line(ckpt, clip, tmp_path):
    missing = tmp_path / "nowhere.wav"
    result = run_main(["ask", *model_args(ckpt, Clip(clip.video, missing)), "--task", "ks"])
    one_error_line(result, f"{missing}: file not found")


def test_wrong_task_name_is_one_line(ckpt, clip):
    result = run_main(["ask", *model_args(ckpt, clip), "--task", "kinetics"])
    one_error_line(result, "unknown task 'kinetics'", "ks")


def test_checkpoint_of_another_paradigm_is_one_line(ckpt, clip, avsynth_root, tmp_path):
    corpus = tmp_path / "corpus.yaml"  # the same tokenizer as the fit, so only the paradigm differs
    corpus.write_text(json.dumps({"model": {"init_args": {"backbone": {"init_args": {
        "tokenizer_corpus": str(avsynth_root / "AVUIE_2")}}}}}))
    configs = ["--config", str(PARADIGMS / "stc.yaml"), "--config", str(RECIPE), "--config", str(corpus)]
    result = run_main(["ask", *model_args(ckpt, clip), *configs, "--task", "ks"])
    one_error_line(result, str(ckpt), "another paradigm", "visual_connector")


def test_mask_folder_that_is_a_file_is_one_line(ckpt, clip, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("")
    result = run_main(["ask", *model_args(ckpt, clip), "--task", "s4", "--out", str(taken)])
    one_error_line(result, f"--out {taken} is a file")


def test_sam2_turns_the_box_and_points_into_the_mask(ckpt, boxed, tmp_path, monkeypatch):
    from PIL import Image

    import crabzoo.heads.sam2_prompt as sam2_prompt

    calls = []

    class FakeSam2:  # stands in for SAM2: records its prompts, answers a mask of the left quarter
        def __init__(self, config, checkpoint, device=None):
            calls.append(("init", config, str(checkpoint), device))

        def __call__(self, image, box, points, size=(224, 224)):
            calls.append(("call", image.shape, list(box), [list(p) for p in points]))
            mask = np.zeros(size, dtype=bool)
            mask[:, :56] = True
            return mask

    monkeypatch.setattr(sam2_prompt, "Sam2Prompter", FakeSam2)
    out_dir = tmp_path / "masks"
    argv = ["ask", "--ckpt_path", str(ckpt), *boxed, "--out", str(out_dir), "--sam2", "sam2.pt", "--json"]
    result = run_main(argv)
    assert result.code == 0, result.err
    assert calls == [
        ("init", "configs/sam2.1/sam2.1_hiera_l.yaml", "sam2.pt", "cpu"),
        ("call", (56, 112, 3), BOX_ANSWER["box"], BOX_ANSWER["points"]),  # the frame as given, the answer's prompts
    ]
    assert json.loads(result.out)["mask_source"] == "sam2"
    with Image.open(out_dir / "frame_00.png") as img:
        mask = np.asarray(img.convert("L")) > 0
    assert mask.shape == (56, 112) and mask[:, :28].all() and not mask[:, 28:].any()


def test_missing_sam2_checkpoint_is_one_line(ckpt, clip, tmp_path):
    missing = tmp_path / "sam2.1_hiera_large.pt"
    result = run_main(["ask", *model_args(ckpt, clip), "--task", "s4", "--sam2", str(missing)])
    one_error_line(result, f"SAM2 checkpoint not found: {missing}")
    result = run_main(["ask", *model_args(ckpt, clip), "--task", "ks", "--sam2", str(missing)])
    one_error_line(result, "--sam2 turns boxes into masks")
