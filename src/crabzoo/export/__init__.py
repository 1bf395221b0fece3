"""``crabzoo export``: a trained checkpoint as files other tools load.

LoRA is merged into the LLM, written as a transformers ``save_pretrained`` folder that
``AutoModelForCausalLM.from_pretrained`` loads on its own; I-LoRA (not mergeable) is written beside the base
LLM in crabzoo's adapter format and in the official Crab / Crab+ key layout. The connectors, the encoders
(weights or configuration) and the paradigm's configuration complete the folder, so
:func:`load_exported` rebuilds the whole audio-visual model in one call.
"""

from __future__ import annotations

from typing import Any


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``crabzoo export`` (see :mod:`crabzoo.export.cli`)."""
    from crabzoo.export.cli import main as cli_main

    cli_main(argv)


def load_exported(directory: Any, map_location: str = "cpu") -> Any:
    """The paradigm of an export folder (see :func:`crabzoo.export.reader.load_exported`)."""
    from crabzoo.export.reader import load_exported as load

    return load(directory, map_location)


def export_model(*args: Any, **kwargs: Any) -> Any:
    """Write a trained paradigm as an export folder (see :func:`crabzoo.export.writer.export_model`)."""
    from crabzoo.export.writer import export_model as export

    return export(*args, **kwargs)


__all__ = ["export_model", "load_exported", "main"]
