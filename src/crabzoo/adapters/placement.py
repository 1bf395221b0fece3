"""Where adapters go: module groups and linear-name suffixes.

A suffix matches the *last* component of a qualified module name: ``q_proj`` matches
``model.layers.0.self_attn.q_proj`` but not ``model.layers.0.self_attn.q_proj_extra``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from crabzoo.errors import CrabzooError

Targets = Sequence[str] | Mapping[str, Sequence[str]] | None
"""Suffixes for every group, or a mapping group -> suffixes, or ``None`` (each group's defaults)."""


def normalise_targets(targets: Targets) -> tuple[str, ...] | dict[str, tuple[str, ...]] | None:
    """Tuples instead of lists; a single string is one suffix (not its characters)."""
    if targets is None:
        return None
    if isinstance(targets, str):
        return (targets,)
    if isinstance(targets, Mapping):
        return {g: (v,) if isinstance(v, str) else tuple(v) for g, v in targets.items()}
    return tuple(targets)


def resolve_targets(
    group_names: Sequence[str], targets: Targets, default_targets: Mapping[str, Sequence[str]]
) -> dict[str, tuple[str, ...]]:
    """Suffixes to adapt per selected group.

    Args:
        group_names: The groups the adapter was configured for.
        targets: The adapter's ``targets`` argument.
        default_targets: Group -> suffixes owned by the backbone/encoders.

    Raises:
        CrabzooError: A group has neither explicit targets nor defaults.
    """
    resolved: dict[str, tuple[str, ...]] = {}
    for group in group_names:
        if isinstance(targets, Mapping):
            suffixes = targets.get(group, default_targets.get(group))
        elif targets is not None:
            suffixes = targets
        else:
            suffixes = default_targets.get(group)
        if not suffixes:
            raise CrabzooError(
                f"adapter group {group!r} has no target suffixes: set `targets` (e.g. [q_proj, v_proj]) "
                f"or give the group default targets (known defaults: {sorted(default_targets)})"
            )
        resolved[group] = tuple(suffixes)
    return resolved


def find_linears(
    groups: Mapping[str, nn.Module], targets: Mapping[str, Sequence[str]]
) -> dict[str, dict[str, nn.Linear]]:
    """Find the ``nn.Linear`` modules to adapt, per group.

    Args:
        groups: Group name -> module.
        targets: Group name -> suffixes (the output of :func:`resolve_targets`).

    Returns:
        Group -> {qualified name inside the group -> linear}, in module order.

    Raises:
        CrabzooError: An unknown group, or a suffix that matches no linear of its group.
    """
    found: dict[str, dict[str, nn.Linear]] = {}
    for group, suffixes in targets.items():
        if group not in groups:
            raise CrabzooError(
                f"adapter group {group!r} does not exist in this model; available groups: {sorted(groups)}"
            )
        linears = {name: m for name, m in groups[group].named_modules() if isinstance(m, nn.Linear) and name}
        selected = {name: m for name, m in linears.items() if name.rsplit(".", 1)[-1] in suffixes}
        for suffix in suffixes:
            if not any(name.rsplit(".", 1)[-1] == suffix for name in selected):
                existing = sorted({name.rsplit(".", 1)[-1] for name in linears})
                raise CrabzooError(
                    f"adapter target {suffix!r} matches no nn.Linear in group {group!r}; "
                    f"linear names there end in: {existing}"
                )
        found[group] = selected
    return found


def replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` at the dotted path ``name`` inside ``root``."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
