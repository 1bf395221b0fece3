"""Feature cache on vs off, measured through the training pipeline, side by side.

For each model (``tiny``: the tiny modular MLP paradigm of ``paradigms/tiny/mlp.yaml`` with the I-LoRA recipe's
adapter; ``full``: the same with full-width encoders, CLIP ViT-L/14 + BEATs iter3+, random init, and a tiny LLM)
and 3 epochs over the same AVSynth samples (generated into a temporary folder), every batch goes through the
real pipeline: :class:`~crabzoo.data.collate.Processor` per sample, ``Processor.collate``, then a training step
of :class:`~crabzoo.paradigms.base.AVLLM` (forward, whose ``encode_raw`` encodes the misses and writes them to
the cache, backward, optimizer step). It times

* **features per batch**: the processor for each sample + collate + ``encode_raw`` (under ``torch.no_grad``;
  the encoders are frozen, so this is what the forward does anyway). Off: decode + crop + preprocess + encode.
  On: a cache read from epoch 2 (epoch 1 computes and writes the entries);
* **the whole epoch**: the same plus the rest of the training step, identical in both modes.

Off and on run the same model (the cache never changes what is trained) and alternate within every epoch
(off/on, then on/off), so machine noise hits both alike.

Usage::

    python benchmarks/cache.py --threads 1                  # tiny: 8 ks/ave samples, batch 2; full: 2 s4 samples, batch 1
    python benchmarks/cache.py --pairs tiny --samples 16 --batch 4
    python benchmarks/cache.py --pairs full --tasks ks ave  # 10 frames per sample: about 80 s each per epoch uncached
"""

from __future__ import annotations

import argparse
import functools
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

DEFAULTS = {
    "tiny": {"samples": 8, "batch": 2, "tasks": ["ks", "ave"]},
    "full": {"samples": 2, "batch": 1, "tasks": ["s4"]},
}
"""Samples, batch size and tasks per model when not given (ViT-L/14 takes seconds per frame on a CPU, so the
full pair defaults to an image task: one frame per sample)."""

Row = tuple[float, float]
"""One epoch of one mode: (features seconds per batch, epoch seconds)."""

VIT_L14 = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
           "image_size": 224, "patch_size": 14}
"""CLIP ViT-L/14 at 224 px (the vision tower Crab uses), as ``CLIPVisionConfig`` fields."""


def make_samples(root: Path, needs: dict[str, int]) -> dict[str, list[Any]]:
    """Generate AVSynth clips (every task that ``needs`` names, enough train samples for each)."""
    from crabzoo.data.avsynth import synthesize
    from crabzoo.data.avuie import read_split

    per_task = math.ceil(max(needs.values()) / 0.8) + 1  # the last 20 % of each task's clips are its test split
    synthesize(root, clips=len(needs) * per_task, tasks=sorted(needs), seed=0, workers=1, soundtrack=False)
    return {task: read_split(root, task, "train").samples for task in needs}


def pick(by_task: dict[str, list[Any]], tasks: list[str], n: int) -> list[Any]:
    """``n`` train samples alternating between ``tasks``."""
    mixed = [s for row in zip(*(by_task[t] for t in tasks)) for s in row]
    if len(mixed) < n:
        raise SystemExit(f"only {len(mixed)} train samples of {tasks} were generated, {n} asked")
    return mixed[:n]


def build_model(kind: str, corpus: Path, cache_dir: Path, adapter: bool) -> Any:
    """The paradigm of ``paradigms/tiny/mlp.yaml`` (``tiny``) or the same with full-width encoders (``full``)."""
    from crabzoo.adapters import ILoRA
    from crabzoo.backbones.hf_causal_lm import HFCausalLM
    from crabzoo.connectors import MLPConnector
    from crabzoo.encoders.beats import TINY, BEATsEncoder
    from crabzoo.encoders.clip import HFClipEncoder
    from crabzoo.encoders.timm_vit import TimmViTEncoder

    torch.manual_seed(0)
    backbone = HFCausalLM(
        config={"model_type": "llama", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048},
        tokenizer="avsynth", tokenizer_corpus=str(corpus), tokenizer_vocab_size=1024,
    )
    if kind == "tiny":
        visual = TimmViTEncoder("vit_tiny_patch16_224", image_size=64, model_kwargs={"depth": 2, "embed_dim": 64, "num_heads": 2})
        audio = BEATsEncoder(config=TINY)
    else:
        visual = HFClipEncoder(config=VIT_L14)
        audio = BEATsEncoder()  # iter3+ AS2M width (12 layers, 768) by default
    return timed_paradigm()(
        backbone,
        audio_encoder=audio,
        visual_encoder=visual,
        audio_connector=functools.partial(MLPConnector, pool=8),
        visual_connector=functools.partial(MLPConnector, pool=2, pool_mode="2d"),
        adapter=ILoRA(groups=["llm"], n_heads=3, rank=8, alpha=16, dropout=0.05) if adapter else None,
        train_groups=("llm", "connector"),
        feature_cache=str(cache_dir),
    )


@functools.cache
def timed_paradigm() -> type:
    """:class:`~crabzoo.paradigms.base.AVLLM` with a timed ``encode_raw`` (built on first use: the paradigm
    imports lightning, which ``--help`` should not wait for)."""
    from crabzoo.paradigms.base import AVLLM

    class Timed(AVLLM):
        """AVLLM whose ``encode_raw`` (encoding + merging cached rows + cache writes) is timed."""

        encode_seconds: float = 0.0

        def encode_raw(self, batch: dict[str, Any]) -> dict[str, Any]:
            start = time.perf_counter()
            with torch.no_grad():  # frozen encoders: no graph either way
                out = super().encode_raw(batch)
            self.encode_seconds += time.perf_counter() - start
            return out

    return Timed


def run_epoch(model: Any, processor: Any, samples: list[Any], batch: int, optimizer: torch.optim.Optimizer) -> Row:
    """One training epoch; returns (features seconds per batch, epoch seconds)."""
    model.train()
    features = whole = 0.0
    n_batches = 0
    for start in range(0, len(samples), batch):
        model.encode_seconds = 0.0
        t0 = time.perf_counter()
        items = [processor(s) for s in samples[start : start + batch]]
        data = processor.collate(items)
        t1 = time.perf_counter()
        loss = model(data)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        features += (t1 - t0) + model.encode_seconds
        whole += t2 - t0
        n_batches += 1
    return features / n_batches, whole


def run_pair(
    kind: str, samples: list[Any], batch: int, epochs: int, root: Path, adapter: bool, report: Callable[[int, Row, Row], None]
) -> dict[str, Any]:
    """Train ``kind`` for ``epochs`` epochs with the cache off and on (alternating within each epoch).

    ``report(epoch, off, on)`` is called after each epoch; returns the rows, cache info and parameter counts.
    """
    model = build_model(kind, root / "AVUIE_2", root / f"features-{kind}", adapter)
    cache = model.feature_cache
    model.feature_cache = None
    off = model.make_processor()  # no cache: decode + preprocess every epoch
    model.feature_cache = cache
    on = model.make_processor()  # encoders fingerprinted here, once, as before a fit
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.0)
    rows = []
    for epoch in range(epochs):
        row = {}
        for mode in ("off", "on") if epoch % 2 == 0 else ("on", "off"):
            row[mode] = run_epoch(model, off if mode == "off" else on, samples, batch, optimizer)
        rows.append((row["off"], row["on"]))
        report(epoch + 1, row["off"], row["on"])
    encoders = [model.visual_encoder, model.audio_encoder]
    return {
        "rows": rows,
        "info": cache.info(),
        "encoder_params": sum(p.numel() for e in encoders for p in e.parameters()),
        "trainable": sum(p.numel() for p in params),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", nargs="+", default=["tiny", "full"], choices=["tiny", "full"], help="models to measure")
    parser.add_argument("--samples", type=int, default=None, help="samples per epoch (default: tiny 8, full 2)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: tiny 2, full 1)")
    parser.add_argument("--tasks", nargs="+", default=None,
                        help="AVSynth tasks the samples alternate between (default: tiny ks ave, 10 frames + 10 s audio "
                             "each; full s4, one image + 5 s audio each)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--no-adapter", action="store_true", help="train the LLM and connectors without I-LoRA")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (epoch 1 fills the cache)")
    torch.set_num_threads(args.threads)
    runs = {
        k: {"samples": args.samples or DEFAULTS[k]["samples"], "batch": args.batch or DEFAULTS[k]["batch"],
            "tasks": args.tasks or DEFAULTS[k]["tasks"]}
        for k in args.pairs
    }
    needs: dict[str, int] = {}
    for r in runs.values():
        for task in r["tasks"]:
            needs[task] = max(needs.get(task, 0), math.ceil(r["samples"] / len(r["tasks"])))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        by_task = make_samples(root, needs)
        print(f"{args.epochs} epochs, CPU threads {args.threads}, adapter {'none' if args.no_adapter else 'I-LoRA'}")
        print(f"{'model':<5} {'tasks':<7} {'samples':>7} {'batch':>5} {'epoch':>5} {'feat/batch off':>15} {'feat/batch on':>14} "
              f"{'feat x':>7} {'epoch off':>10} {'epoch on':>9} {'epoch x':>8}", flush=True)
        summaries = []
        for kind, r in runs.items():
            n, batch, tasks = r["samples"], r["batch"], r["tasks"]
            head = f"{kind:<5} {'+'.join(tasks):<7} {n:>7} {batch:>5}"

            def report(epoch: int, off: Row, on: Row, head: str = head) -> None:
                print(f"{head} {epoch:>5} {off[0] * 1e3:>13.1f}ms {on[0] * 1e3:>12.1f}ms {off[0] / on[0]:>6.1f}x "
                      f"{off[1]:>9.2f}s {on[1]:>8.2f}s {off[1] / on[1]:>7.2f}x", flush=True)

            info = run_pair(kind, pick(by_task, tasks, n), batch, args.epochs, root, not args.no_adapter, report)
            later = info["rows"][1:]
            feat = sum(o[0] for o, _ in later) / sum(c[0] for _, c in later)
            whole = sum(o[1] for o, _ in later) / sum(c[1] for _, c in later)
            cache = info["info"]
            summaries.append(
                f"{kind}: encoders {info['encoder_params'] / 1e6:.1f}M params (trainable {info['trainable'] / 1e6:.2f}M); "
                f"epochs 2-{args.epochs}: features {feat:.1f}x faster with the cache "
                f"({'meets' if feat >= 5 else 'MISSES'} the >= 5x target), whole epoch {whole:.2f}x; "
                f"cache {cache['entries']} entries, {cache['bytes'] / 2**20:.1f} MiB"
            )
        print()
        print("\n".join(summaries))


if __name__ == "__main__":
    main()
