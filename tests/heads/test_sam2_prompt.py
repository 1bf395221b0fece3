"""The segmentation prompt stage: box fill numbers and the SAM2 error paths."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from crabzoo.errors import CrabzooError
from crabzoo.heads import BoxFillPrompter, MaskPrompter, Sam2Prompter
from crabzoo.heads.sam2_prompt import points_box


def test_box_fill_is_inclusive_and_exact() -> None:
    mask = BoxFillPrompter()(None, (10, 20, 29, 59), [(15, 25), (20, 30), (25, 50)])
    assert mask.shape == (224, 224) and mask.dtype == bool
    assert mask.sum() == 20 * 40
    assert mask[20, 10] and mask[59, 29] and not mask[19, 10] and not mask[20, 30] and not mask[60, 29]


def test_box_fill_ignores_points_when_box_given() -> None:
    mask = BoxFillPrompter()(None, (0, 0, 1, 1), [(100, 100), (200, 200), (150, 120)])
    assert mask.sum() == 4


def test_box_fill_uses_points_bounding_box_without_box() -> None:
    mask = BoxFillPrompter()(None, None, [(5, 7), (9, 3), (6, 11)])
    assert points_box([(5, 7), (9, 3), (6, 11)]) == (5, 3, 9, 11)
    assert mask.sum() == 5 * 9
    assert mask[3:12, 5:10].all()


def test_box_fill_empty_without_prompts_and_with_too_few_points() -> None:
    assert BoxFillPrompter()(None, None, []).sum() == 0
    assert BoxFillPrompter()(None, None, [(1, 1), (5, 5)]).sum() == 0


def test_box_fill_clips_and_orders_and_respects_size() -> None:
    mask = BoxFillPrompter()(np.zeros((480, 640, 3), np.uint8), (50, 8, -5, 2), [], size=(10, 60))
    assert mask.shape == (10, 60)
    assert mask.sum() == 51 * 7  # x 0..50, y 2..8


def test_box_fill_bad_size() -> None:
    with pytest.raises(CrabzooError, match="height, width"):
        BoxFillPrompter()(None, None, [], size=(0, 224))


def test_prompter_contract() -> None:
    assert issubclass(BoxFillPrompter, MaskPrompter) and issubclass(Sam2Prompter, MaskPrompter)


def test_sam2_missing_checkpoint_names_the_path(tmp_path) -> None:
    missing = tmp_path / "sam2.1_hiera_large.pt"
    with pytest.raises(CrabzooError, match="sam2.1_hiera_large.pt"):
        Sam2Prompter(checkpoint=missing)


@pytest.mark.skipif(importlib.util.find_spec("sam2") is not None, reason="sam2 is installed")
def test_sam2_missing_package_names_the_extra(tmp_path) -> None:
    ckpt = tmp_path / "sam2.1_hiera_large.pt"
    ckpt.write_bytes(b"\0")
    with pytest.raises(CrabzooError, match=r"pip install crabzoo\[sam2\]"):
        Sam2Prompter(checkpoint=ckpt, device="cpu")
