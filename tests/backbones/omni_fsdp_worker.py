"""One rank of the 2-process check of the Omni thinker's loss under FSDP2 (``test_qwen_omni_fsdp.py``).

Rank ``r`` trains on sample ``r`` of two audio-visual conversations (different lengths and answers) with a thinker sharded by crabzoo's own plan
(:func:`crabzoo.distributed.shard_model`); every rank also runs an unsharded copy on both samples, whose loss is the mean
of the two per-sample losses. FSDP2 averages gradients over ranks, so the gathered sharded gradients must equal
the copy's. Rank 0 writes ``result.json``.

Both samples carry audio and video: a rank whose sample lacks a medium would skip that tower's all-gather while
the other rank runs it, a collective mismatch (gloo stops with "Received data size doesn't match").
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from backbones_helpers import tiny_omni  # noqa: E402

AV_USER = {"role": "user", "content": [
    {"type": "text", "text": "This is a video and an audio:"}, {"type": "video"}, {"type": "audio"},
    {"type": "text", "text": "Please describe the events."},
]}


def conversations(omni) -> list[dict]:
    rng = np.random.default_rng(0)
    audio = [rng.standard_normal(n * 16000).astype(np.float32) for n in (3, 2)]
    video = [rng.integers(0, 256, (f, 56, 56, 3), dtype=np.uint8) for f in (4, 2)]
    a = omni.prepare([AV_USER, {"role": "assistant", "content": "<answer>dog</answer>"}], audio=[audio[0]], videos=[video[0]])
    b = omni.prepare(
        [AV_USER, {"role": "assistant", "content": "A cat meows on the left, then a car passes."}],
        audio=[audio[1]], videos=[video[1]],
    )
    return [omni.collate([a], padding_side="right"), omni.collate([b], padding_side="right")]


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

    loss, per_sample = sharded.loss_multimodal(**samples[rank])
    loss.backward()
    losses = [torch.zeros(1) for _ in range(dist.get_world_size())]
    dist.all_gather(losses, loss.detach().reshape(1))

    plain_losses = [plain.loss_multimodal(**s)[0] for s in samples]
    reference = torch.stack(plain_losses).mean()
    reference.backward()

    full = lambda t: t.full_tensor() if hasattr(t, "full_tensor") else t  # noqa: E731
    grads = {n: full(p.grad) for n, p in sharded.named_parameters() if p.grad is not None}
    ref = {n: p.grad for n, p in plain.named_parameters() if p.grad is not None}
    diffs = {n: float((grads[n] - ref[n]).abs().max()) for n in ref if n in grads}
    scale = max(float(g.abs().max()) for g in ref.values())
    if rank == 0:
        result = {
            "rank_losses": [float(x) for x in losses],
            "plain_losses": [float(x) for x in plain_losses],
            "per_sample": per_sample.tolist(),
            "missing": sorted(set(ref) - set(grads)),
            "max_grad_diff": max(diffs.values()),
            "grad_scale": scale,
            "towers": sorted({n.split(".")[2] for n in diffs if n.startswith("thinker.model.")}),
            "n_params": len(diffs),
            "units": units,
        }
        (Path(out) / "result.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
