"""Prompt stage of Crab+ segmentation: a box and points in text form become a mask.

Crab+ answers segmentation tasks in text: a category, a box ``[x1,y1,x2,y2]`` and three points ``[x,y]`` in the
pixel space of the 224 x 224 frame. A frozen promptable segmenter (SAM2.1-L in the paper) turns box + points into
one mask. :class:`MaskPrompter` is that stage's interface; :class:`BoxFillPrompter` needs no model and fills the
box (a baseline and the offline default); :class:`Sam2Prompter` runs SAM2 when the optional ``sam2`` package
and a checkpoint are available.

Coordinates are integer pixel indices (``0 <= x < width``), boxes are inclusive of both corners.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import nullcontext
from pathlib import Path
from typing import Sequence

import numpy as np

from crabzoo.errors import CrabzooError

Box = tuple[int, int, int, int]
Point = tuple[int, int]

SAM2_INSTALL_HINT = "pip install crabzoo[sam2]"


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    if len(size) != 2 or int(size[0]) <= 0 or int(size[1]) <= 0:
        raise CrabzooError(f"mask size must be (height, width) with positive sides, got {tuple(size)}")
    return int(size[0]), int(size[1])


def points_box(points: Sequence[Point], min_points: int = 3) -> Box | None:
    """Bounding box ``(x1, y1, x2, y2)`` of at least ``min_points`` points, else ``None``."""
    if len(points) < min_points:
        return None
    xs, ys = [int(p[0]) for p in points], [int(p[1]) for p in points]
    return min(xs), min(ys), max(xs), max(ys)


class MaskPrompter(ABC):
    """Turns a box and/or points (pixel coordinates in a ``size`` frame) into a boolean mask of that size."""

    @abstractmethod
    def __call__(
        self,
        image: np.ndarray | None,
        box: Box | None,
        points: Sequence[Point],
        size: tuple[int, int] = (224, 224),
    ) -> np.ndarray:
        """Predict one mask.

        Args:
            image: ``(H, W, 3)`` uint8 RGB frame, or ``None`` when the prompter does not need it. It is resized
                to ``size`` so that it shares the prompts' pixel space.
            box: ``(x1, y1, x2, y2)`` inclusive pixel box, or ``None``.
            points: Foreground points ``(x, y)``; Crab+ gives three.
            size: ``(height, width)`` of the pixel space of the prompts and of the returned mask.

        Returns:
            ``(height, width)`` bool mask.
        """


class BoxFillPrompter(MaskPrompter):
    """Fills the box; without a box, the bounding box of three or more points; with neither, an empty mask.

    Needs no image and no model: the reference point any learned prompter must beat, and what runs offline.
    """

    def __call__(
        self,
        image: np.ndarray | None,
        box: Box | None,
        points: Sequence[Point],
        size: tuple[int, int] = (224, 224),
    ) -> np.ndarray:
        h, w = _check_size(size)
        mask = np.zeros((h, w), dtype=bool)
        region = box if box is not None else points_box(points)
        if region is None:
            return mask
        x1, y1, x2, y2 = (int(v) for v in region)
        x1, x2 = max(0, min(x1, x2)), min(w - 1, max(x1, x2))
        y1, y2 = max(0, min(y1, y2)), min(h - 1, max(y1, y2))
        if x1 <= x2 and y1 <= y2:
            mask[y1 : y2 + 1, x1 : x2 + 1] = True
        return mask


class Sam2Prompter(MaskPrompter):
    """A frozen SAM2 image predictor prompted with the box and the points (single-mask output).

    Follows the Crab+ evaluation: the frame is resized to ``size`` (224 x 224) so the text coordinates are
    its pixels, every point is a foreground point (label 1), the box and the points go into one prompt, and
    ``multimask_output=False``. On CUDA it runs under bfloat16 autocast.

    Args:
        config: SAM2 Hydra config name inside the ``sam2`` package, e.g.
            ``configs/sam2.1/sam2.1_hiera_l.yaml`` (SAM2.1-L, as in Crab+).
        checkpoint: Path of the matching ``.pt`` checkpoint, e.g. ``checkpoints/sam2.1_hiera_large.pt``.
        device: ``"cuda"``, ``"cpu"``...; ``None`` picks CUDA when available.

    Raises:
        CrabzooError: The checkpoint file is missing, or the ``sam2`` package is not installed.
    """

    def __init__(
        self,
        config: str = "configs/sam2.1/sam2.1_hiera_l.yaml",
        checkpoint: str | Path = "checkpoints/sam2.1_hiera_large.pt",
        device: str | None = None,
    ) -> None:
        self.config, self.checkpoint = config, Path(checkpoint)
        if not self.checkpoint.is_file():
            raise CrabzooError(
                f"SAM2 checkpoint not found: {self.checkpoint} (download sam2.1_hiera_large.pt from the SAM2 "
                "release and pass its path as `checkpoint`)"
            )
        try:
            from sam2.build_sam import build_sam2
            from sam2.sam2_image_predictor import SAM2ImagePredictor
        except ImportError as e:
            raise CrabzooError(f"Sam2Prompter needs the sam2 package ({e}): {SAM2_INSTALL_HINT}") from e
        import torch

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.predictor = SAM2ImagePredictor(build_sam2(config, str(self.checkpoint), device=self.device))

    def __call__(
        self,
        image: np.ndarray | None,
        box: Box | None,
        points: Sequence[Point],
        size: tuple[int, int] = (224, 224),
    ) -> np.ndarray:
        import torch
        from PIL import Image

        h, w = _check_size(size)
        if image is None:
            raise CrabzooError("Sam2Prompter needs the frame: pass `image` as an (H, W, 3) uint8 array")
        if box is None and not points:
            return np.zeros((h, w), dtype=bool)
        frame = np.asarray(Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB").resize((w, h), Image.LANCZOS))
        coords = np.asarray(points, dtype=np.float32).reshape(-1, 2) if points else None
        labels = np.ones(len(points), dtype=np.int64) if points else None
        box_arr = np.asarray(box, dtype=np.float32) if box is not None else None
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.startswith("cuda") else nullcontext()
        with torch.inference_mode(), autocast:
            self.predictor.set_image(frame)
            masks, _, _ = self.predictor.predict(
                point_coords=coords, point_labels=labels, box=box_arr, multimask_output=False
            )
        return np.asarray(masks[0]) > 0
