"""``crabzoo ask``: ask a trained model about your own video / audio / image files.

    crabzoo ask --ckpt_path runs/quickstart/version_0/checkpoints/last.ckpt \\
        --task ks --video clip.mp4 --audio clip.wav
    crabzoo ask --ckpt_path CKPT --video clip.mp4 --audio clip.wav --prompt "What do you hear?"

With ``--task`` the model gets that task's exact prompt and media policy, and the answer is parsed by the task
and printed as JSON (``task``, ``generation``, ``answer``, ``parse_ok``). With ``--prompt`` the generation is
printed as it is. For the segmentation tasks (``s4``, ``ms3``, ``ref_avs``) the masks are written as PNGs, one
per frame, into ``--out``: a video is cut into the task's frames (one per audio segment: 5 for s4 / ms3, 10 for
ref_avs), each asked about with its own audio segment. A mask comes from the mask decoder of a
:class:`~crabzoo.paradigms.modular.SegmentationAVLLM` when the generation holds the mask tokens, otherwise
from the box and points of the parsed answer: SAM2 prompted with them when ``--sam2 CKPT`` is given
(:class:`~crabzoo.heads.sam2_prompt.Sam2Prompter`, needs the ``sam2`` package), the box filled otherwise
(:class:`~crabzoo.heads.sam2_prompt.BoxFillPrompter`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from crabzoo.errors import CrabzooError

SEGMENTATION_TASKS = ("s4", "ms3", "ref_avs")
"""Tasks whose answers are masks."""


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ckpt_path``, ``--config``, ``--device`` and the media flags shared by ``ask`` and ``chat``."""
    parser.add_argument("--ckpt_path", help="checkpoint written by `crabzoo fit` (its model configuration is inside)")
    parser.add_argument(
        "--config", action="append", default=[],
        help="paradigm / recipe YAML whose model: section builds the model instead (repeatable, merged in order)",
    )
    parser.add_argument("--device", default="cpu", help="torch device to run on (cpu, cuda, cuda:1, ...)")
    parser.add_argument("--video", action="append", default=[], help="video file (twice for a2v)")
    parser.add_argument("--audio", action="append", default=[], help="audio file (twice for v2a)")
    parser.add_argument("--image", help="image file (instead of a video)")
    parser.add_argument("--max_new_tokens", type=int, default=None, help="generation length (default: the model's)")


def check_inputs(args: argparse.Namespace) -> None:
    """Fail fast, before the model loads: no model source, or media files that do not exist."""
    if args.ckpt_path is None and not args.config:
        raise CrabzooError("give the checkpoint to run (--ckpt_path CKPT) or the recipe that builds it (--config YAML)")
    if args.image is not None and args.video:
        raise CrabzooError("give a video or an image, not both")
    for path in [*args.video, *args.audio, *([args.image] if args.image else [])]:
        if not Path(path).is_file():
            raise CrabzooError(f"{path}: file not found")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise CrabzooError(f"--max_new_tokens must be at least 1, got {args.max_new_tokens}")


def load(args: argparse.Namespace, command: str) -> Any:
    """The model of ``--ckpt_path`` / ``--config``; a note on stderr when frozen weights were not in the file."""
    from crabzoo.inference.loading import load_trained

    model = load_trained(args.ckpt_path, config=args.config or None, map_location=args.device)
    note = model.load_report.summary()
    if note:
        print(f"crabzoo {command}: note: {note}", file=sys.stderr)
    return model


def parsed_answer(task: str, text: str) -> dict[str, Any]:
    """``{"task", "generation", "answer", "parse_ok"}`` (plus ``parse_error``) for a generation of a task."""
    from crabzoo.tasks import get_task
    from crabzoo.tasks.base import ParseFailure

    parsed = get_task(task).parse(text)
    if isinstance(parsed, ParseFailure):
        return {"task": task, "generation": text, "answer": None, "parse_ok": False, "parse_error": parsed.reason}
    return {"task": task, "generation": text, "answer": parsed, "parse_ok": True}


def to_json(payload: Any, compact: bool) -> str:
    """JSON text (numpy values as lists / numbers)."""

    def default(value: Any) -> Any:
        if hasattr(value, "tolist"):
            return value.tolist()
        return str(value)

    return json.dumps(payload, default=default, ensure_ascii=False, indent=None if compact else 2)


def write_png(mask: Any, path: Path, size: tuple[int, int] | None = None) -> None:
    """A bool mask as a black / white PNG (nearest-resized to ``size = (H, W)``), written atomically."""
    import numpy as np
    from PIL import Image

    img = Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255)
    if size is not None and img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-", suffix=".png")
    os.close(fd)
    try:
        img.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def ask_segmentation(
    answerer: Any, args: argparse.Namespace, out_dir: Path, prompter: Any = None
) -> dict[str, Any]:
    """Ask a segmentation task about an image, or about every task frame of a video; write one mask per frame.

    Args:
        answerer: The :class:`~crabzoo.inference.session.Answerer` of the model.
        args: The parsed ``crabzoo ask`` arguments.
        out_dir: Folder of the PNGs (``frame_00.png``, ...).
        prompter: A :class:`~crabzoo.heads.sam2_prompt.MaskPrompter` that turns the answer's box and points into a
            mask (given the frame); ``None`` fills the box.
    """
    import numpy as np
    from PIL import Image

    from crabzoo.data.media import MediaError, MediaLoader
    from crabzoo.heads.sam2_prompt import BoxFillPrompter
    from crabzoo.tasks import get_task

    task = get_task(args.task)
    model = answerer.model
    with tempfile.TemporaryDirectory(prefix="crabzoo-ask-") as tmp:
        if args.video:
            if len(args.video) != 1:
                raise CrabzooError(f"task {task.name} reads one video (cut into frames) or one --image")
            parts = int(task.audio_policy.parts)
            try:
                frames, _ = MediaLoader().read_video_frames(args.video[0], num_frames=parts)
            except MediaError as err:
                raise CrabzooError(f"{err.path}: {err.reason}") from None
            images = []
            for i, frame in enumerate(frames):
                images.append(Path(tmp) / f"frame_{i:02d}.png")
                Image.fromarray(frame).save(images[-1])
        else:
            images = [Path(args.image)] if args.image else []
        items, sizes, pixels = [], [], []
        for i, image in enumerate(images or [None]):
            sample, task_obj = answerer.sample(args.prompt or "", image=str(image) if image else None,
                                               audio=args.audio, task=task.name)
            sample.meta["audio_idx"] = i if args.video else 0
            items.append(answerer.item(sample, task_obj))
            with Image.open(image) as img:
                sizes.append((img.height, img.width))
                pixels.append(np.asarray(img.convert("RGB")) if prompter is not None else None)
        batch = answerer.collate(items)
        import torch

        with torch.inference_mode():
            if hasattr(model, "decode_masks"):
                new = model.generate_ids(batch, args.max_new_tokens)
                masks, found = model.decode_masks(batch, new)
                texts = answerer.tokenizer.batch_decode(new, skip_special_tokens=True)
            else:
                texts = model.generate(batch, args.max_new_tokens)
                masks, found = None, [False] * len(texts)
    results, paths, sources = [], [], []
    for i, text in enumerate(texts):
        result = parsed_answer(task.name, text)
        answer = result["answer"] if result["parse_ok"] else {}
        if found[i]:
            mask, source = masks[i].cpu().numpy(), "mask_decoder"
        elif answer and answer.get("exists", True) and (answer.get("box") or answer.get("points")):
            if prompter is not None:
                mask, source = prompter(pixels[i], answer.get("box"), answer.get("points") or []), "sam2"
            else:
                mask, source = BoxFillPrompter()(None, answer.get("box"), answer.get("points") or []), "box"
        else:
            mask, source = np.zeros((224, 224), dtype=bool), "none"
        path = out_dir / f"frame_{i:02d}.png"
        try:
            write_png(mask, path, sizes[i])
        except OSError as err:
            raise CrabzooError(f"{path}: cannot write the mask ({err.strerror or err})") from None
        results.append(result)
        paths.append(str(path))
        sources.append(source)
    if len(results) == 1:
        return {**results[0], "masks": paths, "mask_source": sources[0], "masks_dir": str(out_dir)}
    return {
        "task": task.name,
        "generation": [r["generation"] for r in results],
        "answer": [r["answer"] for r in results],
        "parse_ok": [r["parse_ok"] for r in results],
        "masks": paths,
        "mask_source": sources,
        "masks_dir": str(out_dir),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crabzoo ask",
        description="Ask a trained model about your own video / audio / image files.",
        epilog="Either --task NAME (the task's exact prompt; the parsed answer printed as JSON) or --prompt TEXT "
        "(the generation printed as it is). Tasks whose prompt has a slot (avqa: the question, ref_avs: the "
        "object) take both.",
    )
    add_model_arguments(parser)
    parser.add_argument("--task", help="ask with this task's prompt and parse the answer (e.g. ks, ave, s4)")
    parser.add_argument("--prompt", help="your own question")
    parser.add_argument("--out", help="folder of the segmentation masks (default: <input>_masks next to the input)")
    parser.add_argument(
        "--sam2", metavar="CKPT",
        help="SAM2 checkpoint (.pt) that turns a segmentation answer's box and points into a mask (needs the sam2 "
        "package); without it the box is filled",
    )
    parser.add_argument("--sam2_config", default="configs/sam2.1/sam2.1_hiera_l.yaml",
                        help="SAM2 config name inside the sam2 package, matching --sam2")
    parser.add_argument("--json", action="store_true", help="one line of JSON (also with --prompt)")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``crabzoo ask``."""
    args = build_parser().parse_args(argv)
    if args.task is None and args.prompt is None:
        raise CrabzooError("give --task NAME (e.g. --task ks) or --prompt \"your question\"")
    if args.task is not None:
        from crabzoo.tasks import get_task

        get_task(args.task)  # an unknown name fails here, listing the known ones
    check_inputs(args)
    out_dir = None
    if args.task in SEGMENTATION_TASKS:
        source = Path((args.video or [args.image] or [None])[0] or ".")
        out_dir = Path(args.out) if args.out else source.parent / f"{source.stem}_masks"
        if out_dir.exists() and not out_dir.is_dir():
            raise CrabzooError(f"--out {out_dir} is a file; give a folder for the masks")
    prompter = None
    if args.sam2 is not None:
        if out_dir is None:
            raise CrabzooError(f"--sam2 turns boxes into masks: use it with {', '.join(SEGMENTATION_TASKS)}")
        from crabzoo.heads.sam2_prompt import Sam2Prompter

        prompter = Sam2Prompter(args.sam2_config, args.sam2, device=args.device)
    from crabzoo.inference.session import Answerer

    model = load(args, "ask")
    answerer = Answerer(model)
    if out_dir is not None:
        payload = ask_segmentation(answerer, args, out_dir, prompter)
        print(to_json(payload, args.json), flush=True)
        if not args.json:
            print(f"crabzoo ask: {len(payload['masks'])} mask(s) written to {out_dir}", file=sys.stderr)
        return
    sample = answerer.build(
        args.prompt or "", video=args.video or None, audio=args.audio or None, image=args.image, task=args.task
    )
    (text,) = answerer.generate([sample], args.max_new_tokens)
    if args.task is not None:
        print(to_json(parsed_answer(args.task, text), args.json), flush=True)
    elif args.json:
        print(to_json({"prompt": args.prompt, "generation": text}, True), flush=True)
    else:
        print(text, flush=True)


if __name__ == "__main__":
    main()
