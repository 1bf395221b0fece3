"""Launch helpers for the 2-process CPU (gloo) tests (a module, not conftest.py, so any set of test folders imports it)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(scenario: str, out: Path, world: int = 2, timeout: float = 240.0) -> dict:
    """Run dist_worker.py as ``world`` ranks on one free port; return rank 0's result.json."""
    port = free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank), NODE_RANK="0",
                   WORLD_SIZE=str(world), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        procs.append(subprocess.Popen([sys.executable, os.environ.get("SCALE_WORKER", str(HERE / "dist_worker.py")), scenario, str(out)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    codes = [p.returncode for p in procs]
    if any(codes):
        pytest.fail(f"ranks exited with {codes}:\n" + "\n----\n".join(log[-4000:] for log in logs))
    return json.loads((out / "result.json").read_text())
