"""Output heads: the prompt stage of Crab+ segmentation (box/points -> mask) and Crab's mask-token decoder."""

from crabzoo.heads.mask_decoder import MaskDecoder, dice_loss
from crabzoo.heads.sam2_prompt import BoxFillPrompter, MaskPrompter, Sam2Prompter

__all__ = ["BoxFillPrompter", "MaskDecoder", "MaskPrompter", "Sam2Prompter", "dice_loss"]
