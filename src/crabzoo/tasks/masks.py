"""Masks for the segmentation tasks: ground-truth paths and reading, and parsed prompts turned into masks.

A Crab+ prediction (category + box + three points in the 224 x 224 frame) becomes a mask through a pluggable
prompt stage, a :class:`~crabzoo.heads.sam2_prompt.MaskPrompter` (``BoxFillPrompter`` by default, ``Sam2Prompter``
when SAM2 is installed). A Crab v1 prediction that already is a mask (``{"mask": array}``) is used as is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from crabzoo.errors import CrabzooError

SIZE = (224, 224)


def avsbench_mask_path(image_path: str | Path) -> Path:
    """s4 / ms3 ground truth: ``/frames/`` -> ``/labels_rgb/`` and ``.jpg`` -> ``.png``."""
    text = str(image_path).replace("/frames/", "/labels_rgb/")
    return Path(text[: -len(Path(text).suffix)] + ".png" if Path(text).suffix else text + ".png")


def refavs_mask_path(image_path: str | Path, fid: Any) -> Path:
    """ref_avs ground truth: ``REFAVS/media/<clip>/frames/<k>.jpg`` ->
    ``REFAVS/gt_mask/<clip>/fid_<fid>/0000<k>.png``."""
    image = Path(image_path)
    clip_dir = image.parent.parent
    return clip_dir.parent.parent / "gt_mask" / clip_dir.name / f"fid_{fid}" / f"0000{image.stem}.png"


def resize_mask(mask: np.ndarray, size: tuple[int, int] = SIZE) -> np.ndarray:
    """Boolean ``size`` mask (nearest-neighbour resize; any non-zero value is foreground)."""
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask.any(axis=-1) if mask.shape[-1] in (3, 4) else mask[0]
    mask = mask != 0
    if mask.shape != tuple(size):
        from PIL import Image

        img = Image.fromarray(mask.astype(np.uint8) * 255).resize((size[1], size[0]), Image.NEAREST)
        mask = np.asarray(img) != 0
    return mask


def read_mask(path: str | Path, size: tuple[int, int] = SIZE) -> np.ndarray:
    """Read a ground-truth PNG as a boolean ``size`` mask (grey-scale, any non-zero pixel = foreground)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            data = np.asarray(img.convert("L"))
    except (OSError, ValueError) as err:
        raise CrabzooError(f"cannot read ground-truth mask {path}: {err}; check the task folder layout") from err
    return resize_mask(data, size)


def read_image(path: str | Path) -> np.ndarray:
    """An RGB uint8 image (for prompters that look at the frame)."""
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def default_prompter() -> Any:
    """The box-filling prompt stage (no model needed)."""
    from crabzoo.heads.sam2_prompt import BoxFillPrompter

    return BoxFillPrompter()


def prediction_mask(
    pred: dict[str, Any], prompter: Any, image_path: str | None, size: tuple[int, int] = SIZE
) -> np.ndarray:
    """The mask of a parsed prediction: a given ``mask`` as is, ``exists=False`` empty, else the prompter's."""
    if "mask" in pred and pred["mask"] is not None:
        return resize_mask(pred["mask"], size)
    if pred.get("exists") is False:
        return np.zeros(size, dtype=bool)
    from crabzoo.heads.sam2_prompt import BoxFillPrompter

    image = None
    if image_path is not None and not isinstance(prompter, BoxFillPrompter):
        image = read_image(image_path)
    box = tuple(int(v) for v in pred["box"]) if pred.get("box") is not None else None
    points = [(int(x), int(y)) for x, y in pred.get("points") or []]
    return np.asarray(prompter(image, box, points, size=size), dtype=bool)
