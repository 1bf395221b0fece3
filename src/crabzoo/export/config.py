"""The paradigm configuration an export records: the trained model's YAML tree, rewritten to load the export.

The tree (``class_path`` / ``init_args``, as ``crabzoo fit`` writes it) comes from the checkpoint's
``hyper_parameters`` or from the recipe files. The exported copy:

* builds the backbone from the exported ``llm/`` folder (``name_or_path``; its tokenizer, chat template and
  placeholder tokens come with it), keeping the options that shape the model (``mask_tokens``, dtype, ...);
* has no adapter when LoRA was merged, and the adapter's exact settings (resolved targets) for I-LoRA;
* drops training-only parts (optimizer, scheduler, an earlier stage's checkpoint, the feature cache) and
  records the task order.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crabzoo.errors import CrabzooError

BACKBONE_SOURCE_ARGS = (
    "name_or_path", "config", "gguf_file", "tokenizer", "tokenizer_corpus", "tokenizer_vocab_size", "seed",
    "gradient_checkpointing",
)
"""Backbone arguments that say where the weights and tokenizer come from (replaced by the ``llm/`` folder)."""

TRAINING_ARGS = ("optimizer", "scheduler")
"""Paradigm arguments that only matter for training (left to their defaults)."""


def tree_from_checkpoint(ckpt_path: str | Path) -> dict[str, Any]:
    """``{"class_path", "init_args"}`` of the model a checkpoint's ``hyper_parameters`` describe.

    ``ckpt_path`` is a checkpoint file or a DeepSpeed checkpoint folder (see :mod:`crabzoo.deepspeed_checkpoint`).
    """
    import torch

    from crabzoo.deepspeed_checkpoint import is_deepspeed_checkpoint, read_deepspeed_checkpoint

    if is_deepspeed_checkpoint(ckpt_path):
        ckpt = read_deepspeed_checkpoint(ckpt_path)
    else:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    hparams = dict(ckpt.get("hyper_parameters") or {})
    if "_class_path" not in hparams:
        raise CrabzooError(
            f"{ckpt_path} holds no model configuration (the model was built in Python); pass the recipe it was "
            "trained with as --config"
        )
    class_path = hparams.pop("_class_path")
    hparams.pop("_instantiator", None)
    return {"class_path": class_path, "init_args": hparams}


def tree_from_configs(configs: Sequence[str | Path]) -> dict[str, Any]:
    """The ``model:`` tree of recipe files merged in order (as repeated ``--config`` flags of ``crabzoo fit``)."""
    import yaml
    from jsonargparse import ArgumentParser

    from crabzoo.inference.loading import _read_yaml
    from crabzoo.paradigms.base import AVLLM

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(AVLLM, "model", fail_untyped=False, required=True)
    args: list[str] = []
    for path in configs:
        data = _read_yaml(path)
        if isinstance(data.get("model"), dict):
            args += ["--model", yaml.safe_dump(data["model"])]
    if not args:
        raise CrabzooError(f"{', '.join(map(str, configs))}: no `model:` section; pass the recipe files you trained with")
    cfg = parser.parse_args(args)
    return yaml.safe_load(parser.dump(cfg, skip_check=True))["model"]


def exported_tree(tree: dict[str, Any], model: Any, adapter_kind: str) -> dict[str, Any]:
    """The configuration stored in the manifest (see the module docstring).

    Args:
        tree: The trained model's ``{"class_path", "init_args"}``.
        model: The trained paradigm (for the adapter's resolved settings and the task order).
        adapter_kind: ``none``, ``lora-merged`` or ``ilora``.
    """
    out = copy.deepcopy(tree)
    init = out.setdefault("init_args", {})
    backbone = init.get("backbone")
    if not isinstance(backbone, dict) or "class_path" not in backbone:
        raise CrabzooError("the model configuration has no backbone class_path; pass the recipe it was trained with")
    args = {k: v for k, v in (backbone.get("init_args") or {}).items() if k not in BACKBONE_SOURCE_ARGS}
    backbone["init_args"] = {"name_or_path": "llm", **args}
    init["adapter"] = model.adapter.config() if adapter_kind == "ilora" else None
    for name in TRAINING_ARGS:
        init.pop(name, None)
    for name in ("init_checkpoint", "feature_cache"):  # not every paradigm takes them
        if name in init:
            init[name] = None
    init["task_names"] = list(model.task_names) or None
    return out
