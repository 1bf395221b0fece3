"""2-process CPU runs over gloo: FSDP2 through ModelParallelStrategy (fit, sharded checkpoint, resume, adapter
gradients, adapter export) and DDP."""

from __future__ import annotations

import math

import pytest
from scale_helpers import launch

pytestmark = pytest.mark.slow


def test_fsdp2_fit_sharded_checkpoint_resume_and_adapter_grads(tmp_path):
    r = launch("fsdp2", tmp_path)
    assert r["sharded"], "fully_shard was not applied"
    assert r["mesh_size"] == 2  # sharded over both processes (not one replica per process)
    assert r["b"] == r["full"][:2]
    assert r["rec_res"] == r["rec_full"][2:]  # same batches and learning rates after the resume
    # the sharded checkpoint is a directory of per-rank shards plus Lightning's metadata
    assert r["ckpt_is_dir"] and "meta.pt" in r["ckpt_files"] and any(f.endswith(".distcp") for f in r["ckpt_files"])
    # every adapter parameter gets a gradient at every step under sharding; after the first step (B != 0)
    # every one of them is non-zero
    assert len(r["grad_norms"]) == 4
    for step in r["grad_norms"]:
        assert len(step) == r["n_adapter_params"] and all(v is not None for v in step.values())
    assert all(v > 0 for v in r["grad_norms"][1].values())
    # resuming the sharded checkpoint continues the uninterrupted curve exactly
    assert len(r["resumed"]) == 2
    for a, b in zip(r["full"][2:], r["resumed"]):
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
    assert r["export_keys"] == r["n_adapter_params"] and r["export_shapes_ok"]


def test_ddp_fit(tmp_path):
    r = launch("ddp", tmp_path)
    assert len(r["losses"]) == 3 and all(math.isfinite(x) for x in r["losses"])
    assert r["ranks_equal"]
