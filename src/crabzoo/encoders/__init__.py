"""Media encoders: audio (BEATs, Whisper) and visual (CLIP via open_clip or transformers, timm ViTs).

Classes are imported lazily, so ``import crabzoo.encoders`` stays cheap (transformers, open_clip and timm are
imported only by the encoder that needs them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from crabzoo.encoders.base import AudioEncoder, MediaEncoder, MediaFeatures, VisualEncoder

if TYPE_CHECKING:
    from crabzoo.encoders.beats import BEATsConfig, BEATsEncoder
    from crabzoo.encoders.clip import ClipEncoder, HFClipEncoder
    from crabzoo.encoders.dinov2 import Dinov2Encoder
    from crabzoo.encoders.frames import FrameEncoder
    from crabzoo.encoders.timm_vit import TimmViTEncoder
    from crabzoo.encoders.whisper import WhisperAudioEncoder

_LAZY = {
    "BEATsEncoder": "crabzoo.encoders.beats",
    "BEATsConfig": "crabzoo.encoders.beats",
    "WhisperAudioEncoder": "crabzoo.encoders.whisper",
    "ClipEncoder": "crabzoo.encoders.clip",
    "HFClipEncoder": "crabzoo.encoders.clip",
    "TimmViTEncoder": "crabzoo.encoders.timm_vit",
    "Dinov2Encoder": "crabzoo.encoders.dinov2",
    "FrameEncoder": "crabzoo.encoders.frames",
}

__all__ = ["AudioEncoder", "MediaEncoder", "MediaFeatures", "VisualEncoder", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'crabzoo.encoders' has no attribute {name!r}")
