"""The folder ``crabzoo export`` writes: file names, the manifest and its checks.

::

    crabzoo_export.json          manifest: format, source, paradigm configuration, what each file holds
    llm/                         the LLM as a transformers ``save_pretrained`` folder, with tokenizer and chat
                                 template (LoRA merged into it; the base weights when the adapter is I-LoRA)
    connectors.safetensors       every trained module outside the LLM and the encoders (connectors, heads),
                                 keyed by the paradigm's state-dict names
    encoders/<name>.safetensors  encoder weights (copied encoders only; referenced ones rebuild from the config)
    adapter/                     I-LoRA only: crabzoo's adapter checkpoint (adapter.json, adapter.safetensors)
    official/                    I-LoRA only: adapter_model.safetensors in the official Crab / Crab+ key layout,
                                 and official.json (layout, module path prefixes, rank, alpha, heads)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crabzoo.errors import CrabzooError

FORMAT = "crabzoo.export/1"
MANIFEST = "crabzoo_export.json"
LLM_DIR = "llm"
CONNECTORS = "connectors.safetensors"
ENCODERS_DIR = "encoders"
ADAPTER_DIR = "adapter"
OFFICIAL_DIR = "official"
OFFICIAL_WEIGHTS = "adapter_model.safetensors"
OFFICIAL_CONFIG = "official.json"


def check_out_dir(out: str | Path) -> Path:
    """``out`` as a path, after checking that it is new or an empty directory.

    Raises:
        CrabzooError: ``out`` is a file or a directory that holds something.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise CrabzooError(f"--out {path} is a file; give a new or empty directory")
    if path.is_dir() and any(path.iterdir()):
        raise CrabzooError(f"--out {path} is not empty; give a new or empty directory (or remove it first)")
    return path


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of an exported folder.

    Raises:
        CrabzooError: no manifest (not a folder written by ``crabzoo export``) or another format.
    """
    file = Path(directory) / MANIFEST
    if not file.is_file():
        raise CrabzooError(f"{directory} is not a crabzoo export: {MANIFEST} is missing (write one with crabzoo export)")
    manifest = json.loads(file.read_text())
    if manifest.get("format") != FORMAT:
        raise CrabzooError(f"{file}: unknown export format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def listing(directory: str | Path) -> list[tuple[str, int]]:
    """``(relative path, bytes)`` of every file under ``directory``, sorted."""
    root = Path(directory)
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*") if p.is_file())


def human_size(n: int) -> str:
    """``1536 -> "1.5 KiB"``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
