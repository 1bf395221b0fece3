"""Learning-rate schedules used by the recipes."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class WarmupCosine(LambdaLR):
    """Linear warm-up then cosine decay to ``min_ratio`` of the base rate (the Crab/Crab+ schedule).

    The total number of steps is filled in by the paradigm from the trainer (``set_total_steps``) unless given.

    Args:
        optimizer: The wrapped optimizer.
        warmup_ratio: Share of the total steps spent warming up (Crab+: 0.03).
        min_ratio: Final learning rate as a share of the base rate.
        total_steps: Total optimizer steps; ``None`` until the paradigm sets it.
    """

    def __init__(self, optimizer: Optimizer, warmup_ratio: float = 0.03, min_ratio: float = 0.0, total_steps: int | None = None) -> None:
        self.warmup_ratio = warmup_ratio
        self.min_ratio = min_ratio
        self.total_steps = total_steps or 1
        super().__init__(optimizer, self.factor)

    def set_total_steps(self, total_steps: int) -> None:
        """Set the schedule length (called once the trainer knows it)."""
        self.total_steps = max(1, int(total_steps))

    def factor(self, step: int) -> float:
        """Multiplier of the base learning rate at ``step``."""
        warmup = max(1, round(self.warmup_ratio * self.total_steps)) if self.warmup_ratio > 0 else 0
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, self.total_steps - warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
