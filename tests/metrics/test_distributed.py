"""State semantics: metrics updated on two halves and merged equal the one-shot result."""

from __future__ import annotations

import random

import pytest
import torch

from crabzoo.metrics import (
    ARIGMetric,
    AVESegmentAccuracy,
    AVSBenchMetric,
    AVVPMetric,
    CaptionMetric,
    ClassificationMetric,
    MusicAVQAMetric,
    RefAVSNullMetric,
    UnAVGroundingMetric,
)


def _events(rng: random.Random, labels: list[str]) -> list[tuple[str, int, int]]:
    out = []
    for _ in range(rng.randint(0, 3)):
        s = rng.randint(0, 9)
        out.append((rng.choice(labels), s, rng.randint(s + 1, 10)))
    return out


def _data(name: str, n: int = 12):
    rng = random.Random(name)
    gen = torch.Generator().manual_seed(0)
    words = ["a", "b", "c", "dog", "cat"]
    labs = ["x", "y", "z"]
    preds, targets = [], []
    for i in range(n):
        unparsed = i % 5 == 4
        if name == "classification":
            p, t = rng.choice(labs), rng.choice(labs)
        elif name == "avqa":
            t = {"answer": rng.choice(labs), "type": rng.choice(['["Audio", "Counting"]', '["Visual", "Location"]'])}
            p = rng.choice(labs)
        elif name == "ave":
            p, t = [rng.choice(labs) for _ in range(10)], [rng.choice(labs) for _ in range(10)]
        elif name == "avvp":
            p = {"audio": _events(rng, labs), "visual": _events(rng, labs)}
            t = {"audio": _events(rng, labs), "visual": _events(rng, labs)}
        elif name in ("avsbench", "refavs"):
            p = torch.rand(2, 8, 8, generator=gen)
            t = (torch.rand(2, 8, 8, generator=gen) > 0.6).float()
        elif name == "arig":
            x, y = rng.uniform(0, 5), rng.uniform(0, 5)
            p, t = (x, y, x + 5, y + 5), (2, 2, 7, 7)
        elif name == "unav":
            p, t = _events(rng, labs), _events(rng, labs)
        else:
            p = " ".join(rng.choice(words) for _ in range(rng.randint(1, 6)))
            t = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 6))) for _ in range(2)]
        preds.append(None if unparsed else p)
        targets.append(t)
    return preds, targets


FACTORIES = {
    "classification": ClassificationMetric,
    "avqa": MusicAVQAMetric,
    "ave": AVESegmentAccuracy,
    "avvp": AVVPMetric,
    "avsbench": AVSBenchMetric,
    "refavs": RefAVSNullMetric,
    "arig": ARIGMetric,
    "unav": UnAVGroundingMetric,
    "captioning": CaptionMetric,
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_merged_halves_equal_one_shot(name):
    preds, targets = _data(name)
    whole, first, second = (FACTORIES[name]() for _ in range(3))
    whole.update(preds, targets)
    first.update(preds[:5], targets[:5])
    second.update(preds[5:], targets[5:])
    first.merge_state(second)
    expected, merged = whole.compute(), first.compute()
    assert set(expected) == set(merged)
    for key in expected:
        assert merged[key].item() == pytest.approx(expected[key].item(), abs=1e-12), key
    assert expected["n_total"].item() == 12 and expected["n_parsed"].item() == 10
    assert whole.primary in expected
    assert whole.primary in whole.higher_is_better
    if name != "avqa":  # MUSIC-AVQA reports only the question types present
        assert set(whole.higher_is_better) == set(expected) - {"n_total", "n_parsed"}


@pytest.mark.parametrize("name", ["avvp", "captioning"])
def test_reset_clears_state(name):
    preds, targets = _data(name)
    m = FACTORIES[name]()
    m.update(preds, targets)
    before = m.compute()
    m.reset()
    m.update(preds, targets)
    after = m.compute()
    assert all(after[k].item() == pytest.approx(before[k].item()) for k in before)


SYNCED = ("avvp", "captioning", "classification", "arig")


def _worker(rank: int, world: int, port: int, queue) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    results = {}
    for name in SYNCED:
        preds, targets = _data(name)
        metric = FACTORIES[name]()
        half = slice(0, 5) if rank == 0 else slice(5, None)  # unequal shares, as the last batch can be
        metric.update(preds[half], targets[half])
        results[name] = {k: v.item() for k, v in metric.compute().items()}  # compute() syncs the states
    if rank == 0:
        queue.put(results)
    dist.destroy_process_group()


@pytest.mark.slow
def test_sync_across_two_processes():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    got = queue.get(timeout=300)
    for p in procs:
        p.join(timeout=60)
    for name in SYNCED:
        preds, targets = _data(name)
        whole = FACTORIES[name]()
        whole.update(preds, targets)
        for key, value in whole.compute().items():
            assert got[name][key] == pytest.approx(value.item(), abs=1e-12), (name, key)
