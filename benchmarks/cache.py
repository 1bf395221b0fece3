"""Feature cache on vs off, measured side by side: decode + preprocess + encode vs a cache read.

For each encoder pair (``tiny``: the tiny paradigm's encoders; ``full``: CLIP ViT-L/14 + BEATs iter3+ at full
width, random init) and 3 epochs over the same clips (real MP4 video + WAV audio written first), it times

* producing one batch of encoder features: off = decode + crop + preprocess + encode, on = cache read (epoch 1
  computes and writes the entries);
* the whole epoch: features + one training step of a tiny LLaMA on them (connector + LLM forward/backward), the
  same in both modes.

Usage::

    python benchmarks/cache.py                       # both pairs, 4 clips of 4 frames, batch 2
    python benchmarks/cache.py --pairs tiny --clips 8 --frames 10
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


def make_media(root: Path, n: int, seconds: int, fps: int = 4, size: int = 96) -> list[tuple[Path, Path]]:
    from crabzoo.data.avsynth.render_video import write_audio, write_video

    rng = np.random.default_rng(0)
    pairs = []
    for i in range(n):
        frames = rng.integers(0, 255, (seconds * fps, size, size, 3), dtype=np.uint8)
        audio = (0.1 * rng.standard_normal(seconds * 16000)).astype(np.float32)
        video, wav = root / f"clip{i}.mp4", root / f"clip{i}.wav"
        write_video(video, frames, fps, None, 16000)
        write_audio(wav, audio, 16000)
        pairs.append((video, wav))
    return pairs


def build_encoders(kind: str) -> tuple[nn.Module, nn.Module]:
    from crabzoo.encoders.beats import TINY, BEATsEncoder
    from crabzoo.encoders.clip import HFClipEncoder

    torch.manual_seed(0)
    if kind == "tiny":
        clip = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=56, patch_size=14)
        return HFClipEncoder(config=clip), BEATsEncoder(config=TINY)
    vit_l14 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224, patch_size=14)
    return HFClipEncoder(config=vit_l14), BEATsEncoder()  # BEATs iter3+ AS2M width by default


class Features:
    """Decode + preprocess + encode one batch, with or without the cache."""

    def __init__(self, visual: nn.Module, audio: nn.Module, frames: int, seconds: int) -> None:
        from crabzoo.data.media import MediaLoader

        self.visual, self.audio, self.frames, self.seconds = visual, audio, frames, seconds
        self.loader = MediaLoader()

    def compute(self, clips: list[tuple[Path, Path]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        from crabzoo.data.schema import AudioClip, VisualClip

        pix, fb = [], []
        for video, wav in clips:
            frames, times = self.loader.read_video_frames(video, num_frames=self.frames)
            pix.append(self.visual.preprocess(VisualClip(frames, times)))
            wave = self.loader.read_audio(wav)[: self.seconds * 16000]
            segs = wave.reshape(self.seconds, 16000)
            fb.append(self.audio.preprocess(AudioClip(segs, 16000, np.arange(self.seconds, dtype=float))))
        with torch.inference_mode():
            v = self.visual(torch.stack(pix)).tokens
            a = self.audio(torch.stack(fb)).tokens
        return list(v), list(a)


def train_step(llm: nn.Module, proj: nn.Module, feats: list[torch.Tensor], opt: torch.optim.Optimizer) -> None:
    x = torch.stack([proj(f.flatten(0, 1).mean(0, keepdim=True)) for f in feats])  # (B, 1, H)
    ids = torch.randint(0, 64, (x.shape[0], 16))
    emb = torch.cat([x, llm.get_input_embeddings()(ids)], 1)
    logits = llm(inputs_embeds=emb, use_cache=False).logits[:, 1:-1]
    loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    loss.backward()
    opt.step()
    opt.zero_grad()


def run_pair(kind: str, clips: list[tuple[Path, Path]], frames: int, seconds: int, batch: int, epochs: int, root: Path) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    from crabzoo.data.cache import FeatureCache

    visual, audio = build_encoders(kind)
    feats = Features(visual, audio, frames, seconds)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4))
    proj_v, proj_a = nn.Linear(visual.out_dim, 64), nn.Linear(audio.out_dim, 64)
    opt = torch.optim.AdamW([*proj_v.parameters(), *proj_a.parameters(), *llm.parameters()], lr=1e-4)
    cache = FeatureCache(root / f"cache-{kind}")
    policy = {"frames": frames, "audio_seconds": seconds}
    rows = {"off": [], "on": []}
    for epoch in range(epochs):
        for mode in ("off", "on"):
            feat_t = epoch_t = 0.0
            for start in range(0, len(clips), batch):
                part = clips[start : start + batch]
                ids = [p[0].stem for p in part]
                t0 = time.perf_counter()
                if mode == "off":
                    v, a = feats.compute(part)
                else:
                    vk = [cache.key(visual, i, policy) for i in ids]
                    ak = [cache.key(audio, i, policy) for i in ids]
                    v, a = [cache.get(k) for k in vk], [cache.get(k) for k in ak]
                    if any(t is None for t in v + a):
                        v, a = feats.compute(part)
                        for k, t in zip(vk + ak, v + a):
                            cache.put(k, t)
                t1 = time.perf_counter()
                train_step(llm, proj_v, v, opt)
                train_step(llm, proj_a, a, opt)
                t2 = time.perf_counter()
                feat_t += t1 - t0
                epoch_t += t2 - t0
            n_batches = -(-len(clips) // batch)
            rows[mode].append((feat_t / n_batches, epoch_t))
    return {"rows": rows, "bytes": cache.info()["bytes"], "params": sum(p.numel() for p in visual.parameters()) + sum(p.numel() for p in audio.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", nargs="+", default=["tiny", "full"], choices=["tiny", "full"])
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clips = make_media(root, args.clips, args.seconds)
        print(f"{args.clips} clips ({args.frames} frames + {args.seconds} s audio), batch {args.batch}, {args.epochs} epochs, CPU threads {args.threads}")
        print(f"{'pair':<6} {'encoder params':>14} {'epoch':>5} {'feat/batch off':>15} {'feat/batch on':>14} {'feat ×':>8} {'epoch off':>10} {'epoch on':>9} {'epoch ×':>8}")
        for kind in args.pairs:
            r = run_pair(kind, clips, args.frames, args.seconds, args.batch, args.epochs, root)
            for e, (off, on) in enumerate(zip(r["rows"]["off"], r["rows"]["on"])):
                print(
                    f"{kind:<6} {r['params'] / 1e6:>13.1f}M {e + 1:>5} {off[0] * 1e3:>13.1f}ms {on[0] * 1e3:>12.1f}ms "
                    f"{off[0] / on[0]:>7.1f}x {off[1]:>9.2f}s {on[1]:>8.2f}s {off[1] / on[1]:>7.2f}x"
                )
            later = list(zip(r["rows"]["off"], r["rows"]["on"]))[1:]
            f_ratio = sum(o[0] for o, _ in later) / max(sum(n[0] for _, n in later), 1e-12)
            e_ratio = sum(o[1] for o, _ in later) / max(sum(n[1] for _, n in later), 1e-12)
            print(f"{kind:<6} after epoch 1: features {f_ratio:.1f}x faster (target >= 5x), whole epoch {e_ratio:.2f}x; cache {r['bytes'] / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
