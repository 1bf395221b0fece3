"""Helpers shared by the encoders: per-step batching, frame normalisation, layer selection."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from crabzoo.encoders.base import MediaFeatures
from crabzoo.errors import CrabzooError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
"""OpenAI CLIP's RGB normalisation mean."""

CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""OpenAI CLIP's RGB normalisation std."""


def step_mask(inputs: Tensor, mask: Tensor | None) -> Tensor:
    """The ``(B, T)`` bool mask of real steps (all ``True`` when ``mask`` is ``None``)."""
    b, t = inputs.shape[:2]
    if mask is None:
        return torch.ones(b, t, dtype=torch.bool, device=inputs.device)
    if tuple(mask.shape) != (b, t):
        raise ValueError(f"mask must be (B, T) = {(b, t)}, got {tuple(mask.shape)}")
    return mask.to(device=inputs.device, dtype=torch.bool)


def encode_steps(fn: Callable[[Tensor], Tensor | list[Tensor]], inputs: Tensor, mask: Tensor) -> list[Tensor]:
    """Run ``fn`` on the real steps only and scatter its outputs back to ``(B, T, N, D)``.

    Args:
        fn: Maps ``(n, ...)`` steps to one ``(n, N, D)`` tensor or a list of them (one per layer).
        inputs: ``(B, T, ...)``.
        mask: ``(B, T)`` bool, ``True`` for real steps. Padded steps come back as zeros.

    Returns:
        One ``(B, T, N, D)`` tensor per output of ``fn``.
    """
    b, t = inputs.shape[:2]
    any_real = bool(mask.any())
    selected = inputs[mask] if any_real else inputs[:1, :1].flatten(0, 1)
    out = fn(selected)
    outs = [out] if isinstance(out, Tensor) else list(out)
    result = []
    for o in outs:
        full = o.new_zeros(b, t, *o.shape[1:])
        if any_real:
            full[mask] = o
        result.append(full)
    return result


def make_features(tokens: Tensor, timestamps: Tensor | None, mask: Tensor, extra: dict[int, Tensor] | None = None) -> MediaFeatures:
    """Wrap encoder outputs, defaulting timestamps to one-second steps."""
    if timestamps is not None:
        timestamps = timestamps.to(device=tokens.device, dtype=torch.float32)
    feats = MediaFeatures.from_tokens(tokens, timestamps, mask)
    if extra:
        feats.extra_layers = dict(extra)
    return feats


def frames_to_pixels(frames: np.ndarray, size: int | tuple[int, int], mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 RGB frames ``(T, H, W, 3)`` -> normalised ``(T, 3, H', W')`` float32.

    Frames are resized with antialiased bicubic interpolation (no crop, aspect ratio not kept, as in Crab and
    Crab+ which feed 224x224 frames), scaled to [0, 1] and normalised with ``mean`` / ``std``.
    """
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) RGB, got shape {arr.shape}")
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float().div_(255.0)
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) != hw:
        x = F.interpolate(x, size=hw, mode="bicubic", align_corners=False, antialias=True).clamp_(0.0, 1.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s


def resolve_layers(layers: Sequence[int], num_blocks: int, owner: str) -> list[int]:
    """Hidden-state indices (``0`` = embeddings, ``i`` = output of block ``i``; negative counts from the end).

    Returns:
        Non-negative indices in ``[0, num_blocks]``, in the given order.

    Raises:
        CrabzooError: An index is out of range or the list is empty.
    """
    if not layers:
        raise CrabzooError(f"{owner}: `layers` is empty; give at least one hidden-state index, e.g. [-1]")
    out = []
    for layer in layers:
        idx = layer + num_blocks + 1 if layer < 0 else layer
        if not 0 <= idx <= num_blocks:
            raise CrabzooError(
                f"{owner}: layer {layer} is out of range for {num_blocks} blocks (hidden-state indices "
                f"0..{num_blocks}, or -1..-{num_blocks + 1})"
            )
        out.append(idx)
    return out
