"""Crab's projector checkpoints (LAVIS BertLMHeadModel names) load into QFormerConnector."""

from __future__ import annotations

import pytest
import torch
from connector_helpers import features

from crabzoo.connectors import QFormerConnector
from crabzoo.connectors.qformer import _CRAB_LAYER_KEYS, from_crab_state_dict
from crabzoo.errors import CrabzooError

TINY = {"num_queries": 4, "hidden_dim": 32, "num_heads": 4, "num_layers": 2, "ffn_dim": 64, "dropout": 0.0}


def crab_names(conn: QFormerConnector, prefix: str, m: str) -> dict[str, torch.Tensor]:
    """Write a connector's weights the way Crab's checkpoint names them, plus the text-side weights it carries."""
    inverse = {v: k for k, v in _CRAB_LAYER_KEYS.items()}
    out = {}
    for key, value in conn.state_dict().items():
        if key.startswith("input_norm."):
            name = f"{m}_ln.{key.split('.')[-1]}"
        elif key == "qformer.queries":
            name = f"{m}_query_tokens"
        elif key.startswith("qformer.embed_norm."):
            name = f"{m}_Qformer.bert.embeddings.LayerNorm.{key.split('.')[-1]}"
        elif key.startswith("qformer.layers."):
            _, _, i, rest = key.split(".", 3)
            module, param = rest.rsplit(".", 1)
            name = f"{m}_Qformer.bert.encoder.layer.{i}.{inverse[module]}.{param}"
        else:
            name = f"{m}_{key}"
        out[prefix + name] = value.clone()
    h = conn.qformer.queries.shape[-1]
    out[prefix + f"{m}_Qformer.bert.embeddings.word_embeddings.weight"] = torch.randn(100, h)
    out[prefix + f"{m}_Qformer.bert.encoder.layer.0.intermediate.dense.weight"] = torch.randn(64, h)
    out[prefix + f"{m}_Qformer.cls.predictions.bias"] = torch.randn(100)
    out[prefix + "other_module.weight"] = torch.randn(3)
    return out


@pytest.mark.parametrize("modality", ["visual", "audio"])
def test_crab_checkpoint_round_trip(modality: str) -> None:
    torch.manual_seed(0)
    source = QFormerConnector(24, 40, **TINY).eval()
    crab = crab_names(source, "model.projectors.", modality)
    torch.manual_seed(1)
    target = QFormerConnector(24, 40, **TINY).eval()
    target.load_state_dict(from_crab_state_dict(crab, modality), strict=True)
    feats = features(2, 3, 7, 24)
    with torch.no_grad():
        torch.testing.assert_close(target(feats).tokens, source(feats).tokens)


def test_missing_projector_is_a_clear_error() -> None:
    with pytest.raises(CrabzooError, match="audio_ln.weight"):
        from_crab_state_dict({"visual_ln.weight": torch.ones(2)}, "audio")
