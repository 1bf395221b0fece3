"""One contract test run over every backbone (tiny random-init models, offline)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from backbones_helpers import tiny_llama, tiny_omni, tiny_qwen2

CASES = {
    "llama-chatml": (tiny_llama, {}, "<|im_start|>assistant\n"),
    "llama-llama2": (tiny_llama, {"chat_template": "llama2", "mask_tokens": True}, "[/INST]"),
    "qwen2-chatml": (tiny_qwen2, {}, "<|im_start|>assistant\n"),
    "qwen-omni": (tiny_omni, {}, "<|im_start|>assistant\n"),
}

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "This is a video:\nPlease describe the events in the video."},
]


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, corpus_dir):
    build, kwargs, marker = CASES[request.param]
    backbone = build(corpus_dir, **kwargs).eval()
    return request.param, backbone, marker, lambda **kw: type(backbone)(**kw)


def _ids(backbone, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and mask of several prompts."""
    rows = [backbone.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), backbone.pad_token_id)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, length - len(row) :] = torch.tensor(row)
        mask[b, length - len(row) :] = 1
    return ids, mask


def _lm_head(backbone) -> nn.Module:
    inner = getattr(backbone, "model", None) or backbone.thinker
    return inner, inner.get_output_embeddings()


def test_placeholders_are_single_tokens(case):
    _, backbone, _, _ = case
    tok = backbone.tokenizer
    tokens = list(backbone.placeholders.values()) + [t for pair in backbone.media_wrappers.values() for t in pair]
    for token in tokens:
        ids = tok(f"see {token} here", add_special_tokens=False)["input_ids"]
        assert tok.convert_tokens_to_ids(token) in ids
        assert len(tok(token, add_special_tokens=False)["input_ids"]) == 1
    for kind in ("video", "image", "audio"):
        assert tok.convert_ids_to_tokens(backbone.placeholder_id(kind)) == backbone.placeholders[kind]


def test_crab_mask_tokens(corpus_dir):
    backbone = tiny_llama(corpus_dir, mask_tokens=True)
    for token in ("<mask_start>", "<mask_end>", *(f"<mask_{i}>" for i in range(6))):
        assert len(backbone.tokenizer(token, add_special_tokens=False)["input_ids"]) == 1
    assert backbone.model.get_input_embeddings().num_embeddings >= len(backbone.tokenizer)


def test_render_has_generation_prompt(case):
    _, backbone, marker, _ = case
    text = backbone.render(MESSAGES, add_generation_prompt=True)
    assert text.endswith(marker)
    assert text.endswith(backbone.generation_prompt)
    assert "Please describe the events in the video." in text
    assert backbone.eos_token_id is not None and backbone.pad_token_id is not None


def test_embed_and_forward_shapes(case):
    _, backbone, _, _ = case
    ids, mask = _ids(backbone, ["hello video", "Please describe the events in the video."])
    embeds = backbone.embed(ids)
    assert embeds.shape == (*ids.shape, backbone.hidden_size)
    logits = backbone(embeds, mask, (mask.cumsum(-1) - 1).clamp(min=0))
    assert logits.shape == (*ids.shape, len(backbone.tokenizer)) or logits.shape[:2] == ids.shape
    assert logits.shape[-1] >= len(backbone.tokenizer)
    assert torch.isfinite(logits).all()


def test_generate_returns_only_new_greedy_tokens(case):
    _, backbone, _, _ = case
    ids, mask = _ids(backbone, ["hello video", "Please describe the events in the video."])
    new = backbone.generate(backbone.embed(ids), mask, max_new_tokens=4)
    assert new.ndim == 2 and new.shape[0] == 2 and 1 <= new.shape[1] <= 4
    # the first new token is the argmax of the teacher-forced logits at the last prompt position
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        first = backbone(backbone.embed(ids), mask, positions)[:, -1].argmax(-1)
    assert torch.equal(new[:, 0], first)
    # greedy decoding of the second step agrees with a teacher-forced pass over prompt + first token
    ids2 = torch.cat([ids, new[:, :1]], 1)
    mask2 = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    if new.shape[1] > 1:
        with torch.no_grad():
            second = backbone(backbone.embed(ids2), mask2, (mask2.cumsum(-1) - 1).clamp(min=0))[:, -1].argmax(-1)
        finished = new[:, 0] == backbone.eos_token_id
        assert torch.equal(new[~finished, 1], second[~finished])


def test_generate_stops_at_eos(case):
    _, backbone, _, _ = case
    forced = copy.deepcopy(backbone)
    inner, head = _lm_head(forced)
    biased = nn.Linear(head.in_features, head.out_features, bias=True)
    biased.weight = nn.Parameter(head.weight.detach().clone())
    with torch.no_grad():
        biased.bias.zero_()
        biased.bias[forced.eos_token_id] = 1e4
    inner.set_output_embeddings(biased)
    ids, mask = _ids(forced, ["hello video", "Please describe the events in the video."])
    new = forced.generate(forced.embed(ids), mask, max_new_tokens=6)
    assert new.tolist() == [[forced.eos_token_id], [forced.eos_token_id]]


def test_module_groups_and_adapter_targets(case):
    name, backbone, _, _ = case
    groups = backbone.module_groups()
    assert "llm" in groups
    if name == "qwen-omni":
        assert {"audio_encoder", "visual_encoder"} <= set(groups)
    for group, suffixes in backbone.default_adapter_targets().items():
        linears = {n.rsplit(".", 1)[-1] for n, m in groups[group].named_modules() if isinstance(m, nn.Linear)}
        assert set(suffixes) <= linears, (group, set(suffixes) - linears)
    assert set(backbone.adapter_targets) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_decoder_layer_cls(case):
    _, backbone, _, _ = case
    cls = backbone.decoder_layer_cls
    layers = [m for m in backbone.module_groups()["llm"].modules() if type(m) is cls]
    assert len(layers) == 2  # the tiny configs have 2 decoder layers
    assert cls.__name__.endswith("DecoderLayer")


def test_save_and_reload_identical_logits(case, tmp_path):
    name, backbone, _, rebuild = case
    backbone.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "config.json").is_file()
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    assert (tmp_path / "ckpt" / "tokenizer.json").is_file()
    extra = {"audio_max_seconds": 10} if name == "qwen-omni" else {}
    reloaded = rebuild(name_or_path=str(tmp_path / "ckpt"), **extra).eval()
    assert reloaded.tokenizer.get_vocab() == backbone.tokenizer.get_vocab()
    assert reloaded.render(MESSAGES, True) == backbone.render(MESSAGES, True)
    assert reloaded.eos_token_id == backbone.eos_token_id
    ids, mask = _ids(backbone, ["hello video", "Please describe the events in the video."])
    with torch.no_grad():
        a = backbone(backbone.embed(ids), mask)
        b = reloaded(reloaded.embed(ids), mask)
    assert torch.equal(a, b)
    # saving again over an existing directory replaces it
    reloaded.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
