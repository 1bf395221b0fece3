"""BEATs: official key layout at full size, checkpoint round trip, loading checks, maths of the pieces."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from crabzoo.encoders.beats import (
    ITER3_PLUS_AS2M,
    TINY,
    BEATsAttention,
    BEATsConfig,
    BEATsEncoder,
    WeightNormConv1d,
    relative_position_bucket,
)
from crabzoo.errors import CrabzooError

from .encoders_helpers import audio_clip

LAYER_SHAPES = {
    "self_attn.q_proj.weight": (768, 768), "self_attn.q_proj.bias": (768,),
    "self_attn.k_proj.weight": (768, 768), "self_attn.k_proj.bias": (768,),
    "self_attn.v_proj.weight": (768, 768), "self_attn.v_proj.bias": (768,),
    "self_attn.out_proj.weight": (768, 768), "self_attn.out_proj.bias": (768,),
    "self_attn.grep_linear.weight": (8, 64), "self_attn.grep_linear.bias": (8,),
    "self_attn.grep_a": (1, 12, 1, 1),
    "self_attn.relative_attention_bias.weight": (320, 12),
    "self_attn_layer_norm.weight": (768,), "self_attn_layer_norm.bias": (768,),
    "fc1.weight": (3072, 768), "fc1.bias": (3072,),
    "fc2.weight": (768, 3072), "fc2.bias": (768,),
    "final_layer_norm.weight": (768,), "final_layer_norm.bias": (768,),
}  # fmt: skip
TOP_SHAPES = {
    "patch_embedding.weight": (512, 1, 16, 16),
    "layer_norm.weight": (512,), "layer_norm.bias": (512,),
    "post_extract_proj.weight": (768, 512), "post_extract_proj.bias": (768,),
    "encoder.pos_conv.0.weight_g": (1, 1, 128), "encoder.pos_conv.0.weight_v": (768, 48, 128),
    "encoder.pos_conv.0.bias": (768,),
    "encoder.layer_norm.weight": (768,), "encoder.layer_norm.bias": (768,),
}  # fmt: skip
PREDICTOR_SHAPES = {"predictor.weight": (527, 768), "predictor.bias": (527,)}


def official_shapes(finetuned: bool) -> dict[str, tuple[int, ...]]:
    shapes = dict(TOP_SHAPES)
    for i in range(12):
        shapes.update({f"encoder.layers.{i}.{k}": v for k, v in LAYER_SHAPES.items()})
    if finetuned:
        shapes.update(PREDICTOR_SHAPES)
    return shapes


@pytest.mark.parametrize(("finetuned", "n_keys", "n_params"), [(False, 250, 90_311_792), (True, 252, 90_717_055)])
def test_full_size_keys_shapes_and_parameter_count(finetuned: bool, n_keys: int, n_params: int) -> None:
    with torch.device("meta"):
        model = BEATsEncoder(config={"finetuned_model": finetuned})
    state = model.state_dict()
    assert len(state) == n_keys
    assert {k: tuple(v.shape) for k, v in state.items()} == official_shapes(finetuned)
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert model.out_dim == 768 and math.isclose(model.encoder.layers[0].alpha, 24**0.25)


def tiny(seed: int = 0, **overrides) -> BEATsEncoder:
    torch.manual_seed(seed)
    model = BEATsEncoder(config={**TINY, **overrides})
    with torch.no_grad():  # non-trivial gates and biases
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def test_checkpoint_round_trip(tmp_path) -> None:
    model = tiny(finetuned_model=True, predictor_class=5)
    model.label_dict = {i: f"/m/{i:04d}" for i in range(5)}
    path = tmp_path / "beats_tiny.pt"
    model.save_checkpoint(path)
    blob = torch.load(path, weights_only=True)  # the official layout is weights_only-safe
    assert sorted(blob) == ["cfg", "label_dict", "model"]
    assert blob["cfg"]["encoder_embed_dim"] == 64 and blob["cfg"]["max_distance"] == 800
    reloaded = BEATsEncoder.from_checkpoint(path)
    fbank = reloaded.preprocess(audio_clip(3)).unsqueeze(0)
    assert torch.equal(model(fbank).tokens, reloaded(fbank).tokens)
    assert torch.equal(model.classify(fbank[0]), reloaded.classify(fbank[0]))
    assert reloaded.label_dict == model.label_dict
    assert not any(p.requires_grad for p in reloaded.parameters())


def test_one_relative_bias_table_under_every_layer_key() -> None:
    model = tiny()
    first = model.encoder.layers[0].self_attn.relative_attention_bias.weight
    assert not any(hasattr(layer.self_attn, "relative_attention_bias") for layer in model.encoder.layers[1:])
    state = model.state_dict()
    keys = [k for k in state if k.endswith("relative_attention_bias.weight")]
    assert len(keys) == TINY["encoder_layers"] and all(state[k] is first or torch.equal(state[k], first) for k in keys)
    nested = torch.nn.ModuleDict({"audio": model}).state_dict()  # the hook follows the module's prefix
    assert "audio.encoder.layers.1.self_attn.relative_attention_bias.weight" in nested
    other = torch.nn.ModuleDict({"audio": tiny(seed=3)})
    other.load_state_dict(nested, strict=True)  # the copies are accepted and dropped
    assert torch.equal(other["audio"].encoder.layers[0].self_attn.relative_attention_bias.weight, first)


def test_layer0_only_bias_and_parametrization_names_load(tmp_path) -> None:
    model = tiny()
    state = model.state_dict()
    for key in [k for k in state if "relative_attention_bias" in k and not k.startswith("encoder.layers.0.")]:
        del state[key]
    state["encoder.pos_conv.0.parametrizations.weight.original0"] = state.pop("encoder.pos_conv.0.weight_g")
    state["encoder.pos_conv.0.parametrizations.weight.original1"] = state.pop("encoder.pos_conv.0.weight_v")
    torch.save({"cfg": model.cfg.to_dict(), "model": state}, tmp_path / "b.pt")
    reloaded = BEATsEncoder.from_checkpoint(tmp_path / "b.pt")
    fbank = torch.randn(1, 2, 98, 128)
    assert torch.equal(model(fbank).tokens, reloaded(fbank).tokens)


def test_key_mismatch_is_a_clear_error(tmp_path) -> None:
    model = tiny()
    state = model.state_dict()
    state["predictor.weight"] = torch.zeros(527, 64)
    del state["encoder.layers.1.fc1.bias"]
    torch.save({"cfg": model.cfg.to_dict(), "model": state}, tmp_path / "bad.pt")
    with pytest.raises(CrabzooError, match=r"missing keys \['encoder.layers.1.fc1.bias'\].*unexpected keys \['predictor.weight'\]"):
        BEATsEncoder.from_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(CrabzooError, match="does not exist"):
        BEATsEncoder.from_checkpoint(tmp_path / "missing.pt")
    torch.save({"cfg": model.cfg, "model": state}, tmp_path / "pickled.pt")  # a dataclass needs full unpickling
    with pytest.raises(CrabzooError, match="weights_only=True"):
        BEATsEncoder.from_checkpoint(tmp_path / "pickled.pt")
    torch.save({"model": state}, tmp_path / "nocfg.pt")
    with pytest.raises(CrabzooError, match="'cfg' and 'model'"):
        BEATsEncoder.from_checkpoint(tmp_path / "nocfg.pt")


def test_checkpoint_cfg_uses_official_class_defaults() -> None:
    cfg = BEATsConfig.from_dict({"input_patch_size": 16, "unknown_field": 1})
    assert cfg.deep_norm is False and cfg.max_distance == 1280  # the class defaults, like BEATsConfig(cfg)
    assert BEATsConfig.from_dict(ITER3_PLUS_AS2M).max_distance == 800


def test_token_counts_and_preprocess_shapes() -> None:
    model = tiny()
    one = model.preprocess(audio_clip(3, seconds=1.0))
    two = model.preprocess(audio_clip(2, seconds=2.0))
    half = model.preprocess(audio_clip(1, seconds=0.5))
    assert one.shape == (3, 98, 128) and two.shape == (2, 198, 128) and one.dtype == torch.float32
    assert model(one[None]).tokens.shape == (1, 3, 48, 64)
    assert model(two[None]).tokens.shape == (1, 2, 96, 64)
    assert model(half[None]).tokens.shape == (1, 1, 24, 64)
    assert [model.token_count(n) for n in (98, 198, 48)] == [48, 96, 24]


def test_segments_shorter_than_a_patch_are_padded_to_one_patch_row() -> None:
    model = tiny()
    # MUSIC-AVQA's 20 virtual seconds on a 10-s clip: 2666-sample segments, 15 fbank frames
    short = model.preprocess(audio_clip(20, seconds=2666 / 16000))
    assert short.shape == (20, 16, 128)
    assert torch.all(short[:, 15:] == 0) and short[:, :15].abs().sum() > 0
    assert model(short[None]).tokens.shape == (1, 20, 8, 64)


def test_relative_position_buckets() -> None:
    rel = torch.tensor([0, 5, -5, 79, -79, 80, -80, -200, 200, -799, -800, -5000])
    # 160 buckets per direction, keys after the query offset by 160; exact below 80, then
    # 80 + floor(ln(a / 80) / ln(10) * 80) capped at 159
    expected = [0, 165, 5, 239, 79, 240, 80, 111, 271, 159, 159, 159]
    assert relative_position_bucket(rel, 320, 800).tolist() == expected
    assert 80 + math.floor(math.log(200 / 80) / math.log(10) * 80) == 111


def official_attention(attn: BEATsAttention, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The official formulation: q scaled by 1/sqrt(d)/32, logits times 32 after subtracting the row max."""
    b, n, _ = x.shape
    h, d, alpha = attn.num_heads, attn.head_dim, 32.0
    q = attn.q_proj(x) * d**-0.5 / alpha
    q = q.view(b, n, h, d).transpose(1, 2)
    k = attn.k_proj(x).view(b, n, h, d).transpose(1, 2)
    v = attn.v_proj(x).view(b, n, h, d).transpose(1, 2)
    logits = q @ k.transpose(-1, -2)
    logits = (logits - logits.amax(-1, keepdim=True)) * alpha
    query = q * alpha / d**-0.5
    gate_a, gate_b = torch.sigmoid(attn.grep_linear(query).view(b, h, n, 2, 4).sum(-1)).chunk(2, dim=-1)
    gate = gate_a * (gate_b * attn.grep_a - 1.0) + 2.0
    weights = F.softmax(logits + gate * bias.unsqueeze(0), dim=-1)
    return attn.out_proj((weights @ v).transpose(1, 2).reshape(b, n, -1))


def test_gated_relative_attention_matches_official_formulation() -> None:
    model = tiny(seed=1)
    attn = model.encoder.layers[1].self_attn
    torch.manual_seed(2)
    x = torch.randn(2, 48, 64)
    bias = model.encoder.layers[0].self_attn.position_bias(48, x.device)
    assert bias.shape == (4, 48, 48)
    out, passed_on = attn(x, bias, None)
    assert passed_on is bias  # every layer hands the un-gated layer-0 bias to the next
    assert torch.allclose(out, official_attention(attn, x, bias), atol=1e-5)
    first_out, computed = model.encoder.layers[0].self_attn(x, None, None)
    assert torch.equal(computed, bias)


def test_weight_norm_conv_matches_torch_weight_norm() -> None:
    torch.manual_seed(0)
    ours = WeightNormConv1d(64, 16, groups=4)
    with torch.no_grad():
        ours.weight_g.mul_(torch.rand_like(ours.weight_g) + 0.5)
    ref = torch.nn.Conv1d(64, 64, 16, padding=8, groups=4)
    ref = torch.nn.utils.parametrizations.weight_norm(ref, dim=2)
    ref.load_state_dict({
        "bias": ours.bias, "parametrizations.weight.original0": ours.weight_g,
        "parametrizations.weight.original1": ours.weight_v,
    })  # fmt: skip
    x = torch.randn(2, 64, 48)
    assert torch.allclose(ours(x), ref(x), atol=1e-5)
    v = ours.weight_v.detach()
    tap = 3
    expected = ours.weight_g[0, 0, tap] * v[:, :, tap] / v[:, :, tap].norm()
    assert torch.allclose(ours.weight()[:, :, tap], expected)


def test_all_false_padding_mask_changes_nothing() -> None:
    model = tiny()
    fbank = torch.randn(2, 98, 128)
    plain = model.extract_features(fbank)
    masked = model.extract_features(fbank, padding_mask=torch.zeros(2, 98, dtype=torch.bool))
    assert torch.allclose(plain, masked, atol=1e-6)


def test_config_errors() -> None:
    with pytest.raises(CrabzooError, match="not divisible"):
        BEATsEncoder(config={**TINY, "encoder_attention_heads": 5})
    with pytest.raises(CrabzooError, match="not both"):
        BEATsEncoder(checkpoint="x.pt", config=TINY)
    with pytest.raises(CrabzooError, match="16 kHz"):
        clip = audio_clip(1)
        clip.sample_rate = 8000
        tiny().preprocess(clip)
