"""Contracts of the connectors (projectors) between encoders and the LLM.

Connectors are built by a factory ``(in_dim, out_dim) -> Connector`` so their shapes come from the neighbouring
encoder and backbone: a YAML gives ``class_path`` and the other ``init_args``; the paradigm supplies the widths.
Checkpoints therefore reload without re-linking arguments.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

from torch import nn

from crabzoo.encoders.base import MediaFeatures


class Connector(nn.Module, ABC):
    """Maps one modality's :class:`MediaFeatures` of width ``in_dim`` to the LLM width ``out_dim``.

    Args:
        in_dim: Width of the encoder tokens.
        out_dim: Hidden size of the LLM backbone.
    """

    module_group: str = "connector"

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim

    @abstractmethod
    def forward(self, features: MediaFeatures) -> MediaFeatures:
        """Project ``(B, T, N, in_dim)`` to ``(B, T, N', out_dim)``; time steps (and their mask) are kept."""


class FusionConnector(nn.Module, ABC):
    """Maps time-aligned audio and visual features to one LLM token stream (interleaved paradigms).

    Args:
        audio_dim: Width of the audio encoder tokens.
        visual_dim: Width of the visual encoder tokens.
        out_dim: Hidden size of the LLM backbone.
    """

    module_group: str = "connector"

    def __init__(self, audio_dim: int, visual_dim: int, out_dim: int) -> None:
        super().__init__()
        self.audio_dim, self.visual_dim, self.out_dim = audio_dim, visual_dim, out_dim

    @abstractmethod
    def forward(self, audio: MediaFeatures, visual: MediaFeatures) -> MediaFeatures:
        """Fuse both streams into ``(B, W, N, out_dim)``: ``W`` time windows of ``N`` tokens."""


ConnectorFactory = Callable[[int, int], Connector]
"""What paradigms take: ``factory(in_dim, out_dim)`` builds the connector."""

FusionConnectorFactory = Callable[[int, int, int], FusionConnector]
"""``factory(audio_dim, visual_dim, out_dim)`` builds a fusion connector."""
