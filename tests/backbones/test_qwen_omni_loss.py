"""Qwen2.5-Omni thinker: the multimodal loss on supervised positions equals the full-logits loss (fp32).

Values, per-sample losses and the gradients of every parameter (text model, LM head, audio and vision towers)
are compared with ``full_logits_loss`` on the thinker's own full forward (``forward_multimodal``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from backbones_helpers import AV_USER, IMAGE_USER, tiny_omni

from crabzoo.backbones.loss import IGNORE_INDEX, full_logits_loss
from crabzoo.errors import CrabzooError


@pytest.fixture(scope="module")
def omni(corpus_dir):
    torch.manual_seed(0)
    model = tiny_omni(corpus_dir).eval()
    model.requires_grad_(True)
    return model


@pytest.fixture(scope="module")
def batch(omni):
    """Two right-padded training conversations: video + audio, and an image with a longer answer."""
    rng = np.random.default_rng(0)
    audio = rng.standard_normal(3 * 16000).astype(np.float32)
    video = rng.integers(0, 256, (4, 56, 56, 3), dtype=np.uint8)
    image = rng.integers(0, 256, (56, 84, 3), dtype=np.uint8)
    a = omni.prepare([AV_USER, {"role": "assistant", "content": "<answer>dog</answer>"}], audio=[audio], videos=[video])
    b = omni.prepare(
        [IMAGE_USER, {"role": "assistant", "content": "The sounding object is cat. <obj>(12,30)(100,180)</obj>"}],
        images=[image],
    )
    return omni.collate([a, b], padding_side="right")


def gradients(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def test_loss_multimodal_matches_full_logits_values_and_gradients(omni, batch):
    labels = batch["labels"]
    assert batch["attention_mask"][0].sum() != batch["attention_mask"][1].sum()  # one row is padded
    ref_loss, ref_per_sample = full_logits_loss(omni.forward_multimodal(**batch), labels)
    ref_loss.backward()
    ref_grads = gradients(omni)

    loss, per_sample = omni.loss_multimodal(**batch)
    loss.backward()
    new_grads = gradients(omni)

    assert per_sample.shape == (2,) and bool((per_sample > 0).all())
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(per_sample, ref_per_sample, atol=1e-5, rtol=1e-5)
    # the loss is the token-weighted mean of the per-sample losses
    counts = (labels[:, 1:] != IGNORE_INDEX).sum(-1).float()
    torch.testing.assert_close(loss, (per_sample * counts).sum() / counts.sum(), atol=1e-6, rtol=1e-6)
    assert set(new_grads) == set(ref_grads)
    towers = ("audio_tower.", "visual.", "language_model.")
    for prefix in (*(f"thinker.model.{t}" for t in towers), "thinker.lm_head."):  # the media towers are in the graph
        assert any(n.startswith(prefix) for n in ref_grads), prefix
    for name, grad in ref_grads.items():
        torch.testing.assert_close(new_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_hidden_states_and_head_give_the_multimodal_logits(omni, batch):
    with torch.no_grad():
        logits = omni.forward_multimodal(**batch)
        hidden = omni.hidden_states_multimodal(**batch)
        assert hidden.shape == (*batch["input_ids"].shape, omni.hidden_size)
        torch.testing.assert_close(omni.output_embeddings()(hidden), logits, atol=1e-6, rtol=1e-6)


def test_loss_multimodal_needs_labels(omni, batch):
    without = {k: v for k, v in batch.items() if k != "labels"}
    with pytest.raises(CrabzooError, match="labels"):
        omni.loss_multimodal(**without)
