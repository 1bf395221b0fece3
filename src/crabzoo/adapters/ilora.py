"""I-LoRA: a shared down-projection, N up-projection heads and a per-token router (Crab / Crab+).

Native PyTorch (not a peft tuner). Each adapted ``nn.Linear`` becomes an :class:`ILoRALinear` that keeps the
frozen ``weight``/``bias`` under the same names (so base checkpoints still load) and adds::

    lora_A      (r, d_in)  or (N·r, d_in) with independent_a   Kaiming-uniform
    lora_B      (d_out, N·r)   heads B_1..B_N stacked by column blocks, zero init
    lora_route  (N, d_in)      bias-free router, Kaiming-uniform (soft / topk routing)
    lora_task   (n_tasks, N)   task-gate logits, N(0, 1) init (task routing)

and computes ``y = W0 x + b + (alpha/r) · Σ_i g_i B_i A dropout(x)`` fused (see :mod:`crabzoo.adapters.fused`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crabzoo.adapters import routing as R
from crabzoo.adapters.base import DEFAULT_GROUPS, Adapter
from crabzoo.adapters.fused import fused_ilora
from crabzoo.adapters.placement import Targets, find_linears, normalise_targets, replace_module, resolve_targets
from crabzoo.adapters.telemetry import RouterTelemetry
from crabzoo.errors import CrabzooError


class ILoRALinear(nn.Module):
    """A frozen linear plus an I-LoRA branch.

    Args:
        base: The linear to adapt; its ``weight``/``bias`` parameters are reused (and frozen).
        n_heads: Number of up-projection heads N.
        rank: Rank r of each head.
        alpha: Scale numerator; the branch is multiplied by ``alpha / rank``.
        dropout: Dropout on the branch input (the router sees the input without dropout).
        routing: ``soft``, ``topk`` or ``task`` (see :data:`crabzoo.adapters.routing.ROUTINGS`).
        top_k: Heads kept per token with ``topk`` (also allowed with ``task``).
        n_tasks: Number of task ids with ``task`` routing.
        balance_loss: ``None``, ``cv2`` or ``switch``.
        balance_weight: Weight of the balance loss.
        independent_a: One down-projection per head (LoRAMoE-style) instead of a shared one.
    """

    def __init__(
        self,
        base: nn.Linear,
        n_heads: int = 3,
        rank: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.0,
        routing: str = "soft",
        top_k: int | None = None,
        n_tasks: int | None = None,
        balance_loss: str | None = None,
        balance_weight: float = 0.0,
        independent_a: bool = False,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.n_heads, self.rank, self.alpha = n_heads, rank, float(alpha)
        self.scale = self.alpha / rank
        self.routing, self.top_k, self.n_tasks = routing, top_k, n_tasks
        self.balance_loss, self.balance_weight = balance_loss, float(balance_weight)
        self.independent_a = independent_a
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)
        self.weight = base.weight
        self.bias = base.bias
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        a_rows = rank * n_heads if independent_a else rank
        self.lora_A = nn.Parameter(torch.empty(a_rows, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.empty(self.out_features, n_heads * rank, **factory))
        if routing == "task":
            self.lora_task = nn.Parameter(torch.empty(int(n_tasks or 0), n_heads, **factory))
            self.lora_route = None
        else:
            self.lora_route = nn.Parameter(torch.empty(n_heads, self.in_features, **factory))
            self.lora_task = None
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_lora_parameters()
        self.task_ids: Tensor | None = None
        self.layer_name: str = ""
        self.telemetry: RouterTelemetry | None = None
        self._aux_loss: Tensor | None = None

    @torch.no_grad()
    def reset_lora_parameters(self) -> None:
        """Kaiming-uniform A and router, zero heads B, N(0, 1) task logits."""
        if self.lora_A.is_meta:
            return
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)
        if self.lora_route is not None:
            nn.init.kaiming_uniform_(self.lora_route, a=math.sqrt(5))
        if self.lora_task is not None:
            nn.init.normal_(self.lora_task)

    def head(self, i: int) -> Tensor:
        """Head ``B_i`` (d_out, r) as a view of the stacked ``lora_B``."""
        return self.lora_B[:, i * self.rank : (i + 1) * self.rank]

    def gates(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Router probabilities and the gates used, both fp32 ``(..., N)``."""
        if self.routing == "task":
            if self.task_ids is None:
                raise CrabzooError(
                    "I-LoRA task routing needs the task ids of the batch: call adapter.set_task_ids(ids) "
                    "before the forward"
                )
            task_ids = self.task_ids.to(x.device)
            if task_ids.dim() == 2:  # one id per token (packed rows)
                if tuple(x.shape[:-1]) != tuple(task_ids.shape):
                    raise CrabzooError(
                        f"I-LoRA task routing at {self.layer_name or 'a layer'}: input tokens {tuple(x.shape[:-1])} "
                        f"do not match the per-token task ids {tuple(task_ids.shape)} set by set_task_ids"
                    )
            elif x.dim() < 2 or x.shape[0] != task_ids.numel():
                raise CrabzooError(
                    f"I-LoRA task routing at {self.layer_name or 'a layer'}: input leading dimension "
                    f"{x.shape[0]} does not match the {task_ids.numel()} task ids set by set_task_ids"
                )
            probs = R.task_gates(self.lora_task, task_ids, x.shape)
        else:
            probs = R.soft_gates(F.linear(x, self.lora_route.to(x.dtype)))
        gates = R.topk_gates(probs, self.top_k) if self.top_k is not None else probs
        return probs, gates

    def forward(self, x: Tensor) -> Tensor:
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type):
            dtype = torch.get_autocast_dtype(device_type)
        else:
            dtype = x.dtype
        x = x.to(dtype)
        probs, gates = self.gates(x)
        if self.training and self.balance_loss is not None and self.balance_weight > 0:
            self._aux_loss = self.balance_weight * R.balance_loss(self.balance_loss, probs, gates)
        if self.telemetry is not None and self.telemetry.enabled:
            self.telemetry.record(self.layer_name, gates)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        x_drop = self.lora_dropout(x2)
        g2 = gates.reshape(-1, self.n_heads).to(dtype)
        bias = self.bias.to(dtype) if self.bias is not None else None
        with torch.autocast(device_type, enabled=False):
            y = fused_ilora(
                x2,
                x_drop,
                self.weight.to(dtype),
                bias,
                self.lora_A.to(dtype),
                self.lora_B.to(dtype),
                g2,
                self.scale,
                not self.independent_a,
            )
        return y.view(*lead, self.out_features)

    def pop_aux_loss(self) -> Tensor | None:
        """The balance loss of the last training forward (and forget it)."""
        loss, self._aux_loss = self._aux_loss, None
        return loss

    def lora_parameters(self) -> dict[str, nn.Parameter]:
        """The trainable parameters by their attribute name."""
        names = ("lora_A", "lora_B", "lora_route", "lora_task")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, n_heads={self.n_heads}, "
            f"rank={self.rank}, alpha={self.alpha}, routing={self.routing!r}, independent_a={self.independent_a}"
        )


class ILoRA(Adapter):
    """I-LoRA adapter placed by module group and linear-name suffix.

    Args:
        groups: Module groups to adapt (``llm``, ``audio_encoder``, ``visual_encoder``, ``connector``).
        targets: Linear-name suffixes for every group, a mapping group -> suffixes, or ``None`` for the
            defaults of each group's owner.
        n_heads: Heads N (``1`` is exactly LoRA of rank ``rank``).
        rank: Rank r of each head.
        alpha: The branch is scaled by ``alpha / rank``.
        dropout: Dropout on the branch input.
        routing: ``soft`` (dense softmax, the paper), ``topk`` or ``task`` (MOELoRA-style task gate).
        top_k: Heads kept per token (required with ``topk``; optional with ``task``).
        n_tasks: Number of task ids (required with ``task``).
        balance_loss: ``None`` (the paper), ``cv2`` or ``switch``.
        balance_weight: Weight of the balance loss in :meth:`aux_loss`.
        independent_a: One down-projection per head (LoRAMoE-style).
    """

    def __init__(
        self,
        groups: Sequence[str] = DEFAULT_GROUPS,
        targets: Targets = None,
        n_heads: int = 3,
        rank: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.05,
        routing: str = "soft",
        top_k: int | None = None,
        n_tasks: int | None = None,
        balance_loss: str | None = None,
        balance_weight: float = 0.0,
        independent_a: bool = False,
    ) -> None:
        super().__init__(groups, None)
        self.targets = normalise_targets(targets)
        if n_heads < 1 or rank < 1:
            raise CrabzooError(f"I-LoRA needs n_heads >= 1 and rank >= 1, got n_heads={n_heads}, rank={rank}")
        if not 0.0 <= dropout < 1.0:
            raise CrabzooError(f"I-LoRA dropout must be in [0, 1), got {dropout}")
        if routing not in R.ROUTINGS:
            raise CrabzooError(f"unknown I-LoRA routing {routing!r}; choose one of {list(R.ROUTINGS)}")
        if routing == "topk" and top_k is None:
            raise CrabzooError("I-LoRA routing 'topk' needs top_k (e.g. top_k: 1)")
        if top_k is not None and not 1 <= top_k <= n_heads:
            raise CrabzooError(f"I-LoRA top_k must be in [1, n_heads={n_heads}], got {top_k}")
        if top_k is not None and routing == "soft":
            raise CrabzooError("I-LoRA top_k is set but routing is 'soft': use routing: topk")
        if routing == "task" and not n_tasks:
            raise CrabzooError("I-LoRA routing 'task' needs n_tasks (the number of task ids)")
        if balance_loss not in (None, *R.BALANCE_LOSSES):
            raise CrabzooError(f"unknown balance_loss {balance_loss!r}; choose null or one of {list(R.BALANCE_LOSSES)}")
        self.n_heads, self.rank, self.alpha, self.dropout = n_heads, rank, float(alpha), float(dropout)
        self.routing, self.top_k, self.n_tasks = routing, top_k, n_tasks
        self.balance_loss, self.balance_weight = balance_loss, float(balance_weight)
        self.independent_a = independent_a
        self.layers: dict[str, ILoRALinear] = {}
        self.resolved_targets: dict[str, tuple[str, ...]] = {}
        self.telemetry = RouterTelemetry()

    def config(self) -> dict:
        """Constructor arguments (with the targets actually used), for ``adapter.json``."""
        return {
            "class_path": f"{type(self).__module__}.{type(self).__qualname__}",
            "init_args": {
                "groups": list(self.groups),
                "targets": {g: list(v) for g, v in self.resolved_targets.items()} or self.targets,
                "n_heads": self.n_heads,
                "rank": self.rank,
                "alpha": self.alpha,
                "dropout": self.dropout,
                "routing": self.routing,
                "top_k": self.top_k,
                "n_tasks": self.n_tasks,
                "balance_loss": self.balance_loss,
                "balance_weight": self.balance_weight,
                "independent_a": self.independent_a,
            },
        }

    def make_layer(self, base: nn.Linear) -> ILoRALinear:
        """One adapted linear with this adapter's settings."""
        return ILoRALinear(
            base,
            n_heads=self.n_heads,
            rank=self.rank,
            alpha=self.alpha,
            dropout=self.dropout,
            routing=self.routing,
            top_k=self.top_k,
            n_tasks=self.n_tasks,
            balance_loss=self.balance_loss,
            balance_weight=self.balance_weight,
            independent_a=self.independent_a,
        )

    def apply(self, groups: dict[str, nn.Module], default_targets: Mapping[str, Sequence[str]]) -> list[str]:
        """Replace the target linears of each selected group by :class:`ILoRALinear` (in place).

        Returns:
            The adapted names, ``"<group>.<qualified name inside the group>"``.
        """
        if self.layers:
            raise CrabzooError("this I-LoRA adapter was already applied; build a new adapter for another model")
        self.resolved_targets = resolve_targets(self.groups, self.targets, default_targets)
        found = find_linears(groups, self.resolved_targets)
        for group, linears in found.items():
            for name, linear in linears.items():
                layer = self.make_layer(linear)
                layer.train(linear.training)
                layer.layer_name = f"{group}.{name}"
                layer.telemetry = self.telemetry
                replace_module(groups[group], name, layer)
                self.layers[layer.layer_name] = layer
        return list(self.layers)

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        for layer in self.layers.values():
            yield from layer.lora_parameters().values()

    def named_trainable_parameters(self) -> Iterable[tuple[str, nn.Parameter]]:
        """``("<group>.<name>.<lora_param>", parameter)`` pairs."""
        for lname, layer in self.layers.items():
            for pname, p in layer.lora_parameters().items():
                yield f"{lname}.{pname}", p

    def aux_loss(self) -> Tensor | None:
        """Sum of the layers' balance losses from the last training forward, or ``None``."""
        losses = [loss for layer in self.layers.values() if (loss := layer.pop_aux_loss()) is not None]
        return torch.stack([loss.float() for loss in losses]).sum() if losses else None

    def set_task_ids(self, task_ids: Tensor | None) -> None:
        """Task ids for ``task`` routing: per sample ``(B,)`` (broadcast over its tokens) or per token ``(B, L)``."""
        for layer in self.layers.values():
            layer.task_ids = task_ids

    def adapter_state_dict(self) -> dict[str, Tensor]:
        return {name: p.detach() for name, p in self.named_trainable_parameters()}

    def load_adapter_state_dict(self, state: dict[str, Tensor]) -> None:
        own = dict(self.named_trainable_parameters())
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise CrabzooError(
                f"I-LoRA weights do not fit this adapter: missing {missing[:3]}{'...' if len(missing) > 3 else ''}"
                f", unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
            )
        with torch.no_grad():
            for name, p in own.items():
                if tuple(state[name].shape) != tuple(p.shape):
                    raise CrabzooError(
                        f"I-LoRA weight {name} has shape {tuple(state[name].shape)}, expected {tuple(p.shape)}"
                    )
                p.copy_(state[name])

    def merge(self) -> None:
        raise CrabzooError(
            "I-LoRA cannot be merged into the base weights: its update sum_i g_i(x) B_i A depends on each "
            "token's router gates g(x), so it is not a fixed matrix (use n_heads: 1, i.e. LoRA, to merge)"
        )
