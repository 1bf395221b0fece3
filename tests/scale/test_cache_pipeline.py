"""The feature cache inside the training pipeline: the processor serves hits without decoding, the paradigm
fills misses, mixed batches merge both, and a run with the cache trains exactly like one without it."""

import functools
import json
from pathlib import Path

import pytest
import torch

from crabzoo.errors import CrabzooError

ROOT = Path(__file__).resolve().parents[2]


def build(avsynth_root, cache_dir=None, **kwargs):
    from crabzoo.backbones.hf_causal_lm import HFCausalLM
    from crabzoo.connectors import MLPConnector
    from crabzoo.encoders.beats import TINY, BEATsEncoder
    from crabzoo.encoders.timm_vit import TimmViTEncoder
    from crabzoo.paradigms.base import AVLLM

    torch.manual_seed(0)
    backbone = HFCausalLM(
        config={"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                "num_attention_heads": 2, "num_key_value_heads": 1},
        tokenizer="avsynth", tokenizer_corpus=str(avsynth_root / "AVUIE_2"), tokenizer_vocab_size=300,
    )
    visual = TimmViTEncoder("vit_tiny_patch16_224", image_size=32, model_kwargs={"depth": 1, "embed_dim": 32, "num_heads": 2})
    return AVLLM(
        backbone,
        audio_encoder=BEATsEncoder(config={**TINY, "dropout": 0.1, "encoder_layerdrop": 0.5}),
        visual_encoder=visual,
        audio_connector=functools.partial(MLPConnector, pool=8),
        visual_connector=functools.partial(MLPConnector),
        feature_cache=None if cache_dir is None else str(cache_dir),
        **kwargs,
    )


def samples(avsynth_root, task="ms3", n=3):
    from crabzoo.data.avuie import read_split

    return read_split(avsynth_root, task, "train").samples[:n]


class CountingLoader:
    """A MediaLoader that counts how often media are decoded."""

    def __init__(self):
        from crabzoo.data.media import MediaLoader

        self.inner, self.calls = MediaLoader(), 0

    def __getattr__(self, name):
        self.calls += 1
        return getattr(self.inner, name)


def test_hits_skip_decoding_and_give_the_encoder_outputs(avsynth_root, tmp_path):
    model = build(avsynth_root, tmp_path / "cache").eval()
    processor = model.make_processor()
    processor.loader = CountingLoader()
    items = [processor(s) for s in samples(avsynth_root)]
    assert processor.loader.calls > 0
    assert all("cache_key" in it["media"][s] for it in items for s in ("audio", "visual"))
    batch = processor.collate(items)
    assert batch["features"] == {}
    with torch.no_grad():
        reference = model.encode_raw(batch)  # misses: encoded, then stored
    assert model.feature_cache.info()["entries"] == 2 * len(items)

    processor.loader.calls = 0
    again = [processor(s) for s in samples(avsynth_root)]
    assert processor.loader.calls == 0  # every stream hit: nothing decoded
    assert all("features" in it["media"][s] and "inputs" not in it["media"][s] for it in again for s in ("audio", "visual"))
    cached_batch = processor.collate(again)
    with torch.no_grad():
        cached = model.encode_raw(cached_batch)
    for stream in ("audio", "visual"):
        assert torch.equal(cached[stream].tokens, reference[stream].tokens)
        assert torch.equal(cached[stream].mask, reference[stream].mask)
        assert torch.equal(cached[stream].timestamps, reference[stream].timestamps)


def test_a_mixed_batch_encodes_only_its_misses(avsynth_root, tmp_path):
    model = build(avsynth_root, tmp_path / "cache").eval()
    processor = model.make_processor()
    first, second, third = samples(avsynth_root)
    with torch.no_grad():
        model.encode_raw(processor.collate([processor(first), processor(third)]))  # caches samples 1 and 3
        mixed = processor.collate([processor(s) for s in (first, second, third)])
        assert mixed["media"]["audio"]["cached"].tolist() == [True, False, True]
        assert mixed["media"]["audio"]["inputs"].shape[0] == 1
        assert mixed["media"]["audio"]["cache_keys"][0] is None and mixed["media"]["audio"]["cache_keys"][1]
        merged = model.encode_raw(mixed)
        model.feature_cache = None  # encode from the media alone, for reference
        plain = model.make_processor()
        reference = model.encode_raw(plain.collate([plain(s) for s in (first, second, third)]))
    for stream in ("audio", "visual"):
        torch.testing.assert_close(merged[stream].tokens, reference[stream].tokens)


def test_changed_encoder_or_media_never_read_stale_features(avsynth_root, tmp_path):
    from crabzoo.data.cache import FeatureCache

    model = build(avsynth_root, tmp_path / "cache").eval()
    processor = model.make_processor()
    sample = samples(avsynth_root, n=1)[0]
    with torch.no_grad():
        model.encode_raw(processor.collate([processor(sample)]))
    assert "features" in processor(sample)["media"]["audio"]
    # other weights -> other fingerprint -> a miss
    with torch.no_grad():
        model.audio_encoder.encoder.layer_norm.weight.add_(1.0)
    processor.fingerprint_encoders()  # what the paradigm does once checkpoint weights are restored
    assert "cache_key" in processor(sample)["media"]["audio"]
    assert "features" in processor(sample)["media"]["visual"]
    # a touched media file -> another key -> a miss
    fresh = FeatureCache(tmp_path / "cache")
    assert fresh.info()["entries"] == 2
    import os

    video = sample.video[0]
    st = os.stat(video)
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    try:
        assert "cache_key" in processor(sample)["media"]["visual"]
    finally:
        os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_frozen_encoders_stay_in_eval_mode_and_trained_ones_refuse_the_cache(avsynth_root, tmp_path):
    model = build(avsynth_root, tmp_path / "cache")
    model.train()
    assert model.backbone.training and not model.audio_encoder.training and not model.visual_encoder.training
    trained = build(avsynth_root, tmp_path / "cache", train_groups=("connector", "audio_encoder"))
    trained.train()
    assert trained.audio_encoder.training and not trained.visual_encoder.training
    with pytest.raises(CrabzooError, match="audio_encoder is trained"):
        trained.make_processor()


@pytest.mark.slow
def test_a_run_with_the_cache_trains_exactly_like_one_without(avsynth_root, tmp_path):
    from crabzoo.data.cache import FeatureCache
    from crabzoo.lightning_cli import run_lightning_cli

    torch.set_num_threads(1)

    def fit(run_dir, *extra):
        run_lightning_cli([
            "fit", "--config", str(ROOT / "paradigms" / "tiny" / "mlp.yaml"),
            "--config", str(ROOT / "recipes" / "avsynth" / "multitask-ilora.yaml"),
            "--data.init_args.root", str(avsynth_root), "--data.init_args.synth", "null",
            "--data.init_args.tasks", '["ms3", "ks"]', "--data.init_args.num_workers", "0",
            "--data.init_args.batch_size", "2", "--data.init_args.max_train_per_task", "4",
            "--data.init_args.max_val_per_task", "2",
            "--model.init_args.backbone.init_args.tokenizer_corpus", str(avsynth_root / "AVUIE_2"),
            "--model.init_args.max_new_tokens", "4", "--seed_everything", "3",
            "--trainer.max_epochs", "2", "--trainer.max_steps", "-1", "--trainer.log_every_n_steps", "1",
            "--trainer.check_val_every_n_epoch", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(run_dir), *extra,
        ])
        (version,) = run_dir.glob("version_*")
        rows = (version / "metrics.csv").read_text().splitlines()
        header = rows[0].split(",")
        col = header.index("train/loss")
        return [float(r.split(",")[col]) for r in rows[1:] if r.split(",")[col]], json.loads((version / "results.json").read_text())

    plain_loss, plain_results = fit(tmp_path / "plain")
    cache = tmp_path / "features"
    cached_loss, cached_results = fit(tmp_path / "cached", "--model.init_args.feature_cache", str(cache))
    from crabzoo.data.avuie import read_split

    used = sum(min(len(read_split(avsynth_root, t, split).samples), cap) for t in ("ms3", "ks") for split, cap in (("train", 4), ("test", 2)))
    assert len(plain_loss) >= 4
    assert cached_loss == plain_loss  # every step of both epochs, bit for bit
    assert cached_results["results"] == plain_results["results"]
    assert FeatureCache(cache).info()["entries"] == used * 2  # each sample's two streams, stored once
