"""The supervised-only chunked LM loss equals the full-logits fp32 cross-entropy (values and gradients)."""

from pathlib import Path

import pytest
import torch
import yaml

from crabzoo.backbones.hf_causal_lm import HFCausalLM
from crabzoo.backbones.loss import IGNORE_INDEX, full_logits_loss, supervised_index, supervised_loss
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[2]


def tiny_backbone() -> HFCausalLM:
    cfg = yaml.safe_load((ROOT / "paradigms" / "tiny" / "mlp.yaml").read_text())
    args = cfg["model"]["init_args"]["backbone"]["init_args"]
    torch.manual_seed(0)
    return HFCausalLM(**args).float()


def batch(backbone: HFCausalLM, vocab: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (3, 20), generator=gen)
    attention = torch.ones_like(ids)
    attention[1, 15:] = 0  # right padding
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 8:14] = ids[0, 8:14]
    labels[1, 4:15] = ids[1, 4:15]  # row 2: no supervised token
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    return backbone.embed(ids).detach(), attention, positions, labels


def grads(backbone: HFCausalLM) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in backbone.named_parameters() if p.grad is not None}
    backbone.zero_grad(set_to_none=True)
    return out


def test_backbone_loss_matches_full_logits_values_and_gradients():
    backbone = tiny_backbone()
    backbone.requires_grad_(True)
    vocab = backbone.output_embeddings().out_features
    inputs, attention, positions, labels = batch(backbone, vocab)

    ref_loss, ref_per_sample = full_logits_loss(backbone(inputs, attention, positions), labels)
    ref_loss.backward()
    ref_grads = grads(backbone)

    loss, per_sample = backbone(inputs, attention, positions, labels=labels)
    loss.backward()
    new_grads = grads(backbone)

    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(per_sample, ref_per_sample, atol=1e-5, rtol=1e-5)
    assert per_sample[2] == 0
    assert set(new_grads) == set(ref_grads) and len(ref_grads) > 5
    for name, g in ref_grads.items():
        torch.testing.assert_close(new_grads[name], g, atol=1e-5, rtol=1e-4, msg=name)


def test_hidden_states_and_head_give_the_logits():
    backbone = tiny_backbone()
    vocab = backbone.output_embeddings().out_features
    inputs, attention, positions, _ = batch(backbone, vocab)
    with torch.no_grad():
        logits, last = backbone(inputs, attention, positions, output_hidden_states=True)
        hidden = backbone.hidden_states(inputs, attention, positions)
        torch.testing.assert_close(hidden, last)
        torch.testing.assert_close(backbone.output_embeddings()(hidden), logits)


@pytest.mark.parametrize("chunk_size", [1, 4, 1024])
def test_chunking_does_not_change_the_loss(chunk_size):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(2, 12, 16)
    labels = torch.randint(0, 50, (2, 12))
    labels[0, :5] = IGNORE_INDEX
    ref_loss, ref_per_sample = full_logits_loss(head(hidden), labels)
    loss, per_sample = supervised_loss(hidden, labels, head, chunk_size=chunk_size)
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(per_sample, ref_per_sample, atol=1e-6, rtol=1e-6)


def test_no_supervised_token_gives_zero_loss_that_still_backpropagates():
    head = torch.nn.Linear(8, 10, bias=False)
    hidden = torch.randn(2, 5, 8, requires_grad=True)
    labels = torch.full((2, 5), IGNORE_INDEX)
    loss, per_sample = supervised_loss(hidden, labels, head)
    assert loss.item() == 0 and per_sample.tolist() == [0.0, 0.0]
    loss.backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() == 0


class _OpLog(TorchDispatchMode):
    """Records the ATen ops run inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


# ops whose output size or value must be read from the device: each stops the host until the device is done
SYNCING = {"aten.nonzero", "aten.masked_select", "aten._local_scalar_dense", "aten.bincount", "aten.unique"}


def test_a_precomputed_index_gives_the_same_loss_without_reading_the_device():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 11, bias=False)
    hidden = torch.randn(3, 7, 8, requires_grad=True)
    labels = torch.randint(0, 11, (3, 7))
    labels[0, :4] = IGNORE_INDEX
    labels[2, :] = IGNORE_INDEX  # a sample without supervised tokens
    ref_loss, ref_per_sample = full_logits_loss(head(hidden), labels)
    index = supervised_index(labels)
    assert index.tolist() == [3, 4, 5] + list(range(6, 12))  # row 0: t = 3..5 predict labels 4..6; row 1: all 6
    with _OpLog() as log:
        loss, per_sample = supervised_loss(hidden, labels, head, chunk_size=4, index=index)
        loss.backward()
    assert not SYNCING & set(log.ops), sorted(SYNCING & set(log.ops))
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(per_sample, ref_per_sample, atol=1e-6, rtol=1e-6)
    with _OpLog() as log:  # without the index the positions are found, which reads a size from the device
        supervised_loss(hidden, labels, head)
    assert "aten.nonzero" in log.ops


def test_packed_segments_with_an_index_give_per_sample_losses():
    torch.manual_seed(1)
    head = torch.nn.Linear(4, 9, bias=False)
    hidden = torch.randn(1, 8, 4)
    labels = torch.randint(0, 9, (1, 8))
    segments = torch.tensor([[0, 0, 0, 1, 1, 1, 1, -1]])
    labels[0, 0], labels[0, 3], labels[0, 7] = IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX  # sample starts, padding
    loss, per_sample = supervised_loss(hidden, labels, head, segments=segments, num_samples=2, index=supervised_index(labels))
    token = torch.nn.functional.cross_entropy(head(hidden[0, :-1]), labels[0, 1:].clamp(min=0), reduction="none")
    assert per_sample.tolist() == pytest.approx([token[0:2].mean().item(), token[3:6].mean().item()], abs=1e-6)
    assert loss.item() == pytest.approx(torch.cat([token[0:2], token[3:6]]).mean().item(), abs=1e-6)
