"""Locally trained tokenizers: round trip, cache, corpus reading."""

from __future__ import annotations

import json

import pytest
from backbones_helpers import INSTRUCTIONS, TARGETS

from crabzoo.backbones import tokenizer as tokmod
from crabzoo.errors import CrabzooError

CORPUS = (INSTRUCTIONS + TARGETS) * 5


def test_round_trip_and_specials(tmp_path):
    tok = tokmod.train_tokenizer(CORPUS, vocab_size=400, cache_dir=tmp_path)
    for text in [*CORPUS[:8], "unseen wörds: 42 ✓\n\ttabs", "  two leading spaces"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")
    assert 256 < len(tok) <= 400
    # merges were learnt: a frequent word is shorter in tokens than in bytes
    assert len(tok("Please describe the events", add_special_tokens=False)["input_ids"]) < 10


def test_cached_second_call_loads_from_disk(tmp_path, monkeypatch):
    first = tokmod.train_tokenizer(CORPUS, vocab_size=400, cache_dir=tmp_path)
    entries = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1 and (entries[0] / "tokenizer.json").is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of loading the cache")

    monkeypatch.setattr(tokmod, "_train", no_training)
    second = tokmod.train_tokenizer(iter(CORPUS), vocab_size=400, cache_dir=tmp_path)
    assert second.get_vocab() == first.get_vocab()
    # another corpus or another size is another entry
    monkeypatch.undo()
    tokmod.train_tokenizer(CORPUS + ["something new"], vocab_size=400, cache_dir=tmp_path)
    tokmod.train_tokenizer(CORPUS, vocab_size=300, cache_dir=tmp_path)
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 3


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CRABZOO_CACHE", str(tmp_path / "elsewhere"))
    assert tokmod.cache_root() == tmp_path / "elsewhere" / "tokenizers"
    tokmod.train_tokenizer(CORPUS, vocab_size=320)
    assert len(list((tmp_path / "elsewhere" / "tokenizers").glob("bpe-320-*/tokenizer.json"))) == 1
    monkeypatch.delenv("CRABZOO_CACHE")
    assert str(tokmod.cache_root()).endswith(".cache/crabzoo/tokenizers")


def test_corpus_from_directory_reads_every_string(tmp_path):
    (tmp_path / "ks").mkdir()
    (tmp_path / "ks" / "train.json").write_text(json.dumps([
        {"instruction": "What action?", "output": "<answer>running</answer>", "n": 3, "video_path": "ks/v_1.mp4",
         "meta": {"options": ["a", "b"], "empty": ""}},
    ]))
    (tmp_path / "ks" / "test.json").write_text(json.dumps([{"instruction": "not read"}]))
    assert tokmod.corpus_from_directory(tmp_path) == ["What action?", "<answer>running</answer>", "a", "b"]
    with pytest.raises(CrabzooError, match="train.json"):
        tokmod.corpus_from_directory(tmp_path / "missing")


def test_empty_corpus(tmp_path):
    with pytest.raises(CrabzooError, match="empty"):
        tokmod.train_tokenizer([], cache_dir=tmp_path)


@pytest.mark.slow
def test_avsynth_tokenizer_without_data_root(tmp_path, monkeypatch):
    """``tokenizer: avsynth`` alone synthesises a small AVSynth set once; later calls load through the alias."""
    monkeypatch.setenv("CRABZOO_CACHE", str(tmp_path))
    first = tokmod.train_avsynth_tokenizer(vocab_size=512)
    aliases = list((tmp_path / "tokenizers").glob("avsynth-*-512.txt"))
    assert len(aliases) == 1
    text = "<answer>bell</answer>"
    assert first.decode(first(text, add_special_tokens=False)["input_ids"]) == text

    def no_synthesis(*args, **kwargs):
        raise AssertionError("synthesised again instead of using the cache")

    monkeypatch.setattr(tokmod, "avsynth_corpus", no_synthesis)
    assert tokmod.train_avsynth_tokenizer(vocab_size=512).get_vocab() == first.get_vocab()


def test_backbone_tokenizer_avsynth_from_corpus_dir(corpus_dir):
    from backbones_helpers import TINY_TEXT

    from crabzoo.backbones import HFCausalLM

    backbone = HFCausalLM(config={"model_type": "llama", **TINY_TEXT}, tokenizer="avsynth",
                          tokenizer_corpus=str(corpus_dir), tokenizer_vocab_size=400)
    assert backbone.model.get_input_embeddings().num_embeddings == len(backbone.tokenizer)
    assert backbone.tokenizer.eos_token == "<|im_end|>"  # ChatML's end of turn
    text = backbone.render([{"role": "user", "content": "Hi <video>"}], add_generation_prompt=True)
    ids = backbone.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids.count(backbone.placeholder_id("video")) == 1
    assert backbone.tokenizer.decode(ids) == text
