"""Contracts of the media encoders.

An encoder turns one modality into a grid of tokens per time step. Preprocessing runs on the CPU inside data
workers (one sample, no batch dimension); ``forward`` runs on the accelerator on a batch.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from crabzoo.data.schema import AudioClip, Modality, VisualClip


@dataclass
class MediaFeatures:
    """Tokens of one modality, grouped by time step.

    Attributes:
        tokens: ``(B, T, N, D)``: ``T`` time steps (frames or audio segments), ``N`` tokens each, width ``D``.
        timestamps: ``(B, T)`` start time of each step in seconds.
        mask: ``(B, T)`` bool, ``True`` where a step is real (samples in a batch may have fewer steps).
        extra_layers: Other hidden layers an encoder was asked for, by layer index, each shaped like
            ``tokens`` before any connector (e.g. CLIP layers 14 and 22 for a segmentation head). Empty by
            default; :meth:`replace` carries them along unchanged.
    """

    tokens: Tensor
    timestamps: Tensor
    mask: Tensor
    extra_layers: dict[int, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.tokens.dim() != 4:
            raise ValueError(f"MediaFeatures.tokens must be (B, T, N, D), got shape {tuple(self.tokens.shape)}")

    @classmethod
    def from_tokens(cls, tokens: Tensor, timestamps: Tensor | None = None, mask: Tensor | None = None) -> MediaFeatures:
        """Wrap ``(B, T, N, D)`` tokens, defaulting to one-second steps and an all-valid mask."""
        b, t = tokens.shape[:2]
        if timestamps is None:
            timestamps = torch.arange(t, device=tokens.device, dtype=torch.float32).expand(b, t)
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=tokens.device)
        return cls(tokens, timestamps, mask)

    def replace(self, tokens: Tensor) -> MediaFeatures:
        """Same time axis (timestamps, mask), new tokens; ``tokens`` must keep ``B`` and ``T``."""
        return MediaFeatures(tokens, self.timestamps, self.mask, self.extra_layers)


class MediaEncoder(nn.Module, ABC):
    """Common base of audio and visual encoders.

    Subclasses set ``modality`` and implement :meth:`preprocess`, :meth:`forward` and :attr:`out_dim`.
    Encoders are frozen by default: the paradigm freezes every module group the recipe does not train.

    Attributes:
        modality: ``"audio"`` or ``"visual"``.
        module_group: Name used for freezing, adapter placement and sharding.
    """

    modality: ClassVar[Modality]
    module_group: str = "encoder"

    @property
    @abstractmethod
    def out_dim(self) -> int:
        """Width ``D`` of the output tokens."""

    @abstractmethod
    def preprocess(self, clip: AudioClip | VisualClip) -> Tensor:
        """Turn one decoded clip into the encoder's input tensor (CPU, no batch dim, leading dim ``T``)."""

    @abstractmethod
    def forward(self, inputs: Tensor, timestamps: Tensor | None = None, mask: Tensor | None = None) -> MediaFeatures:
        """Encode a batch ``(B, T, ...)`` of preprocessed inputs into :class:`MediaFeatures`."""

    def fingerprint(self) -> str:
        """A stable hash of the class, config and weights; a feature-cache key part.

        The default hashes the class path, :meth:`preprocess_config`, the encoder's own plain-data attributes
        (its configuration, e.g. the selected ``layers``) and every parameter/buffer's name, shape and a cheap
        content digest. Override when a cheaper exact identity exists (e.g. a checkpoint hash).
        """
        h = hashlib.sha256()
        h.update(f"{type(self).__module__}.{type(self).__qualname__}".encode())
        h.update(json.dumps(self.preprocess_config(), sort_keys=True, default=str).encode())
        plain = (bool, int, float, str, tuple, list, dict, type(None))
        config = {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "training" and isinstance(v, plain)}
        h.update(json.dumps(config, sort_keys=True, default=str).encode())
        for name, t in list(self.state_dict().items()):
            if hasattr(t, "full_tensor"):  # a sharded (FSDP2) parameter: every rank hashes the whole tensor
                t = t.full_tensor()
            flat = t.detach().float().reshape(-1)
            h.update(name.encode())
            h.update(str(tuple(t.shape)).encode())
            if flat.numel():
                h.update(flat[:: max(1, flat.numel() // 4096)].cpu().numpy().tobytes())
                h.update(str(float(flat.sum())).encode())
        return h.hexdigest()[:16]

    def preprocess_config(self) -> dict:
        """Everything that changes :meth:`preprocess` output (a feature-cache key part)."""
        return {}


class AudioEncoder(MediaEncoder):
    """An encoder of :class:`~crabzoo.data.schema.AudioClip` segments (16 kHz mono)."""

    modality: ClassVar[Modality] = "audio"
    module_group: str = "audio_encoder"


class VisualEncoder(MediaEncoder):
    """An encoder of :class:`~crabzoo.data.schema.VisualClip` frames (video frames or one image)."""

    modality: ClassVar[Modality] = "visual"
    module_group: str = "visual_encoder"
