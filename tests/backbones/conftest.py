"""Shared fixtures: a small AV-UIE-layout text corpus and a private tokenizer cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from backbones_helpers import write_corpus


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Point CRABZOO_CACHE at a temporary directory for the whole session."""
    mp = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("cache")
    mp.setenv("CRABZOO_CACHE", str(cache))
    yield cache
    mp.undo()
