"""Plain LoRA through peft, placed by module group and linear-name suffix.

peft is imported lazily (it imports transformers), so ``crabzoo --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from crabzoo.adapters.base import DEFAULT_GROUPS, Adapter
from crabzoo.adapters.placement import Targets, find_linears, normalise_targets, resolve_targets
from crabzoo.errors import CrabzooError

ADAPTER_NAME = "default"


class LoRA(Adapter):
    """LoRA (``y = W0 x + b + (alpha/r) B A dropout(x)``) injected with ``peft.inject_adapter_in_model``.

    Parameters are named as in peft (``...q_proj.lora_A.default.weight``); :meth:`adapter_state_dict` uses
    peft's adapter-only keys without the adapter name, prefixed by the group (``llm.<name>.lora_A.weight``).

    Args:
        groups: Module groups to adapt.
        targets: Linear-name suffixes for every group, a mapping group -> suffixes, or ``None`` (defaults).
        rank: LoRA rank r.
        alpha: The update is scaled by ``alpha / rank``.
        dropout: Dropout on the LoRA input.
    """

    def __init__(
        self,
        groups: Sequence[str] = DEFAULT_GROUPS,
        targets: Targets = None,
        rank: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.05,
    ) -> None:
        super().__init__(groups, None)
        self.targets = normalise_targets(targets)
        if rank < 1:
            raise CrabzooError(f"LoRA rank must be >= 1, got {rank}")
        if not 0.0 <= dropout < 1.0:
            raise CrabzooError(f"LoRA dropout must be in [0, 1), got {dropout}")
        self.rank, self.alpha, self.dropout = rank, float(alpha), float(dropout)
        self.modules: dict[str, nn.Module] = {}
        self.adapted: dict[str, list[str]] = {}
        self.resolved_targets: dict[str, tuple[str, ...]] = {}

    def config(self) -> dict:
        """Constructor arguments (with the targets actually used), for ``adapter.json``."""
        return {
            "class_path": f"{type(self).__module__}.{type(self).__qualname__}",
            "init_args": {
                "groups": list(self.groups),
                "targets": {g: list(v) for g, v in self.resolved_targets.items()} or self.targets,
                "rank": self.rank,
                "alpha": self.alpha,
                "dropout": self.dropout,
            },
        }

    def peft_config(self, target_modules: list[str]):
        """The ``peft.LoraConfig`` for one group (exact module names as targets)."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=target_modules,
            bias="none",
        )

    def apply(self, groups: dict[str, nn.Module], default_targets: Mapping[str, Sequence[str]]) -> list[str]:
        """Inject LoRA layers into the target linears of each selected group (in place)."""
        from peft import inject_adapter_in_model

        if self.modules:
            raise CrabzooError("this LoRA adapter was already applied; build a new adapter for another model")
        self.resolved_targets = resolve_targets(self.groups, self.targets, default_targets)
        found = find_linears(groups, self.resolved_targets)
        names: list[str] = []
        for group, linears in found.items():
            module = groups[group]
            trainable = {n: p.requires_grad for n, p in module.named_parameters()}
            inject_adapter_in_model(self.peft_config(list(linears)), module, adapter_name=ADAPTER_NAME)
            # peft freezes everything but LoRA in the module; keep other parameters as they were.
            for n, p in module.named_parameters():
                if "lora_" in n:
                    p.requires_grad_(True)
                elif n in trainable:
                    p.requires_grad_(trainable[n])
            for name, linear in linears.items():
                module.get_submodule(name).train(linear.training)
                linear.weight.requires_grad_(False)
                if linear.bias is not None:
                    linear.bias.requires_grad_(False)
            self.modules[group] = module
            self.adapted[group] = list(linears)
            names += [f"{group}.{n}" for n in linears]
        return names

    def lora_layers(self) -> Iterable[tuple[str, nn.Module]]:
        """``("<group>.<name>", peft LoRA layer)`` pairs."""
        for group, module in self.modules.items():
            for name in self.adapted[group]:
                yield f"{group}.{name}", module.get_submodule(name)

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        for module in self.modules.values():
            for n, p in module.named_parameters():
                if "lora_" in n:
                    yield p

    def adapter_state_dict(self) -> dict[str, Tensor]:
        from peft import get_peft_model_state_dict

        state: dict[str, Tensor] = {}
        for group, module in self.modules.items():
            for k, v in get_peft_model_state_dict(module, adapter_name=ADAPTER_NAME).items():
                state[f"{group}.{k}"] = v.detach()
        return state

    def load_adapter_state_dict(self, state: dict[str, Tensor]) -> None:
        from peft import set_peft_model_state_dict

        own = self.adapter_state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise CrabzooError(
                f"LoRA weights do not fit this adapter: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        for group, module in self.modules.items():
            prefix = f"{group}."
            sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            set_peft_model_state_dict(module, sub, adapter_name=ADAPTER_NAME)

    def save_peft(self, directory: Path) -> None:
        """Write each group in peft's own adapter format: ``<directory>/<group>/adapter_config.json`` and
        ``adapter_model.safetensors`` (keys ``base_model.model.<name>.lora_A.weight``), loadable with
        ``peft.PeftModel.from_pretrained(group_module, <directory>/<group>)``."""
        from safetensors.torch import save_file

        state = self.adapter_state_dict()
        for group in self.modules:
            out = Path(directory) / group
            out.mkdir(parents=True, exist_ok=True)
            prefix = f"{group}."
            tensors = {
                f"base_model.model.{k[len(prefix):]}": v.cpu().contiguous()
                for k, v in state.items()
                if k.startswith(prefix)
            }
            config = self.peft_config(self.adapted[group])
            fd, tmp = tempfile.mkstemp(dir=out, suffix=".tmp")
            os.close(fd)
            save_file(tensors, tmp, metadata={"format": "pt"})
            os.replace(tmp, out / "adapter_model.safetensors")
            fd, tmp = tempfile.mkstemp(dir=out, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(config.to_dict(), f, indent=2, default=list)
            os.replace(tmp, out / "adapter_config.json")

    def merge(self) -> None:
        """Fold ``(alpha/r) B A`` into each base weight (peft's ``merge``)."""
        with torch.no_grad():
            for _, layer in self.lora_layers():
                layer.merge()

    def unmerge(self) -> None:
        """Undo :meth:`merge`."""
        with torch.no_grad():
            for _, layer in self.lora_layers():
                layer.unmerge()
