"""Output heads: the prompt stage of Crab+ segmentation (box/points -> mask) and Crab's mask-token decoder.

The prompt stage imports without torch (tasks use it from pure-Python code); :class:`MaskDecoder` is loaded on
first access.
"""

from __future__ import annotations

from typing import Any

from crabzoo.heads.sam2_prompt import BoxFillPrompter, MaskPrompter, Sam2Prompter

__all__ = ["BoxFillPrompter", "MaskDecoder", "MaskPrompter", "Sam2Prompter", "dice_loss"]


def __getattr__(name: str) -> Any:
    if name in ("MaskDecoder", "dice_loss"):
        from crabzoo.heads import mask_decoder

        return getattr(mask_decoder, name)
    raise AttributeError(f"module 'crabzoo.heads' has no attribute {name!r}")
