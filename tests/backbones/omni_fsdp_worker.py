"""One rank of the 2-process check of the Omni thinker's loss under FSDP2 (``test_qwen_omni_fsdp.py``).

Rank ``r`` trains on sample ``r`` of two conversations with a thinker sharded by crabzoo's own plan
(:func:`crabzoo.distributed.shard_model`); every rank also runs an unsharded copy on both samples, whose loss is the mean
of the two per-sample losses. FSDP2 averages gradients over ranks, so the gathered sharded gradients must equal
the copy's. Rank 0 writes ``result.json``.

It is done twice: both samples with audio and video, then an image on rank 0 and an audio clip on rank 1. In
the second, each rank's idle tower runs on a stand-in input (``QwenOmniThinker.idle_towers``); without that
the collectives would not match (gloo stops with "Received data size doesn't match expected size").
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from backbones_helpers import AUDIO_USER, AV_USER, IMAGE_USER, tiny_omni  # noqa: E402


def conversations(omni) -> list[dict]:
    rng = np.random.default_rng(0)
    audio = [rng.standard_normal(n * 16000).astype(np.float32) for n in (3, 2)]
    video = [rng.integers(0, 256, (f, 56, 56, 3), dtype=np.uint8) for f in (4, 2)]
    a = omni.prepare([AV_USER, {"role": "assistant", "content": "<answer>dog</answer>"}], audio=[audio[0]], videos=[video[0]])
    b = omni.prepare(
        [AV_USER, {"role": "assistant", "content": "A cat meows on the left, then a car passes."}],
        audio=[audio[1]], videos=[video[1]],
    )
    image = rng.integers(0, 256, (56, 84, 3), dtype=np.uint8)
    c = omni.prepare([IMAGE_USER, {"role": "assistant", "content": "The sounding object is cat."}], images=[image])
    audio_only = omni.prepare([AUDIO_USER, {"role": "assistant", "content": "<answer>bird</answer>"}], audio=[audio[1]])
    return [omni.collate([x], padding_side="right") for x in (a, b, c, audio_only)]


def main(corpus: str, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    from crabzoo.distributed import sharding_plan, shard_model

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    sharded = tiny_omni(corpus).eval()
    plain = tiny_omni(corpus).eval()
    plain.load_state_dict(sharded.state_dict())
    for model in (sharded, plain):
        model.requires_grad_(True)
    samples = conversations(plain)
    units = [name for name, _ in sharding_plan(sharded)]
    shard_model(sharded, init_device_mesh("cpu", (dist.get_world_size(),)), mixed_precision=None)

    full = lambda t: t.full_tensor() if hasattr(t, "full_tensor") else t  # noqa: E731
    result: dict = {"units": units}
    # same media on both ranks (audio + video); then an image on rank 0 and an audio clip on rank 1
    for name, pair in (("same_media", samples[0:2]), ("different_media", samples[2:4])):
        sharded.zero_grad(set_to_none=True)
        plain.zero_grad(set_to_none=True)
        loss, per_sample = sharded.loss_multimodal(**pair[rank])
        loss.backward()
        losses = [torch.zeros(1) for _ in range(dist.get_world_size())]
        dist.all_gather(losses, loss.detach().reshape(1))
        plain_losses = [plain.loss_multimodal(**s)[0] for s in pair]
        torch.stack(plain_losses).mean().backward()
        grads = {n: full(p.grad) for n, p in sharded.named_parameters() if p.grad is not None}
        ref = {n: p.grad for n, p in plain.named_parameters() if p.grad is not None}
        diffs = {n: float((grads[n] - ref[n]).abs().max()) for n in ref if n in grads}
        result[name] = {
            "rank_losses": [float(x) for x in losses],
            "plain_losses": [float(x) for x in plain_losses],
            "per_sample": per_sample.tolist(),
            "missing": sorted(set(ref) - set(grads)),
            "max_grad_diff": max(diffs.values()),
            "grad_scale": max(float(g.abs().max()) for g in ref.values()),
            "towers": sorted({n.split(".")[2] for n in diffs if n.startswith("thinker.model.")}),
        }
    if rank == 0:
        (Path(out) / "result.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
