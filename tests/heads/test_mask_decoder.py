"""Crab-style mask decoder: shapes, loss numbers, gradients, errors, and a tiny overfit on a CPU."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from crabzoo.errors import CrabzooError
from crabzoo.heads import MaskDecoder, dice_loss

TINY = dict(prompt_dim=16, depth=1, num_heads=2, mlp_dim=32, mask_size=16)


def tiny(**kw) -> MaskDecoder:
    torch.manual_seed(0)
    return MaskDecoder(24, 12, **{**TINY, **kw})


def inputs(b: int = 2, grid: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(b, 6, 24, generator=g)
    layers = [torch.randn(b, grid * grid, 12, generator=g) for _ in range(2)]
    return states, layers


def test_shapes() -> None:
    dec = tiny()
    logits = dec(*inputs())
    assert logits.shape == (2, 2, 16, 16) and torch.isfinite(logits).all()
    assert dec.combine(logits).shape == (2, 16, 16)
    assert dec.predict(logits).dtype == torch.bool
    assert dec.num_mask_tokens == 6
    assert tiny(mask_size=(8, 12))(*inputs()).shape == (2, 2, 8, 12)


def test_dice_loss_numbers() -> None:
    logits = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])  # p = 0.5 everywhere
    target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    # 1 - (2 * 0.5 + 1) / (2 + 1 + 1) = 0.5
    assert dice_loss(logits, target).item() == pytest.approx(0.5)
    big = torch.tensor([[[50.0, -50.0], [-50.0, -50.0]]])
    assert dice_loss(big, target).item() == pytest.approx(0.0, abs=1e-6)


def test_loss_is_bce_plus_half_dice() -> None:
    dec = tiny()
    logits = torch.zeros(1, 2, 16, 16)
    target = torch.zeros(1, 16, 16)
    target[0, :4, :4] = 1.0  # 16 foreground pixels of 256
    # BCE at p = 0.5 is ln 2; Dice = 1 - (2 * 8 + 1) / (128 + 16 + 1)
    expected = math.log(2) + 0.5 * (1 - 17 / 145)
    assert dec.loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
    assert dec.loss(logits, target.bool()[:, None]).item() == pytest.approx(expected, rel=1e-6)
    # targets at another resolution are resized (nearest)
    assert dec.loss(logits, F.interpolate(target[None], size=(32, 32))[0]).item() == pytest.approx(expected, rel=1e-6)


def test_gradients_reach_every_parameter() -> None:
    dec = tiny()
    states, layers = inputs()
    states.requires_grad_(True)
    target = torch.zeros(2, 16, 16)
    target[:, 4:12, 4:12] = 1
    dec.loss(dec(states, layers), target).backward()
    for name, p in dec.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert states.grad.abs().sum() > 0  # the LLM's mask tokens receive the mask loss


def test_errors() -> None:
    dec = tiny()
    states, layers = inputs()
    with pytest.raises(CrabzooError, match="mask-token states"):
        dec(states[:, :5], layers)
    with pytest.raises(CrabzooError, match="visual layers"):
        dec(states, layers[:1])
    with pytest.raises(CrabzooError, match="square"):
        dec(states, [x[:, :15] for x in layers])


def test_full_size_parameter_count() -> None:
    dec = MaskDecoder(4096, 1024)
    total = sum(p.numel() for p in dec.parameters())
    prompt = sum(p.numel() for p in dec.prompt_mlp.parameters())
    assert prompt == 4096 * 4096 + 4096 + 4096 * 256 + 256
    assert dec.transformers[0].blocks[0].token_to_image.q_proj.weight.shape == (128, 256)
    assert 20e6 < total < 30e6


@pytest.mark.slow
def test_tiny_decoder_learns_a_mask() -> None:
    dec = tiny()
    states, layers = inputs(b=2, seed=3)
    target = torch.zeros(2, 16, 16)
    target[0, 2:10, 3:9] = 1
    target[1, 8:15, 6:16] = 1
    opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss = dec.loss(dec(states, layers), target)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = dec.predict(dec(states, layers))
    iou = (pred & target.bool()).sum() / (pred | target.bool()).sum()
    assert loss.item() < 0.1 * first
    assert iou > 0.9


def test_built_from_yaml() -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--head", type=MaskDecoder)
    cfg = parser.parse_object(
        {"head": {"class_path": "crabzoo.heads.MaskDecoder", "init_args": {"llm_dim": 24, "visual_dim": 12, **TINY}}}
    )
    head = parser.instantiate(cfg).head
    assert isinstance(head, MaskDecoder) and head.mask_size == (16, 16)


def test_bfloat16() -> None:
    dec = tiny().to(torch.bfloat16)
    states, layers = inputs()
    logits = dec(states.bfloat16(), [x.bfloat16() for x in layers])
    assert logits.dtype == torch.bfloat16 and torch.isfinite(dec.loss(logits, torch.zeros(2, 16, 16))).all()
