"""I-LoRA trainable-parameter counts: the per-linear formula, tiny models, and Crab+'s 870.5 M."""

from __future__ import annotations

from backbones_helpers import TINY_OMNI, TINY_TEXT

from crabzoo.backbones.params import CONFIG_DIR, count_ilora_parameters, ilora_linear_parameters


def test_formula_by_hand():
    # A: r*d_in, B_1..B_N: N*d_out*r, router: N*d_in
    assert ilora_linear_parameters(3584, 512, n_heads=3, rank=128) == 128 * 3584 + 3 * 512 * 128 + 3 * 3584
    assert ilora_linear_parameters(10, 20, n_heads=1, rank=2) == 20 + 40 + 10  # N = 1: LoRA plus a 1-row router


def test_tiny_llama_count_from_config_dict():
    config = {"model_type": "llama", "vocab_size": 100, **TINY_TEXT}
    counts = count_ilora_parameters(config, {"llm": ["q_proj", "k_proj", "down_proj"]}, n_heads=2, rank=4)
    # per layer: q 32->32, k 32->16 (2 kv heads x head_dim 8), down 64->32; two layers
    per_layer = (ilora_linear_parameters(32, 32, 2, 4) + ilora_linear_parameters(32, 16, 2, 4)
                 + ilora_linear_parameters(64, 32, 2, 4))
    assert counts["llm"] == 2 * per_layer == counts["total"]
    assert counts["llm/linears"] == 6


def test_tiny_omni_default_placement():
    counts = count_ilora_parameters({"model_type": "qwen2_5_omni_thinker", **TINY_OMNI}, n_heads=3, rank=8)
    assert counts["llm/linears"] == 2 * 7 and counts["audio_encoder/linears"] == 2 * 3
    assert counts["visual_encoder/linears"] == 2 * 3
    assert counts["audio_encoder"] == 2 * 3 * ilora_linear_parameters(32, 32, 3, 8)
    vision = ilora_linear_parameters(32, 64, 3, 8) * 2 + ilora_linear_parameters(64, 32, 3, 8)
    assert counts["visual_encoder"] == 2 * vision


def test_qwen25_omni_7b_thinker_is_870_5_million():
    counts = count_ilora_parameters(CONFIG_DIR / "qwen2_5_omni_7b_thinker.json", n_heads=3, rank=128)
    assert counts["llm"] == 682_350_592  # 28 layers x 7 projections
    assert counts["visual_encoder"] == 124_846_720  # 32 blocks x gate/up/down (1280 <-> 3420)
    assert counts["audio_encoder"] == 63_283_200  # 32 layers x q/k/v (1280 -> 1280)
    assert counts["total"] == 870_480_512
    assert (counts["llm/linears"], counts["audio_encoder/linears"], counts["visual_encoder/linears"]) == (196, 96, 96)
