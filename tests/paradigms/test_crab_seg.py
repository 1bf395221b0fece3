"""Crab's stage-3 segmentation weights: CrabSegModule has Crab's names and sizes, a tiny random stage-3 file in the
release's key layout (``avs_finetune_weights.bin``, ``torch.save`` of a flat dict) loads through
``model.init_args.released`` with every tensor in place, the head decodes masks, and ``crabzoo test`` runs the
recipe (recipes/released/crab_seg.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from released_helpers import (
    CRAB_ADDED,
    PEFT,
    ROOT,
    KeepModel,
    assert_crab_seg_equals,
    crab_added_rows,
    expected_counts,
    run_test_command,
    tiny_seg_override,
    write_crab_seg_release,
)

from crabzoo.errors import CrabzooError

CRAB_SEG = ROOT / "recipes" / "released" / "crab_seg.yaml"
SEG = f"{PEFT}model.seg_module."


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from crabzoo.data.avsynth import synthesize

    out = tmp_path_factory.mktemp("crab-seg-data")
    synthesize(out, clips=6, seed=0, tasks=["s4"], soundtrack=False)
    return out


def build(data_root: Path, tmp: Path, head: dict | None = None):
    from crabzoo.inference.loading import model_from_configs

    torch.manual_seed(0)
    override = tiny_seg_override(tmp, data_root / "AVUIE_2", head)
    model, _ = model_from_configs([CRAB_SEG, override])
    return model.eval(), override


@pytest.fixture(scope="module")
def seg(data_root: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("crab-seg")
    model, override = build(data_root, tmp)
    path, state = write_crab_seg_release(model, tmp / "weights")
    return model, override, path, state


def test_module_has_crabs_names_and_sizes():
    """At Crab's sizes (LLaMA-2-7B 4096, CLIP ViT-L 1024) the names, shapes and counts are those of Crab's
    ``SegModule``: 235 parameters, 29,089,696 values (hand-summed from its layer sizes), two position buffers."""
    from crabzoo.heads.crab_seg import CrabSegModule

    with torch.device("meta"):
        head = CrabSegModule(4096, 1024)
    params = {k: tuple(p.shape) for k, p in head.named_parameters()}
    assert len(params) == 235
    assert sum(p.numel() for p in head.parameters()) == 29_089_696
    assert {k: tuple(b.shape) for k, b in head.named_buffers()} == {
        "pe_layer.positional_encoding_gaussian_matrix": (2, 128),
        "mask_decoder.pe1.positional_encoding_gaussian_matrix": (2, 128),
    }
    expected = {
        "text_hidden_fcs.0.0.weight": (4096, 4096),
        "text_hidden_fcs.0.2.weight": (256, 4096),
        "no_mask_embed.weight": (1, 256),
        "image_feature_neck.0.weight": (256, 1024, 1, 1),
        "image_feature_neck.2.weight": (256, 256, 3, 3),
        "image_feature_neck.3.bias": (256,),
        "mask_decoder.transformer.1.layers.0.self_attn.q_proj.weight": (256, 256),
        "mask_decoder.transformer.0.layers.1.cross_attn_token_to_image.k_proj.weight": (128, 256),
        "mask_decoder.transformer.1.layers.1.cross_attn_image_to_token.out_proj.weight": (256, 128),
        "mask_decoder.transformer.0.layers.0.mlp.lin1.weight": (2048, 256),
        "mask_decoder.transformer.0.layers.1.norm4.weight": (256,),
        "mask_decoder.transformer.1.final_attn_token_to_image.v_proj.bias": (128,),
        "mask_decoder.transformer.1.norm_final_attn.bias": (256,),
        "mask_decoder.avs_query_tokens.weight": (300, 256),
        "mask_decoder.query_generator.layers.1.self_attn.in_proj_weight": (768, 256),
        "mask_decoder.query_generator.layers.0.cross_attn.out_proj.weight": (256, 256),
        "mask_decoder.query_generator.layers.1.ffn.2.weight": (256, 2048),
        "mask_decoder.query_generator.layers.0.norm3.weight": (256,),
        "mask_decoder.hyper_mlp_out.layers.0.weight": (256, 300, 1, 1),
        "mask_decoder.hyper_mlp_out.layers.2.weight": (32, 256, 1, 1),
        "mask_decoder.hyper_mlp.layers.2.weight": (32, 256),
        "mask_decoder.output_upscaling.0.weight": (256, 32, 2, 2),
        "mask_decoder.output_upscaling.1.weight": (32,),
        "mask_decoder.upsample_2x.0.weight": (256, 256, 2, 2),
        "mask_decoder.level_embed.weight": (2, 256),
        "mask_decoder.ms3_s4_classfier.weight": (1, 32, 1, 1),
        "mask_decoder.avss_classifier.weight": (71, 32, 1, 1),
    }
    assert {k: params.get(k) for k in expected} == expected
    assert "mask_decoder.ms3_s4_classfier.bias" not in params and "image_feature_neck.0.bias" not in params


def test_forward_shapes_threshold_and_loss_by_hand():
    from crabzoo.heads.crab_seg import CrabSegModule

    torch.manual_seed(0)
    head = CrabSegModule(24, 20, prompt_dim=32, depth=1, num_heads=2, mlp_dim=64, num_queries=8, query_ffn_dim=48,
                         low_res_size=28, mask_size=56).eval()
    states, layers = torch.randn(2, 6, 24), [torch.randn(2, 16, 20), torch.randn(2, 16, 20)]
    logits = head(states, layers)
    assert logits.shape == (2, 1, 56, 56)
    assert torch.equal(head.predict(logits), logits[:, 0] > 0) and head.predict(logits).shape == (2, 56, 56)
    # zero logits: BCE = ln 2 per pixel; Dice of p = 1/2 on an all-ones target of 3136 pixels is
    # 1 - (3136 + 1e-3) / (1568 + 3136 + 1e-3); both summed over the 2 masks, Dice weighted 0.5
    dice = 1 - (3136 + 1e-3) / (1568 + 3136 + 1e-3)
    loss = head.loss(torch.zeros(2, 1, 56, 56), torch.ones(2, 56, 56, dtype=torch.bool))
    assert loss.item() == pytest.approx(2 * (0.6931471805599453 + 0.5 * dice), rel=1e-6)
    with pytest.raises(CrabzooError, match="expects 6 mask-token states and 2 visual layers, got 5 and 2"):
        head(states[:, :5], layers)
    with pytest.raises(CrabzooError, match="square patch grids"):
        head(states, [torch.randn(2, 15, 20)] * 2)


def test_state_offset_reads_the_state_before_each_mask_token(seg):
    """Crab's head takes the hidden state one position before each ``<mask_k>`` (the one that predicts it)."""
    model = seg[0]
    assert model.mask_decoder.state_offset == -1
    ids = [torch.tensor([5, *model.mask_token_ids, 7])]
    positions = [torch.arange(8) + 2]  # e.g. two left-padding positions
    hidden = torch.arange(10.0).reshape(1, 10, 1).expand(1, 10, 3)
    states = model._mask_states(ids, positions, hidden, [0])
    assert states[0, :, 0].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]


def test_stage3_release_loads_every_tensor_and_decodes(seg, data_root):
    from crabzoo.data.avuie import read_split
    from crabzoo.paradigms.released import load_released

    model, _, path, state = seg
    assert path.name == "avs_finetune_weights.bin"
    assert f"{SEG}mask_decoder.query_generator.layers.1.cross_attn.in_proj_weight" in state
    assert not any("positional_encoding" in k or ".lora_" in k for k in state)
    base, ids = crab_added_rows(model)
    assert sorted(ids) == list(range(base, base + 17))  # crabzoo adds the same 17 tokens, in its own order
    assert [ids[CRAB_ADDED.index(t)] - base for t in ("<image>", "<video>", "<mask_start>", "<mask_0>")] != [0, 3, 9, 11]
    buffers = {k: b.clone() for k, b in model.mask_decoder.named_buffers()}
    loaded = load_released(model, path)
    assert (loaded.layout, loaded.n_tensors, loaded.adapted_modules) == ("crab", len(state), 0)
    assert loaded.heads == ("mask_decoder",) and loaded.embeddings == ("input", "output")
    assert_crab_seg_equals(model, state)
    assert all(torch.equal(b, buffers[k]) for k, b in model.mask_decoder.named_buffers())
    # the loaded head decodes a 56 x 56 mask from a generation holding the mask tokens
    processor = model.make_processor()
    batch = processor.collate([processor(s) for s in read_split(data_root, "s4", "test").samples[:2]])
    tok = model.backbone.tokenizer
    suffix = tok.convert_tokens_to_ids(["<mask_start>", *[f"<mask_{i}>" for i in range(6)], "<mask_end>"])
    masks, found = model.decode_masks(batch, torch.tensor([suffix + [tok.eos_token_id]] * 2))
    assert masks.shape == (2, 56, 56) and masks.dtype == torch.bool and found.tolist() == [True, True]
    out = model(batch)
    assert torch.isfinite(out["mask_loss"]) and out["mask_loss"] > 0


def test_errors_name_the_file_and_the_fix(seg, data_root, tmp_path):
    from crabzoo.paradigms.released import load_released

    model, _, path, state = seg
    plain, _ = build(data_root, tmp_path, {"class_path": "crabzoo.heads.mask_decoder.MaskDecoder",
                                           "init_args": {"prompt_dim": 32, "depth": 1, "num_heads": 2, "mlp_dim": 64,
                                                         "mask_size": 56}})
    with pytest.raises(CrabzooError, match=f"released weights {path} hold Crab's segmentation module .* mask head "
                                           "MaskDecoder: .*crabzoo.heads.crab_seg.CrabSegModule"):
        load_released(plain, path)

    def write(name: str, changed: dict) -> Path:
        out = tmp_path / name / "avs_finetune_weights.bin"
        out.parent.mkdir()
        torch.save(changed, out)
        return out

    key = f"{SEG}mask_decoder.level_embed.weight"
    cases = {
        "shape": ({**state, key: torch.zeros(3, 32)}, r"shapes differ \(mask_decoder.level_embed.weight: file \(3, 32\), head \(2, 32\)\)"),
        "missing": ({k: v for k, v in state.items() if k != key}, r"lacks \['mask_decoder.level_embed.weight'\]"),
        "unknown": ({**state, f"{SEG}mask_decoder.iou_token.weight": torch.zeros(1, 32)}, "names the head lacks"),
        "other": ({**state, f"{PEFT}model.vl_projector.visual_query_tokens": torch.zeros(1, 4, 8)}, "1 other tensors"),
        "rows": ({**state, f"{PEFT}lm_head.weight": torch.zeros(5, 128)}, r"lm_head.weight \(5, 128\) does not fit"),
    }
    for name, (changed, message) in cases.items():
        bad = write(name, changed)
        with pytest.raises(CrabzooError, match=f"released weights {bad}: .*{message}"):
            load_released(model, bad)


@pytest.mark.slow  # the tiny model generates for s4; stage 2's projectors are not loaded (MLP connectors)
def test_crabzoo_test_runs_the_crab_seg_recipe(seg, data_root, tmp_path):
    _, override, path, state = seg
    recipe = yaml.safe_load(CRAB_SEG.read_text())
    assert [Path(p).name for p in recipe["model"]["init_args"]["released"]] == ["finetune_weights.bin", "avs_finetune_weights.bin"]
    payload = run_test_command(CRAB_SEG, override, f"[{path}]", data_root, '["s4"]', tmp_path / "run")
    (tested,) = KeepModel.models
    assert_crab_seg_equals(tested, state)
    assert set(payload["results"]) == {"s4"}
    assert payload["results"]["s4"]["n_total"] == expected_counts(data_root, ("s4",))["s4"]
