"""Contract of the parameter-efficient adapters (LoRA, I-LoRA, ...)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

DEFAULT_GROUPS: tuple[str, ...] = ("llm",)


class Adapter(ABC):
    """Attaches trainable low-rank modules to frozen linears of a model.

    An adapter is a plain object, not a module: :meth:`apply` replaces linears in place, so the adapted layers
    and their trainable parameters live in the model tree (and its ``state_dict``) exactly once.

    Placement is by module group (``llm``, ``audio_encoder``, ``visual_encoder``, ``connector``) and by name
    suffix (``q_proj``, ...). An adapter is configured in YAML and applied once by the paradigm.

    Args:
        groups: Module groups to adapt.
        targets: Linear-name suffixes to adapt; ``None`` takes each group's owner's defaults.
    """

    def __init__(self, groups: Sequence[str] = DEFAULT_GROUPS, targets: Sequence[str] | None = None) -> None:
        self.groups = tuple(groups)
        self.targets = tuple(targets) if targets is not None else None

    @abstractmethod
    def apply(self, groups: dict[str, nn.Module], default_targets: dict[str, Sequence[str]]) -> list[str]:
        """Adapt the linears of ``groups[g]`` for ``g`` in ``self.groups``; return the adapted module names.

        Args:
            groups: Module group name -> module (from the paradigm).
            default_targets: Module group name -> default suffixes (from the backbone/encoders).
        """

    @abstractmethod
    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        """The adapter's own parameters (what the optimizer trains)."""

    def aux_loss(self) -> Tensor | None:
        """Auxiliary loss from the last forward (e.g. router load balance), or ``None``."""
        return None

    @abstractmethod
    def adapter_state_dict(self) -> dict[str, Tensor]:
        """The adapter's own weights only, keyed by the adapted module's name."""

    @abstractmethod
    def load_adapter_state_dict(self, state: dict[str, Tensor]) -> None:
        """Load weights written by :meth:`adapter_state_dict`."""

    def merge(self) -> None:
        """Fold the adapter into the base weights where the maths allows; raise otherwise."""
        raise NotImplementedError(f"{type(self).__name__} cannot be merged into the base weights")

    def set_task_ids(self, task_ids: torch.Tensor | None) -> None:
        """Per-sample ``(B,)`` or per-token ``(B, L)`` task ids for task-routed adapters (ignored by others)."""
