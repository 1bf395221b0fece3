"""Reload a folder written by ``crabzoo export`` as the whole audio-visual model, in one call."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from crabzoo.errors import CrabzooError
from crabzoo.export import layout as L


def _load(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise CrabzooError(f"{path} is missing: the export folder is incomplete; export the checkpoint again")
    return load_file(str(path))


def load_exported(directory: str | Path, map_location: str = "cpu") -> Any:
    """The paradigm an export folder holds, in eval mode, on ``map_location``.

    The manifest's configuration builds the model: the backbone from ``llm/`` (``from_pretrained``), referenced
    encoders from their own configuration; then the connectors, the copied encoders and (I-LoRA) the adapter
    load their files. ``model.export_manifest`` is the manifest.

    Args:
        directory: A folder written by ``crabzoo export``.
        map_location: Device the model is moved to.

    Raises:
        CrabzooError: not an export folder, a missing file, or weights that do not fit the configuration.
    """
    from crabzoo.inference.loading import _instantiate

    root = Path(directory)
    manifest = L.read_manifest(root)
    tree = copy.deepcopy(manifest["model"])
    tree["init_args"]["backbone"]["init_args"]["name_or_path"] = str(root / manifest["llm"]["dir"])
    model = _instantiate({"_class_path": tree["class_path"], **tree["init_args"]}, str(root))

    state: dict[str, Any] = {}
    if manifest.get("connectors"):
        state.update(_load(root / manifest["connectors"]))
    for name, entry in manifest["encoders"].items():
        if entry["mode"] == "copy":
            state.update({f"{name}.{k}": v for k, v in _load(root / entry["file"]).items()})
    missing, unexpected = model.load_state_dict(state, strict=False)
    referenced = tuple(f"{n}." for n, e in manifest["encoders"].items() if e["mode"] == "reference")
    from_files = [
        k for k in missing
        if not k.startswith("backbone.") and not k.startswith(referenced) and ".lora_" not in k
    ]
    if unexpected or from_files:
        raise CrabzooError(
            f"{root}: the weights do not fit its configuration (unexpected {unexpected[:3]}, missing {from_files[:3]}); "
            "export the checkpoint again"
        )
    if manifest.get("adapter_dir"):
        model.adapter.load_adapter_state_dict(_load(root / manifest["adapter_dir"] / "adapter.safetensors"))
    model.export_manifest = manifest
    model.to(map_location)
    model.eval()
    return model
