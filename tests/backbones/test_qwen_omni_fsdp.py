"""The Omni thinker's supervised-position loss under FSDP2 with two processes (CPU, gloo).

Each rank trains on its own sample; the gathered sharded gradients equal an unsharded copy's gradients of the
mean of the two per-sample losses (FSDP2 averages over ranks), and each rank's loss is that sample's loss; also
when one rank's sample has only an image and the other's only audio (the idle towers run on stand-in inputs).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).parent / "omni_fsdp_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_omni_loss_under_fsdp2_two_processes(corpus_dir, tmp_path):
    port, procs = _free_port(), []
    for rank in range(2):
        cache = tmp_path / f"cache{rank}"  # each rank builds the tokenizer in its own cache (no race)
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                   OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", CRABZOO_CACHE=str(cache))
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(corpus_dir), str(tmp_path)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    try:
        logs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n----\n".join(log[-3000:] for log in logs)
    result = json.loads((tmp_path / "result.json").read_text())
    units = result["units"]
    assert units[-1] == "" and sum(".layers." in u for u in units) >= 2  # decoder layers are units, the root last
    assert any("audio_tower" in u for u in units) and any("visual" in u for u in units), units
    for name in ("same_media", "different_media"):
        run = result[name]
        assert run["rank_losses"] == pytest.approx(run["plain_losses"], abs=1e-5), name
        assert run["per_sample"] == pytest.approx([run["plain_losses"][0]], abs=1e-5), name
        assert run["missing"] == [], name
        assert run["max_grad_diff"] <= 1e-5 * max(1.0, run["grad_scale"]), (name, run)
    assert {"audio_tower", "visual", "language_model"} <= set(result["same_media"]["towers"])  # towers get gradients
