"""Output heads: the prompt stage of Crab+ segmentation (box/points -> mask) and mask-token heads for Crab.

The mask-token heads share the :class:`~crabzoo.heads.base.MaskHead` contract: crabzoo's :class:`MaskDecoder`
and Crab's own :class:`CrabSegModule` (which loads Crab's released stage-3 weights). The prompt stage imports
without torch (tasks use it from pure-Python code); the mask heads are loaded on first access.
"""

from __future__ import annotations

from typing import Any

from crabzoo.heads.sam2_prompt import BoxFillPrompter, MaskPrompter, Sam2Prompter

__all__ = ["BoxFillPrompter", "CrabSegModule", "MaskDecoder", "MaskHead", "MaskPrompter", "Sam2Prompter", "dice_loss"]

_LAZY = {"MaskDecoder": "mask_decoder", "dice_loss": "mask_decoder", "MaskHead": "base", "CrabSegModule": "crab_seg"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"crabzoo.heads.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'crabzoo.heads' has no attribute {name!r}")
