"""Shared test fixtures.

``avsynth_root``: a small AVSynth dataset (every task, two clips each) generated once per test session (once per
xdist worker) into a temporary folder. Heavy imports happen inside the fixture so collecting tests stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tiny models run fastest single-threaded, and several test workers share the machine's cores: one thread per
# process (set before torch is imported; subprocesses inherit it).
os.environ.setdefault("OMP_NUM_THREADS", "1")

AVSYNTH_TEST_OPTIONS = {"clips": 30, "seed": 0, "soundtrack": False}
"""Options of the session dataset (the MP4s carry no soundtrack: the pipeline reads the separate audio files)."""


@pytest.fixture(scope="session")
def avsynth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding ``AVUIE_2/`` with every AVSynth task (train and test splits, real media files)."""
    from crabzoo.data.avsynth import synthesize

    out = tmp_path_factory.mktemp("avsynth")
    synthesize(out, workers=1, **AVSYNTH_TEST_OPTIONS)
    return out
