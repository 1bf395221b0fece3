"""Window-level Q-Former fusion: window grouping, masks, independence of windows, padding, YAML factory."""

from __future__ import annotations

import pytest
import torch
from connector_helpers import build_from_yaml, features

from crabzoo.connectors import FusionConnector, WindowQFormerConnector
from crabzoo.encoders.base import MediaFeatures
from crabzoo.errors import CrabzooError

TINY = {"num_queries": 3, "hidden_dim": 32, "num_heads": 4, "num_layers": 2, "ffn_dim": 64, "dropout": 0.0}
AD, VD, OUT = 24, 40, 48


def make(window: float = 2.0) -> WindowQFormerConnector:
    torch.manual_seed(0)
    return WindowQFormerConnector(AD, VD, OUT, window=window, **TINY).eval()


def streams(b: int = 2, seed: int = 0) -> tuple[MediaFeatures, MediaFeatures]:
    audio = features(b, 4, 5, AD, seed=seed)  # 1-s audio steps at 0, 1, 2, 3
    visual = features(b, 8, 4, VD, seed=seed + 1, step=0.5)  # 2 Hz frames at 0, 0.5, ..., 3.5
    return audio, visual


def test_shapes_timestamps_and_masks() -> None:
    audio, visual = streams()
    out = make()(audio, visual)
    assert out.tokens.shape == (2, 2, 3, OUT)  # 4 s in 2-s windows, 3 queries each
    assert torch.equal(out.timestamps, torch.tensor([[0.0, 2.0], [0.0, 2.0]]))
    assert out.mask.all()
    out1 = make(window=1.0)(audio, visual)
    assert out1.tokens.shape == (2, 4, 3, OUT)
    assert torch.equal(out1.timestamps[0], torch.tensor([0.0, 1.0, 2.0, 3.0]))


def test_windows_are_independent() -> None:
    conn = make()
    audio, visual = streams()
    with torch.no_grad():
        base = conn(audio, visual)
        audio.tokens[:, 2] += torch.randn_like(audio.tokens[:, 2])  # audio second 2 -> window 1
        visual.tokens[:, 5] += torch.randn_like(visual.tokens[:, 5])  # frame at 2.5 s -> window 1
        moved = conn(audio, visual)
    torch.testing.assert_close(moved.tokens[:, 0], base.tokens[:, 0])
    assert (moved.tokens[:, 1] - base.tokens[:, 1]).abs().max() > 1e-5


def test_both_streams_feed_each_window() -> None:
    conn = make()
    audio, visual = streams()
    with torch.no_grad():
        base = conn(audio, visual)
        visual.tokens[:, 0] += torch.randn_like(visual.tokens[:, 0])
        assert (conn(audio, visual).tokens[:, 0] - base.tokens[:, 0]).abs().max() > 1e-5


def test_padding_and_empty_windows() -> None:
    conn = make()
    audio, visual = streams(b=1)
    with torch.no_grad():
        alone = conn(audio, visual)
    # batch it with a longer sample (6 s) and pad the short one with garbage steps
    a_long, v_long = features(1, 6, 5, AD, seed=7), features(1, 12, 4, VD, seed=8, step=0.5)
    pad_a = MediaFeatures(
        torch.cat([torch.cat([audio.tokens, torch.randn(1, 2, 5, AD)], 1), a_long.tokens]),
        torch.cat([torch.cat([audio.timestamps, torch.tensor([[4.0, 5.0]])], 1), a_long.timestamps]),
        torch.tensor([[True] * 4 + [False] * 2, [True] * 6]),
    )
    pad_v = MediaFeatures(
        torch.cat([torch.cat([visual.tokens, torch.randn(1, 4, 4, VD)], 1), v_long.tokens]),
        torch.cat([torch.cat([visual.timestamps, torch.tensor([[4.0, 4.5, 5.0, 5.5]])], 1), v_long.timestamps]),
        torch.tensor([[True] * 8 + [False] * 4, [True] * 12]),
    )
    with torch.no_grad():
        batch = conn(pad_a, pad_v)
    assert batch.tokens.shape == (2, 3, 3, OUT)
    assert batch.mask.tolist() == [[True, True, False], [True, True, True]]
    torch.testing.assert_close(batch.tokens[0, :2], alone.tokens[0], atol=1e-5, rtol=1e-4)


def test_gap_window_is_masked() -> None:
    audio = features(1, 2, 5, AD)
    audio.timestamps[0] = torch.tensor([0.0, 5.0])
    visual = features(1, 2, 4, VD)
    visual.timestamps[0] = torch.tensor([0.5, 5.5])
    out = make()(audio, visual)
    assert out.mask.tolist() == [[True, False, True]]
    assert torch.isfinite(out.tokens).all()


def test_gradients_reach_every_parameter() -> None:
    conn = make().train()
    out = conn(*streams())
    out.tokens[out.mask].pow(2).mean().backward()
    for name, p in conn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_yaml_factory() -> None:
    conn = build_from_yaml("crabzoo.connectors.WindowQFormerConnector", {"window": 1.0, **TINY}, (AD, VD, OUT), fusion=True)
    assert isinstance(conn, FusionConnector) and (conn.audio_dim, conn.visual_dim, conn.out_dim) == (AD, VD, OUT)
    assert conn(*streams()).tokens.shape == (2, 4, 3, OUT)


def test_bad_window() -> None:
    with pytest.raises(CrabzooError, match="window"):
        WindowQFormerConnector(AD, VD, OUT, window=0)


def test_bfloat16() -> None:
    conn = make().to(torch.bfloat16)
    audio, visual = streams()
    out = conn(
        MediaFeatures(audio.tokens.bfloat16(), audio.timestamps, audio.mask),
        MediaFeatures(visual.tokens.bfloat16(), visual.timestamps, visual.mask),
    )
    assert out.tokens.dtype == torch.bfloat16 and torch.isfinite(out.tokens.float()).all()
