"""``crabzoo export`` round trips on tiny LoRA and I-LoRA checkpoints fit through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from export_helpers import MAX_NEW_TOKENS, RECIPES, ROOT, fit_tiny, prompt_logits, run_main, samples, with_random_adapter

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ckpts(avsynth_root, tmp_path_factory) -> dict[str, Path]:
    """``lora`` / ``ilora`` -> a tiny checkpoint whose adapter up-projections are random (non-zero)."""
    out = {}
    for name in ("lora", "ilora"):
        ckpt = fit_tiny(avsynth_root, tmp_path_factory.mktemp(f"run-{name}"), name)
        out[name] = with_random_adapter(ckpt)
    return out


@pytest.fixture(scope="module")
def exports(ckpts, tmp_path_factory) -> dict[str, tuple[Path, object]]:
    """``lora`` / ``ilora`` -> (export folder, what ``crabzoo export`` printed)."""
    out = {}
    for name, ckpt in ckpts.items():
        folder = tmp_path_factory.mktemp(f"export-{name}") / "out"
        result = run_main(["export", "--ckpt_path", str(ckpt), "--out", str(folder)])
        assert result.code == 0, result.err
        out[name] = (folder, result)
    return out


@pytest.fixture(scope="module")
def models(ckpts, exports):
    """``lora`` / ``ilora`` -> (model of the checkpoint, model of the export)."""
    from crabzoo.export import load_exported
    from crabzoo.inference.loading import load_trained

    return {name: (load_trained(str(ckpts[name])), load_exported(exports[name][0])) for name in ckpts}


def hf_llm(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder / "llm").eval(), AutoTokenizer.from_pretrained(folder / "llm")


def text_logits(backbone, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return backbone(backbone.embed(ids), torch.ones_like(ids))


CHAT = [{"role": "user", "content": "This is an audio:\n<audio_start><audio><audio_end>\nWhat do you hear?"}]


@pytest.mark.parametrize("name", ["lora", "ilora"])
def test_export_gives_the_checkpoints_generations_and_logits(models, avsynth_root, name):
    from crabzoo.inference.session import Answerer

    trained, exported = models[name]
    a, b = Answerer(trained), Answerer(exported)
    want = a.generate(samples(a, avsynth_root), MAX_NEW_TOKENS)
    got = b.generate(samples(b, avsynth_root), MAX_NEW_TOKENS)
    assert got == want
    assert len(set(want)) > 1 and all(w.strip() for w in want)  # varied answers: a real comparison
    logits_a = prompt_logits(trained, a.collate(samples(a, avsynth_root)))
    logits_b = prompt_logits(exported, b.collate(samples(b, avsynth_root)))
    assert logits_a.shape == logits_b.shape
    torch.testing.assert_close(logits_b, logits_a, rtol=0, atol=1e-5)
    assert exported.task_names == trained.task_names == ["ks", "a2v"]


def test_lora_folder_listing_and_manifest(exports):
    folder, result = exports["lora"]
    files = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert {
        "crabzoo_export.json", "connectors.safetensors", "encoders/audio_encoder.safetensors",
        "encoders/visual_encoder.safetensors", "llm/config.json", "llm/model.safetensors",
        "llm/tokenizer.json", "llm/tokenizer_config.json",
    } <= files
    assert not any(f.startswith(("adapter/", "official/")) for f in files)
    for f in files:  # every file is listed with its size, and the reload line is printed
        assert f"  {f} " in result.out
    assert "LoRA merged into the LLM" in result.out and "load_exported(" in result.out
    manifest = json.loads((folder / "crabzoo_export.json").read_text())
    assert manifest["adapter"] == "lora-merged" and manifest["model"]["init_args"]["adapter"] is None
    backbone = manifest["model"]["init_args"]["backbone"]["init_args"]
    assert backbone["name_or_path"] == "llm" and "config" not in backbone and "tokenizer_corpus" not in backbone
    assert not list(folder.parent.glob(".out.*"))  # no temporary folder left behind


def test_merged_weights_are_base_plus_scaled_update(ckpts, exports):
    from safetensors.torch import load_file

    state = torch.load(ckpts["lora"], map_location="cpu", weights_only=True)["state_dict"]
    llm = load_file(str(exports["lora"][0] / "llm" / "model.safetensors"))
    assert not any("lora" in k or "base_layer" in k for k in llm)
    adapter = yaml.safe_load(RECIPES["lora"].read_text())["model"]["init_args"]["adapter"]["init_args"]
    scale = adapter["alpha"] / adapter["rank"]
    n = 0
    for key, base in state.items():
        if not key.endswith(".base_layer.weight"):
            continue
        stem = key[: -len(".base_layer.weight")]
        a, b = state[f"{stem}.lora_A.default.weight"], state[f"{stem}.lora_B.default.weight"]
        want = base + scale * b @ a
        got = llm[stem.removeprefix("backbone.model.") + ".weight"]
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        assert (got - base).abs().max() > 1e-3
        n += 1
    assert n == 2 * 7  # two layers, seven projections


def test_plain_transformers_loads_the_merged_llm(models, exports):
    trained, exported = models["lora"]
    hf, tok = hf_llm(exports["lora"][0])
    ours = trained.backbone.tokenizer
    assert len(tok) == len(ours) == hf.get_input_embeddings().num_embeddings
    for token in ("<video>", "<audio>", "<image>", "<video_start>", "<audio_end>", "<|im_end|>"):
        assert tok.convert_tokens_to_ids(token) == ours.convert_tokens_to_ids(token)
    text = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert text == trained.backbone.render(CHAT, add_generation_prompt=True)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    assert ids.shape[1] > 8 and ours.convert_tokens_to_ids("<audio>") in ids[0].tolist()
    # placeholder rows of the embedding table survive (they are seeded rows of the trained model)
    placeholder = ours.convert_tokens_to_ids("<audio>")
    assert torch.equal(hf.get_input_embeddings().weight[placeholder], trained.backbone.embed(torch.tensor([placeholder]))[0])
    with torch.no_grad():
        plain = hf(input_ids=ids).logits
    torch.testing.assert_close(plain, text_logits(trained.backbone, ids), rtol=0, atol=1e-5)
    torch.testing.assert_close(plain, text_logits(exported.backbone, ids), rtol=0, atol=0)


def test_ilora_folder_has_base_llm_and_both_adapter_formats(models, exports):
    folder, result = exports["ilora"]
    trained, exported = models["ilora"]
    assert "I-LoRA beside the base LLM" in result.out and "official I-LoRA layout: crab" in result.out
    manifest = json.loads((folder / "crabzoo_export.json").read_text())
    assert manifest["adapter"] == "ilora" and manifest["official"]["prefixes"] == {"llm": "base_model."}
    assert manifest["model"]["init_args"]["adapter"]["init_args"]["n_heads"] == 3
    # llm/ is the base model: plain transformers equals the crabzoo model with its I-LoRA branch switched off
    hf, tok = hf_llm(folder)
    text = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        plain = hf(input_ids=ids).logits
    adapted = text_logits(trained.backbone, ids)
    assert (plain - adapted).abs().max() > 1e-3  # the adapter changes the outputs
    saved = {name: layer.lora_B.detach().clone() for name, layer in trained.adapter.layers.items()}
    try:
        for layer in trained.adapter.layers.values():
            layer.lora_B.data.zero_()
        torch.testing.assert_close(plain, text_logits(trained.backbone, ids), rtol=0, atol=1e-5)
    finally:
        for name, layer in trained.adapter.layers.items():
            layer.lora_B.data.copy_(saved[name])
    # crabzoo's adapter checkpoint holds exactly the trained adapter
    from safetensors.torch import load_file

    own = load_file(str(folder / "adapter" / "adapter.safetensors"))
    want = trained.adapter.adapter_state_dict()
    assert set(own) == set(want) and all(torch.equal(own[k], want[k]) for k in want)


def test_official_file_reimports_to_identical_tensors(models, exports):
    from safetensors.torch import load_file

    from crabzoo.adapters.interop import import_official
    from crabzoo.export import load_exported

    folder = exports["ilora"][0]
    trained, _ = models["ilora"]
    official = load_file(str(folder / "official" / "adapter_model.safetensors"))
    path = "base_model.model.model.layers.1.self_attn.q_proj"
    assert {f"{path}.lora_A.weight", f"{path}.lora_B0.weight", f"{path}.lora_B2.weight", f"{path}.lora_route.weight"} <= set(official)
    assert len(official) == 2 * 7 * (1 + 3 + 1)
    info = json.loads((folder / "official" / "official.json").read_text())
    assert (info["layout"], info["n_heads"], info["rank"], info["alpha"]) == ("crab", 3, 8, 16.0)
    want = trained.adapter.adapter_state_dict()
    for prefixes in (info["prefixes"], None):  # the recorded prefixes, and the importer's own suffix matching
        fresh = load_exported(folder)
        with torch.no_grad():
            for p in fresh.adapter.trainable_parameters():
                p.zero_()
        mapping = import_official(fresh.adapter, folder / "official", prefixes)
        assert len(mapping) == 14 and mapping["llm.model.model.layers.1.self_attn.q_proj"] == path
        got = fresh.adapter.adapter_state_dict()
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


def one_line_error(result, *needles: str) -> None:
    assert result.code == 2, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crabzoo export: error: "), result.err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_checkpoint_is_one_line(tmp_path):
    result = run_main(["export", "--ckpt_path", str(tmp_path / "nope.ckpt"), "--out", str(tmp_path / "out")])
    one_line_error(result, "nope.ckpt", "not found")
    assert not (tmp_path / "out").exists()


def test_out_dir_not_empty_is_one_line(ckpts, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run_main(["export", "--ckpt_path", str(ckpts["lora"]), "--out", str(out)])
    one_line_error(result, str(out), "not empty")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_checkpoint_of_another_paradigm_is_one_line(ckpts, avsynth_root, tmp_path):
    override = tmp_path / "corpus.yaml"
    corpus = {"backbone": {"init_args": {"tokenizer_corpus": str(avsynth_root / "AVUIE_2")}}}
    override.write_text(yaml.safe_dump({"model": {"init_args": corpus}}))
    args = ["export", "--config", str(ROOT / "paradigms" / "tiny" / "stc.yaml"), "--config", str(RECIPES["lora"]),
            "--config", str(override), "--ckpt_path", str(ckpts["lora"]), "--out", str(tmp_path / "out")]
    one_line_error(run_main(args), "adapted.ckpt", "another paradigm or configuration")
    assert not (tmp_path / "out").exists()


def test_omni_ilora_exports_in_the_crab_plus_layout(avsynth_root, tmp_path):
    """The tiny Qwen2.5-Omni thinker with I-LoRA on its three towers (the Crab+ placement)."""
    from safetensors.torch import load_file

    from crabzoo.adapters.interop import import_official
    from crabzoo.export import export_model, load_exported
    from crabzoo.export.config import tree_from_configs
    from crabzoo.inference.loading import model_from_configs

    adapter = {"class_path": "crabzoo.adapters.ILoRA",
               "init_args": {"groups": ["llm", "audio_encoder", "visual_encoder"], "n_heads": 3, "rank": 4, "alpha": 8}}
    corpus = {"backbone": {"init_args": {"tokenizer_corpus": str(avsynth_root / "AVUIE_2")}}, "adapter": adapter}
    override = tmp_path / "omni-ilora.yaml"
    override.write_text(yaml.safe_dump({"model": {"init_args": corpus}}))
    configs = [ROOT / "paradigms" / "tiny" / "omni.yaml", override]
    torch.manual_seed(0)
    model, _ = model_from_configs(configs)
    with torch.no_grad():
        for p in model.adapter.trainable_parameters():
            p.normal_(0, 0.05)
    summary = export_model(model, tmp_path / "out", tree_from_configs(configs))
    assert summary.official == "crab_plus"
    folder = tmp_path / "out"
    official = load_file(str(folder / "official" / "adapter_model.safetensors"))
    for path in ("thinker.base_model.model.model.layers.1.self_attn.q_proj",
                 "thinker.base_model.model.audio_tower.layers.0.self_attn.v_proj",
                 "thinker.base_model.model.visual.blocks.1.mlp.gate_proj"):
        assert {f"{path}.lora_A.weight", f"{path}.lora_B2.weight", f"{path}.lora_route.weight"} <= set(official), path
    exported = load_exported(folder)
    want, got = model.state_dict(), exported.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    with torch.no_grad():
        for p in exported.adapter.trainable_parameters():
            p.zero_()
    prefixes = json.loads((folder / "official" / "official.json").read_text())["prefixes"]
    mapping = import_official(exported.adapter, folder / "official", prefixes)
    assert len(mapping) == len(model.adapter.layers) == 2 * 7 + 2 * 3 + 2 * 3
    ours = exported.adapter.adapter_state_dict()
    assert all(torch.equal(ours[k], v) for k, v in model.adapter.adapter_state_dict().items())


def test_referenced_encoders_are_left_out_and_rebuilt_from_their_configuration(ckpts, models, tmp_path):
    from crabzoo.export import load_exported

    out = tmp_path / "out"
    result = run_main(["export", "--ckpt_path", str(ckpts["ilora"]), "--out", str(out), "--encoders", "reference"])
    assert result.code == 0, result.err
    assert "audio_encoder: reference, visual_encoder: reference" in result.out
    assert not (out / "encoders").exists()
    manifest = json.loads((out / "crabzoo_export.json").read_text())
    assert manifest["encoders"]["audio_encoder"] == {"mode": "reference", "file": None}
    exported, trained = load_exported(out), models["ilora"][0]
    assert type(exported.audio_encoder) is type(trained.audio_encoder)
    want, got = trained.state_dict(), exported.state_dict()
    assert set(got) == set(want)
    for key in want:  # everything but the (randomly initialised, frozen) encoders comes from the folder
        if not key.startswith(("audio_encoder.", "visual_encoder.")):
            assert torch.equal(got[key], want[key]), key
