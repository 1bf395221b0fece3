"""FeatureCache: hits, misses, invalidation by every key part, concurrent writers, info/clear and the CLI."""

from __future__ import annotations

import multiprocessing as mp

import pytest
import torch
from torch import nn

from crabzoo.data.cache import FeatureCache, cached_encode
from crabzoo.data.cache import main as cache_main
from crabzoo.encoders.base import MediaFeatures, VisualEncoder


class LinearVisual(VisualEncoder):
    """A real (small) visual encoder: per-frame linear projection; ``size`` is its preprocessing setting."""

    def __init__(self, size: int = 8, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.size = size
        self.proj = nn.Linear(size, 4)

    @property
    def out_dim(self) -> int:
        return 4

    def preprocess(self, clip):
        return torch.as_tensor(clip)

    def preprocess_config(self) -> dict:
        return {"size": self.size}

    def forward(self, inputs, timestamps=None, mask=None):
        return MediaFeatures.from_tokens(self.proj(inputs).unsqueeze(2))


def test_hit_miss_and_roundtrip(tmp_path):
    cache, enc = FeatureCache(tmp_path), LinearVisual()
    key = cache.key(enc, "clip_001", policy={"frames": 10})
    assert cache.get(key) is None and not cache.contains(key)
    feats = torch.randn(10, 1, 4)
    cache.put(key, feats, timestamps=torch.arange(10.0))
    assert torch.equal(cache.get(key), feats)
    assert torch.equal(cache.get_entry(key)["timestamps"], torch.arange(10.0))
    assert cache.key(enc, "clip_001", policy={"frames": 10}) == key  # stable
    assert not list(tmp_path.rglob("*.tmp"))


def test_every_key_part_invalidates(tmp_path):
    cache, enc = FeatureCache(tmp_path), LinearVisual()
    base = cache.key(enc, "s1", {"frames": 10})
    cache.put(base, torch.ones(2))
    other_weights = LinearVisual(seed=1)
    other_pre = LinearVisual(size=8, seed=0)
    other_pre.size = 16  # same weights shape-compatible change of preprocessing only
    variants = [
        cache.key(other_weights, "s1", {"frames": 10}),  # weights fingerprint
        cache.key(other_pre, "s1", {"frames": 10}),  # preprocessing config
        cache.key(enc, "s2", {"frames": 10}),  # sample id
        cache.key(enc, "s1", {"frames": 8}),  # media policy
    ]
    assert len({base, *variants}) == 5
    assert all(cache.get(k) is None for k in variants)
    assert cache.get(base) is not None


def test_truncated_entry_is_a_miss(tmp_path):
    cache, enc = FeatureCache(tmp_path), LinearVisual()
    key = cache.key(enc, "s1")
    path = cache.put(key, torch.ones(3))
    path.write_bytes(path.read_bytes()[:10])
    assert cache.get(key) is None


def test_cached_encode_computes_only_misses(tmp_path):
    cache, enc = FeatureCache(tmp_path), LinearVisual()
    calls = []

    def compute(missing):
        calls.append(list(missing))
        return [torch.full((2,), float(i)) for i in missing]

    out = cached_encode(cache, enc, ["a", "b", "c"], compute)
    assert calls == [[0, 1, 2]] and [float(t[0]) for t in out] == [0.0, 1.0, 2.0]
    out = cached_encode(cache, enc, ["a", "x", "c"], compute)
    assert calls[-1] == [1] and [float(t[0]) for t in out] == [0.0, 1.0, 2.0]


def _writer(root: str, worker: int) -> None:
    cache, enc = FeatureCache(root), LinearVisual()
    for i in range(20):
        cache.put(cache.key(enc, f"s{i}"), torch.full((64,), float(i)))


def test_concurrent_writers_leave_only_complete_entries(tmp_path):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    cache, enc = FeatureCache(tmp_path), LinearVisual()
    assert all(torch.equal(cache.get(cache.key(enc, f"s{i}")), torch.full((64,), float(i))) for i in range(20))
    assert not list(tmp_path.rglob("*.tmp")) and cache.info()["entries"] == 20


def test_info_clear_and_cli(tmp_path, capsys):
    cache = FeatureCache(tmp_path)
    a, b = LinearVisual(), LinearVisual(seed=3)
    for i in range(3):
        cache.put(cache.key(a, f"s{i}"), torch.zeros(4))
    cache.put(cache.key(b, "s0"), torch.zeros(4))
    info = cache.info()
    assert info["entries"] == 4 and info["bytes"] > 0 and len(info["encoders"]) == 2
    assert sorted(e["entries"] for e in info["encoders"].values()) == [1, 3]
    cache_main(["info", "--root", str(tmp_path)])
    assert "4 entries" in capsys.readouterr().out
    assert cache.clear(encoder=f"LinearVisual-{cache.fingerprint(b)}") == 1
    cache_main(["clear", "--root", str(tmp_path), "--yes"])
    assert "removed 3 entries" in capsys.readouterr().out
    assert cache.info()["entries"] == 0


def test_clear_missing_root_is_a_user_error(tmp_path):
    from crabzoo.errors import CrabzooError

    with pytest.raises(CrabzooError, match="no feature cache"):
        cache_main(["clear", "--root", str(tmp_path / "nope"), "--yes"])
