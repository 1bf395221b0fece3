"""Connectors (projectors) from encoder tokens to the LLM width, and fusion connectors for interleaved models."""

from crabzoo.connectors.base import Connector, ConnectorFactory, FusionConnector, FusionConnectorFactory
from crabzoo.connectors.mlp import MLPConnector
from crabzoo.connectors.pooling import PoolingConnector
from crabzoo.connectors.qformer import QFormer, QFormerConnector
from crabzoo.connectors.stc import STCConnector
from crabzoo.connectors.window_qformer import WindowQFormerConnector

__all__ = [
    "Connector",
    "ConnectorFactory",
    "FusionConnector",
    "FusionConnectorFactory",
    "MLPConnector",
    "PoolingConnector",
    "QFormer",
    "QFormerConnector",
    "STCConnector",
    "WindowQFormerConnector",
]
