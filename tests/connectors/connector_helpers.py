"""Shared helpers of the connector tests."""

from __future__ import annotations

import torch
from jsonargparse import ArgumentParser

from crabzoo.connectors.base import ConnectorFactory, FusionConnectorFactory
from crabzoo.encoders.base import MediaFeatures


def build_from_yaml(class_path: str, init_args: dict, dims: tuple[int, ...], fusion: bool = False):
    """Build a connector exactly as a paradigm does: jsonargparse turns YAML into a factory, called with dims."""
    parser = ArgumentParser()
    parser.add_argument("--connector", type=FusionConnectorFactory if fusion else ConnectorFactory)
    cfg = parser.parse_object({"connector": {"class_path": class_path, "init_args": init_args}})
    factory = parser.instantiate(cfg).connector
    return factory(*dims)


def features(b: int, t: int, n: int, d: int, seed: int = 0, step: float = 1.0) -> MediaFeatures:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(b, t, n, d, generator=g)
    timestamps = (torch.arange(t, dtype=torch.float32) * step).expand(b, t).clone()
    return MediaFeatures.from_tokens(tokens, timestamps)
