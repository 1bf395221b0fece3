"""Hand-computed numbers and the documented transformations of individual connectors."""

from __future__ import annotations

import pytest
import torch
from connector_helpers import features

from crabzoo.connectors import MLPConnector, PoolingConnector, QFormerConnector, STCConnector
from crabzoo.connectors.mlp import build_mlp
from crabzoo.encoders.base import MediaFeatures
from crabzoo.errors import CrabzooError


def identity_(linear: torch.nn.Linear) -> None:
    with torch.no_grad():
        linear.weight.copy_(torch.eye(linear.out_features, linear.in_features))
        linear.bias.zero_()


def test_mlp_pool_1d_averages_partial_groups() -> None:
    conn = MLPConnector(1, 1, depth=1, pool=3)
    identity_(conn.proj[0])
    tokens = torch.tensor([1.0, 2.0, 3.0, 4.0, 6.0]).reshape(1, 1, 5, 1)
    out = conn(MediaFeatures.from_tokens(tokens))
    assert out.tokens.flatten().tolist() == [2.0, 5.0]


def test_mlp_pool_2d_on_grid() -> None:
    conn = MLPConnector(1, 1, depth=1, pool=2, pool_mode="2d")
    identity_(conn.proj[0])
    grid = torch.arange(16, dtype=torch.float32).reshape(1, 1, 16, 1)  # 4x4 grid, row-major
    out = conn(MediaFeatures.from_tokens(grid)).tokens.flatten().tolist()
    assert out == [2.5, 4.5, 10.5, 12.5]


def test_build_mlp_layout() -> None:
    mlp = build_mlp(8, 16, 2)
    assert [type(m).__name__ for m in mlp] == ["Linear", "GELU", "Linear"]
    with pytest.raises(CrabzooError):
        build_mlp(8, 16, 0)


def test_pooling_numbers() -> None:
    conn = PoolingConnector(2, 2)
    identity_(conn.proj[0])
    x = torch.tensor([[[1.0, 0.0], [3.0, 2.0]], [[5.0, 4.0], [7.0, 6.0]], [[100.0, 100.0], [100.0, 100.0]]])
    feats = MediaFeatures(x[None], torch.tensor([[0.5, 1.5, 2.5]]), torch.tensor([[True, True, False]]))
    out = conn(feats)
    assert out.tokens.shape == (1, 2 + 3, 1, 2)
    # temporal tokens: mean over the two real frames per patch; spatial tokens: mean over patches per frame
    assert out.tokens[0, :, 0].tolist() == [[3.0, 2.0], [5.0, 4.0], [2.0, 1.0], [6.0, 5.0], [100.0, 100.0]]
    assert out.timestamps.tolist() == [[0.5, 0.5, 0.5, 1.5, 2.5]]
    assert out.mask.tolist() == [[True, True, True, True, False]]


def test_qformer_reads_each_step_independently() -> None:
    torch.manual_seed(0)
    conn = QFormerConnector(16, 24, num_queries=2, hidden_dim=16, num_heads=2, ffn_dim=32, dropout=0.0).eval()
    feats = features(1, 3, 5, 16)
    with torch.no_grad():
        base = conn(feats).tokens
        feats.tokens[:, 1] += torch.randn_like(feats.tokens[:, 1])
        moved = conn(feats).tokens
    torch.testing.assert_close(moved[:, [0, 2]], base[:, [0, 2]])
    assert (moved[:, 1] - base[:, 1]).abs().max() > 1e-5


def test_qformer_full_size_matches_crab_layout() -> None:
    conn = QFormerConnector(1024, 4096)
    q = conn.qformer
    assert q.queries.shape == (1, 32, 768) and len(q.layers) == 2
    layer = q.layers[0]
    assert layer.cross_attn.key.weight.shape == (768, 1024) and layer.self_attn.num_heads == 12
    assert layer.ffn[0].weight.shape == (3072, 768)
    assert [m.weight.shape for m in conn.proj if isinstance(m, torch.nn.Linear)] == [(4096, 768), (4096, 4096)]
    assert sum(p.numel() for p in q.parameters()) == 19_716_096
    assert sum(p.numel() for p in conn.parameters()) == 39_649_280


def test_stc_time_axis_with_padding_one() -> None:
    conn = STCConnector(8, 8, hidden_dim=8, depth=1, padding=1)
    feats = features(2, 5, 16, 8)
    feats.timestamps[:] = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    feats.mask[1, 3:] = False
    out = conn(feats)
    assert out.tokens.shape == (2, 3, 9, 8)  # steps [-1,0], [1,2], [3,4]; 4x4 grid -> 3x3
    assert out.timestamps.tolist() == [[0.0, 1.0, 3.0]] * 2
    assert out.mask.tolist() == [[True, True, True], [True, True, False]]


def test_stc_time_axis_without_padding() -> None:
    conn = STCConnector(8, 8, hidden_dim=8, depth=1, padding=0)
    out = conn(features(1, 5, 64, 8))
    assert out.tokens.shape == (1, 3, 16, 8)  # steps [0,1], [2,3], [4, zero pad] (ceil mode); 8x8 grid -> 4x4
    assert out.timestamps.tolist() == [[0.0, 2.0, 4.0]]
    assert out.mask.tolist() == [[True, True, True]]


def test_stc_single_image_and_odd_grid() -> None:
    for padding in (0, 1):
        conn = STCConnector(8, 8, hidden_dim=8, depth=1, padding=padding)
        out = conn(features(2, 1, 49, 8))  # one frame of a 7x7 grid
        side = (7 - 1 + padding) // 2 + 1  # 4 either way: no patch row dropped
        assert out.tokens.shape == (2, 1, side * side, 8) and out.mask.all()


def test_stc_equals_plain_conv_when_sizes_divide() -> None:
    torch.manual_seed(0)
    conn = STCConnector(8, 8, hidden_dim=8, depth=1, padding=1).eval()
    feats = features(1, 4, 16, 8)
    with torch.no_grad():
        grid = conn.s1(feats.tokens.reshape(4, 4, 4, 8).permute(0, 3, 1, 2))
        vol = grid.reshape(1, 4, 8, 4, 4).transpose(1, 2)
        conv = conn.sampler[0]
        plain = torch.nn.functional.conv3d(vol, conv.weight, conv.bias, stride=2, padding=1)
        ours = conn.sampler(torch.nn.functional.pad(vol, (1, 1, 1, 1, 1, 1)))
    torch.testing.assert_close(ours, torch.nn.functional.silu(plain))


def test_stc_needs_square_grid() -> None:
    conn = STCConnector(8, 8, hidden_dim=8, depth=1)
    with pytest.raises(CrabzooError, match="square grid"):
        conn(features(1, 2, 15, 8))


def test_mlp_2d_pool_needs_square_grid() -> None:
    with pytest.raises(CrabzooError, match="square grid"):
        MLPConnector(8, 8, pool=2, pool_mode="2d")(features(1, 1, 6, 8))
