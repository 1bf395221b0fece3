"""2-process CPU runs over gloo: FSDP2 through ModelParallelStrategy (fit, sharded checkpoint, resume, adapter
gradients, adapter export), DDP, and the results table written at the end of a DDP fit."""

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


def test_ddp_fit_writes_the_results_table_without_hanging(tmp_path):
    # Trainer.log_dir is a broadcast from rank 0: read on rank 0 alone, rank 0 would wait for rank 1, which has
    # already left the fit (the launch fails with its timeout or a closed connection)
    r = launch("report", tmp_path, timeout=120)
    assert r["written"] == ["logs/run/version_0/results.json", "logs/run/version_0/results.md"]
    assert r["global_step"] == 1 and r["results"] == {"ks": {"accuracy": 0.5, "n_total": 2.0, "n_parsed": 1.0}}
