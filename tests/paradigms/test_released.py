"""The released-weights recipes (recipes/released/) on tiny random weights written in the releases' exact key
layout and file names (``finetune_weights.bin``, ``torch.save`` of a state dict), loaded through
``model.init_args.released``, and run end to end by ``crabzoo test``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from released_helpers import (
    CRAB_PATHS,
    CRAB_PLUS_PATHS,
    PEFT,
    ROOT,
    TINY_OMNI,
    TINY_QFORMER,
    KeepModel,
    assert_ilora_equals,
    expected_counts,
    run_test_command,
    tiny_override,
    write_crab_plus_release,
    write_crab_release,
)

from crabzoo.errors import CrabzooError

CRAB_PLUS = ROOT / "recipes" / "released" / "crab_plus.yaml"
CRAB = ROOT / "recipes" / "released" / "crab.yaml"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from crabzoo.data.avsynth import synthesize

    out = tmp_path_factory.mktemp("released-data")
    synthesize(out, clips=6, seed=0, tasks=["ks", "s4", "ave"], soundtrack=False)
    return out


def build(recipe: Path, paradigm: Path, data_root: Path, tmp: Path):
    from crabzoo.inference.loading import model_from_configs

    torch.manual_seed(0)
    override = tiny_override(tmp, paradigm, data_root / "AVUIE_2", {"released": None})
    model, _ = model_from_configs([recipe, override])
    return model.eval(), override


@pytest.fixture(scope="module")
def omni(data_root: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("crab-plus")
    model, override = build(CRAB_PLUS, TINY_OMNI, data_root, tmp)
    path, state = write_crab_plus_release(model, tmp / "weights")
    return model, override, path, state


@pytest.fixture(scope="module")
def modular(data_root: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("crab")
    model, override = build(CRAB, TINY_QFORMER, data_root, tmp)
    path, state = write_crab_release(model, tmp / "weights")
    return model, override, path, state


def test_crab_plus_release_loads_into_the_thinker_exactly(omni, tmp_path):
    from crabzoo.paradigms.released import load_released

    model, _, path, state = omni
    assert path.name == "finetune_weights.bin"
    for key in ("base_model.model.model.layers.1.self_attn.q_proj.lora_B2.weight",
                "base_model.model.audio_tower.layers.0.self_attn.v_proj.lora_route.weight",
                "base_model.model.visual.blocks.1.mlp.down_proj.lora_A.weight"):
        assert key in state and state[key].dtype == torch.bfloat16
    assert all(".lora_" in k for k in state)
    loaded = load_released(model, path)
    n = assert_ilora_equals(model, CRAB_PLUS_PATHS, state)
    assert (loaded.layout, loaded.n_tensors, loaded.adapted_modules) == ("crab_plus", len(state), n)
    assert n == 2 * 7 + 2 * 3 + 2 * 3  # LLM q/k/v/o/gate/up/down, audio q/k/v, vision gate/up/down, 2 layers each
    # the same tensors named inside the whole Omni model ("thinker." in front) load the same way
    with torch.no_grad():
        for p in model.adapter.trainable_parameters():
            p.zero_()
    torch.save({"thinker." + k: v for k, v in state.items()}, tmp_path / "finetune_weights.bin")
    load_released(model, tmp_path / "finetune_weights.bin")
    assert_ilora_equals(model, CRAB_PLUS_PATHS, state)


def test_crab_stage2_release_loads_projectors_and_ilora(modular):
    from crabzoo.connectors.qformer import from_crab_state_dict
    from crabzoo.paradigms.released import load_released

    model, _, path, state = modular
    assert f"{PEFT}model.layers.0.self_attn.q_proj.lora_B2.weight" in state
    assert f"{PEFT}model.vl_projector.visual_Qformer.bert.encoder.layer.1.crossattention.self.key.weight" in state
    assert f"{PEFT}model.al_projector.audio_query_tokens" in state
    loaded = load_released(model, path)
    assert loaded.connectors == ("visual_connector", "audio_connector")
    assert loaded.adapted_modules == assert_ilora_equals(model, CRAB_PATHS, state) == 2 * 7
    for modality in ("visual", "audio"):
        want = from_crab_state_dict(state, modality)
        got = getattr(model, f"{modality}_connector").state_dict()
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want), modality


def test_missing_or_unreadable_file_names_it(omni, tmp_path):
    from crabzoo.paradigms.released import load_released

    model = omni[0]
    missing = tmp_path / "nowhere" / "finetune_weights.bin"
    with pytest.raises(CrabzooError, match=f"released weights {missing}: no such file"):
        load_released(model, missing)
    garbage = tmp_path / "finetune_weights.bin"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CrabzooError, match="cannot read it as a state dict with weights_only=True"):
        load_released(model, garbage)


def test_wrong_layout_names_the_file_and_what_was_expected(omni, modular, tmp_path):
    from crabzoo.paradigms.released import load_released

    crab_file = "expected Crab\\+'s finetune_weights.bin .*it is Crab's file: load it with recipes/released/crab.yaml"
    with pytest.raises(CrabzooError, match=crab_file):
        load_released(omni[0], modular[2])  # Crab's file into the thinker
    plus_file = "expected Crab's stage-2 finetune_weights.bin .*it is Crab\\+'s file: .*recipes/released/crab_plus.yaml"
    with pytest.raises(CrabzooError, match=plus_file):
        load_released(modular[0], omni[2])  # Crab+'s file into the modular model
    seg = tmp_path / "avs_finetune_weights.bin"
    torch.save({f"{PEFT}model.seg_module.text_hidden_fcs.0.0.weight": torch.zeros(2, 2),
                f"{PEFT}model.embed_tokens.weight": torch.zeros(4, 2)}, seg)
    with pytest.raises(CrabzooError, match="hold Crab's segmentation module .* the model has no mask head: use "
                                           "crabzoo.paradigms.modular.SegmentationAVLLM .*CrabSegModule"):
        load_released(modular[0], seg)  # Crab's stage 3 into a model without Crab's mask head
    state = dict(omni[3])
    dropped = "base_model.model.visual.blocks.0.mlp.up_proj"
    for key in [k for k in state if k.startswith(dropped + ".")]:
        del state[key]
    partial = tmp_path / "partial" / "finetune_weights.bin"
    partial.parent.mkdir()
    torch.save(state, partial)
    with pytest.raises(CrabzooError, match=f"released weights {partial}: .*no module '{dropped}'"):
        load_released(omni[0], partial)


@pytest.mark.slow  # 3-6 s on the shared 2-core machine (the tiny thinker generates for ks and s4)
def test_crabzoo_test_runs_the_crab_plus_recipe(omni, data_root, tmp_path, capsys):
    _, override, path, state = omni
    payload = run_test_command(CRAB_PLUS, override, path, data_root, '["ks", "s4"]', tmp_path / "run")
    (tested,) = KeepModel.models
    assert_ilora_equals(tested, CRAB_PLUS_PATHS, state)
    assert payload["stage"] == "test" and set(payload["results"]) == {"ks", "s4"}
    assert payload["protocols"] == {"s4": "crab_plus"}
    assert {t: r["n_total"] for t, r in payload["results"].items()} == expected_counts(data_root, ("ks", "s4"))
    printed = capsys.readouterr().out
    assert "| task | group | metric | value | chance | parsed / total |" in printed
    assert "Mask protocol: s4: crab_plus." in printed


def test_crabzoo_test_runs_the_crab_recipe(modular, data_root, tmp_path, capsys):
    _, override, path, state = modular
    payload = run_test_command(CRAB, override, path, data_root, '["ave"]', tmp_path / "run")
    (tested,) = KeepModel.models
    assert_ilora_equals(tested, CRAB_PATHS, state)
    assert set(payload["results"]) == {"ave"} and payload["protocols"] == {}
    assert payload["results"]["ave"]["n_total"] == expected_counts(data_root, ("ave",))["ave"]
    assert "| ave | temporal |" in capsys.readouterr().out


def test_unknown_mask_protocol_is_one_clear_error(data_root, tmp_path):
    from crabzoo.inference.loading import model_from_configs

    override = tiny_override(tmp_path, TINY_OMNI, data_root / "AVUIE_2", {"released": None, "mask_protocol": "sam"})
    with pytest.raises(CrabzooError, match="mask_protocol 'sam' is unknown: choose avsbench or crab_plus"):
        model_from_configs([CRAB_PLUS, override])
