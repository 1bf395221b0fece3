"""One contract test for every connector: shapes, time axis, gradients, padding, YAML factory form."""

from __future__ import annotations

import functools

import pytest
import torch

from crabzoo.connectors import Connector, MLPConnector, PoolingConnector, QFormerConnector, STCConnector
from crabzoo.encoders.base import MediaFeatures

from connector_helpers import build_from_yaml, features

IN, OUT, T, N = 64, 128, 4, 16  # 4 steps of a 4x4 token grid

TINY_QFORMER = {"num_queries": 4, "hidden_dim": 32, "num_heads": 4, "num_layers": 2, "ffn_dim": 64, "dropout": 0.0}

# (class, init_args, expected (T', N') for T=4, N=16, time axis kept)
CASES = [
    (MLPConnector, {}, (4, 16), True),
    (MLPConnector, {"depth": 1, "pool": 3}, (4, 6), True),
    (MLPConnector, {"pool": 2, "pool_mode": "2d"}, (4, 4), True),
    (QFormerConnector, TINY_QFORMER, (4, 4), True),
    (STCConnector, {"hidden_dim": 32, "depth": 1}, (3, 9), False),
    (STCConnector, {"hidden_dim": 32, "depth": 1, "padding": 0}, (2, 4), False),
    (PoolingConnector, {}, (N + T, 1), False),
]
IDS = [f"{cls.__name__}-{i}" for i, (cls, *_) in enumerate(CASES)]


def make(cls, init_args) -> Connector:
    torch.manual_seed(0)
    module = functools.partial(cls, **init_args)(IN, OUT)
    return module.eval()


@pytest.mark.parametrize(("cls", "init_args", "expected", "keeps_time"), CASES, ids=IDS)
def test_shapes_and_time_axis(cls, init_args, expected, keeps_time) -> None:
    conn = make(cls, init_args)
    feats = features(2, T, N, IN)
    feats.mask[1, 3] = False
    out = conn(feats)
    assert isinstance(out, MediaFeatures)
    assert out.tokens.shape == (2, *expected, OUT)
    assert out.tokens.dtype == torch.float32 and out.mask.dtype == torch.bool
    assert out.timestamps.shape == out.mask.shape == (2, expected[0])
    assert torch.isfinite(out.tokens).all()
    if keeps_time:
        assert torch.equal(out.timestamps, feats.timestamps) and torch.equal(out.mask, feats.mask)
    assert conn.in_dim == IN and conn.out_dim == OUT


@pytest.mark.parametrize(("cls", "init_args", "expected", "keeps_time"), CASES, ids=IDS)
def test_gradients_reach_every_parameter(cls, init_args, expected, keeps_time) -> None:
    conn = make(cls, init_args).train()
    out = conn(features(2, T, N, IN, seed=1))
    out.tokens[out.mask].pow(2).mean().backward()
    for name, p in conn.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{name} got a zero gradient"


@pytest.mark.parametrize(("cls", "init_args", "expected", "keeps_time"), CASES, ids=IDS)
def test_padded_step_does_not_change_real_outputs(cls, init_args, expected, keeps_time) -> None:
    conn = make(cls, init_args)
    alone = features(1, T - 1, N, IN, seed=2)
    other = features(1, T, N, IN, seed=3)
    garbage = torch.randn(1, 1, N, IN) * 5
    tokens = torch.cat([torch.cat([alone.tokens, garbage], dim=1), other.tokens])
    mask = torch.tensor([[True] * (T - 1) + [False], [True] * T])
    batch = MediaFeatures(tokens, torch.cat([torch.cat([alone.timestamps, torch.tensor([[99.0]])], 1), other.timestamps]), mask)
    with torch.no_grad():
        a, b = conn(alone), conn(batch)
    steps = a.tokens.shape[1]
    assert torch.equal(b.mask[0, :steps], a.mask[0])
    assert torch.equal(b.timestamps[0, :steps][a.mask[0]], a.timestamps[0][a.mask[0]])
    torch.testing.assert_close(b.tokens[0, :steps][a.mask[0]], a.tokens[0][a.mask[0]], atol=1e-5, rtol=1e-4)
    if keeps_time:
        assert not b.mask[0, T - 1]


@pytest.mark.parametrize(("cls", "init_args", "expected", "keeps_time"), CASES, ids=IDS)
def test_built_from_yaml_factory(cls, init_args, expected, keeps_time) -> None:
    conn = build_from_yaml(f"{cls.__module__}.{cls.__qualname__}", init_args, (IN, OUT))
    assert type(conn) is cls and (conn.in_dim, conn.out_dim) == (IN, OUT)
    assert conn(features(1, T, N, IN)).tokens.shape == (1, *expected, OUT)
    reference = make(cls, init_args)
    assert conn.state_dict().keys() == reference.state_dict().keys()


@pytest.mark.parametrize(("cls", "init_args", "expected", "keeps_time"), CASES, ids=IDS)
def test_bfloat16(cls, init_args, expected, keeps_time) -> None:
    conn = make(cls, init_args).to(torch.bfloat16)
    feats = features(1, T, N, IN)
    out = conn(MediaFeatures(feats.tokens.bfloat16(), feats.timestamps, feats.mask))
    assert out.tokens.dtype == torch.bfloat16 and torch.isfinite(out.tokens.float()).all()
