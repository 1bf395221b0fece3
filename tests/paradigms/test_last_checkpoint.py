"""Every fit keeps last.ckpt: after a max_steps stop before any validation, every N steps (a SIGKILL loses at
most N), on SIGTERM; ``--ckpt_path last`` resumes to the same losses as an uninterrupted run."""

from __future__ import annotations

import math
import signal

import pytest
from ckpt_helpers import fit_args, make_data, pace_args, run_cli, start_cli, train_losses, versions, wait_for

from crabzoo.checkpoints import checkpoint_step, find_last_checkpoint
from crabzoo.errors import CrabzooError
from crabzoo.lightning_cli import resolve_last

pytestmark = pytest.mark.slow

CONSTANT_LR = ("--model.init_args.scheduler", "null")  # the recipe's schedule depends on max_steps


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("ckpt_data"))


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """Losses of an uninterrupted 6-step run."""
    run_dir = tmp_path_factory.mktemp("reference")
    run_cli(fit_args(data, run_dir, 6, 100, *CONSTANT_LR))
    losses = train_losses(versions(run_dir)[0])
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]
    return losses


def assert_same(a: float, b: float) -> None:
    assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6), (a, b)


def test_max_steps_stop_before_validation_leaves_last_ckpt_and_resumes(data, reference, tmp_path):
    run_cli(fit_args(data, tmp_path, 3, 100, *CONSTANT_LR))
    (first,) = versions(tmp_path)
    # validation runs every 4 epochs and the epoch has 16 steps: nothing validated, yet last.ckpt is there
    assert not (first / "results.json").exists()
    # the recipe's ModelCheckpoint(save_last: true) does not write a second last file beside it
    assert sorted(p.name for p in (first / "checkpoints").iterdir()) == ["last.ckpt"]
    assert checkpoint_step(first / "checkpoints" / "last.ckpt") == 3
    assert find_last_checkpoint(tmp_path) == first / "checkpoints" / "last.ckpt"

    run_cli(fit_args(data, tmp_path, 6, 100, *CONSTANT_LR, "--ckpt_path", "last"))
    _, resumed = versions(tmp_path)
    losses = train_losses(resumed)
    assert sorted(losses) == [4, 5, 6]  # continued at step 4
    for step in (4, 5, 6):
        assert_same(losses[step], reference[step])
    assert checkpoint_step(resumed / "checkpoints" / "last.ckpt") == 6


def test_sigkill_mid_epoch_loses_at_most_n_steps_and_resumes(data, reference, tmp_path):
    run_dir, log = tmp_path / "run", tmp_path / "fit.log"
    args = fit_args(data, run_dir, 6, 2, *CONSTANT_LR, *pace_args(0.3, tmp_path / "step.txt"))
    proc = start_cli(args, log)
    last = run_dir / "version_0" / "checkpoints" / "last.ckpt"
    try:
        wait_for(last.exists, 180, proc, log)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    saved = checkpoint_step(last)  # complete and loadable although the process died without warning
    reached = int((tmp_path / "step.txt").read_text())
    assert saved in (2, 4) and reached - saved < 2  # every 2 steps: at most 2 steps lost

    run_cli(fit_args(data, run_dir, 6, 2, *CONSTANT_LR, "--ckpt_path", "last"))
    losses = train_losses(versions(run_dir)[-1])
    assert min(losses) == saved + 1 and max(losses) == 6
    for step, value in losses.items():
        assert_same(value, reference[step])


def test_sigterm_writes_last_ckpt(data, tmp_path):
    run_dir, log, marker = tmp_path / "run", tmp_path / "fit.log", tmp_path / "step.txt"
    # every_n_steps 0: only epoch ends (16 steps away) and interruptions write last.ckpt
    proc = start_cli(fit_args(data, run_dir, 50, 0, *pace_args(0.3, marker)), log)
    try:
        wait_for(lambda: marker.exists() and marker.read_text().strip() not in ("", "0", "1"), 180, proc, log)
        reached = int(marker.read_text())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    last = run_dir / "version_0" / "checkpoints" / "last.ckpt"
    assert reached <= checkpoint_step(last) < 16
    assert "stopped by SIGTERM; resume with --ckpt_path last" in log.read_text()


def test_ckpt_path_last_without_a_checkpoint(tmp_path):
    assert resolve_last(tmp_path, "fit") is None  # a first run (or a requeued job) may always pass `last`
    with pytest.raises(CrabzooError, match="no .*last.ckpt found"):
        resolve_last(tmp_path, "predict")
    older = tmp_path / "version_0" / "checkpoints" / "last.ckpt"
    newer = tmp_path / "version_3" / "checkpoints" / "last.ckpt"
    for path in (older, newer):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
    import os

    os.utime(older, (1, 1))
    assert resolve_last(tmp_path, "predict") == str(newer)
