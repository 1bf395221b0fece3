"""``crabzoo list``: every available component, by role.

crabzoo's own components are found by reading the package's source (no import, so the command is instant);
third-party components are found through the ``crabzoo.components`` entry-point group and classified by their
base class. Any subclass of a role's base class works in YAML through ``class_path`` whether listed or not.
"""

from __future__ import annotations

import argparse
import ast
import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

ROLES: dict[str, tuple[str, ...]] = {
    "audio encoders": ("AudioEncoder",),
    "visual encoders": ("VisualEncoder",),
    "connectors": ("Connector", "FusionConnector"),
    "backbones": ("Backbone",),
    "adapters": ("Adapter",),
    "heads": ("MaskPrompter", "MaskHead"),
    "paradigms": ("AVLLM",),
    "data modules": ("AVUIEDataModule",),
    "tasks": ("Task",),
}
"""Role -> names of the base classes that define it (as written in crabzoo's sources)."""

CONCRETE_ROOTS = frozenset({"AVLLM", "AVUIEDataModule"})
"""Role roots that are themselves usable components (the others are abstract contracts)."""

BASE_PATHS: dict[str, str] = {
    "AudioEncoder": "crabzoo.encoders.base.AudioEncoder",
    "VisualEncoder": "crabzoo.encoders.base.VisualEncoder",
    "Connector": "crabzoo.connectors.base.Connector",
    "FusionConnector": "crabzoo.connectors.base.FusionConnector",
    "Backbone": "crabzoo.backbones.base.Backbone",
    "Adapter": "crabzoo.adapters.base.Adapter",
    "AVLLM": "crabzoo.paradigms.base.AVLLM",
    "MaskHead": "crabzoo.heads.base.MaskHead",
    "Task": "crabzoo.tasks.base.Task",
}


@dataclass(frozen=True)
class Component:
    """One listed component: its role, import path and one-line summary."""

    role: str
    path: str
    summary: str


def _scan_sources(root: Path) -> dict[str, tuple[str, list[str], str, bool, bool]]:
    """Class name -> (import path, base names, first docstring line, is abstract, assigns ``name``) for crabzoo's sources."""
    classes: dict[str, tuple[str, list[str], str, bool, bool]] = {}
    for file in sorted(root.rglob("*.py")):
        module = "crabzoo." + ".".join(file.relative_to(root).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        try:
            tree = ast.parse(file.read_text())
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in tree.body:
            if not isinstance(node, ast.ClassDef):
                continue
            bases = [b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else "" for b in node.bases]
            doc = (ast.get_docstring(node) or "").strip().splitlines()
            names = {t.id for item in node.body if isinstance(item, (ast.Assign, ast.AnnAssign))
                     for t in (item.targets if isinstance(item, ast.Assign) else [item.target]) if isinstance(t, ast.Name)}
            abstract = "ABC" in bases or node.name.startswith(("Base", "_")) or any(
                isinstance(d, ast.Name) and d.id == "abstractmethod"
                for item in node.body
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
                for d in item.decorator_list
            )
            classes.setdefault(node.name, (f"{module}.{node.name}", bases, doc[0] if doc else "", abstract, "name" in names))
    return classes


def _role_of(name: str, classes: dict[str, tuple[str, list[str], str, bool, bool]], seen: frozenset = frozenset()) -> str | None:
    if name in seen or name not in classes:
        return None
    for role, roots in ROLES.items():
        if name in roots:
            return role
    for base in classes[name][1]:
        for role, roots in ROLES.items():
            if base in roots:
                return role
        found = _role_of(base, classes, seen | {name})
        if found:
            return found
    return None


def builtin_components() -> list[Component]:
    """crabzoo's own concrete components, found by reading its sources."""
    root = Path(__file__).parent
    classes = _scan_sources(root)
    found = []
    for name, (path, _, summary, abstract, named) in classes.items():
        role = _role_of(name, classes)
        if role == "tasks" and not named:  # task families without a folder name are shared bases
            continue
        is_contract = any(name in roots for roots in ROLES.values()) and name not in CONCRETE_ROOTS
        if role and not abstract and not is_contract:
            found.append(Component(role, path, summary))
    return found


def plugin_components() -> list[Component]:
    """Components registered by other packages under the ``crabzoo.components`` entry-point group."""
    found = []
    for ep in entry_points(group="crabzoo.components"):
        try:
            obj = ep.load()
        except Exception as err:  # a broken plugin must not break the listing
            found.append(Component("unloadable plugins", ep.value, f"{type(err).__name__}: {err}"))
            continue
        role = "other plugins"
        for r, bases in ROLES.items():
            for base in bases:
                if base in BASE_PATHS:
                    mod, _, cls = BASE_PATHS[base].rpartition(".")
                    if isinstance(obj, type) and issubclass(obj, getattr(importlib.import_module(mod), cls)):
                        role = r
        doc = (obj.__doc__ or "").strip().splitlines()
        found.append(Component(role, f"{obj.__module__}.{obj.__qualname__}", doc[0] if doc else ""))
    return found


WEIGHTS_ROLE = "pretrained weights"
"""The last section of the listing: real checkpoints shipped inside packages (:mod:`crabzoo.pretrained`)."""


def print_packaged_weights() -> None:
    """One line per packaged weight: its YAML name, what it is, its licence, and whether it is installed."""
    from crabzoo.pretrained import PREFIX, WEIGHTS, available

    print(f"{WEIGHTS_ROLE} (name them in YAML as {PREFIX}NAME; see docs/pretrained.md):")
    width = max(len(PREFIX + n) for n in WEIGHTS)
    for name, w in WEIGHTS.items():
        state = "installed" if available(name) else f"not installed: {w.install}"
        print(f"  {PREFIX + name:<{width}}  {w.role}, {w.upstream}, {w.licence} ({state}) -> {w.component}")
    print()


def main(argv: list[str]) -> None:
    """``crabzoo list [--role ROLE] [--no-plugins]``."""
    parser = argparse.ArgumentParser(prog="crabzoo list", description="List every available component by role.")
    parser.add_argument("--role", help=f"only this role: {', '.join([*ROLES, WEIGHTS_ROLE])}")
    parser.add_argument("--no-plugins", action="store_true", help="skip the crabzoo.components entry points")
    args = parser.parse_args(argv)
    components = builtin_components() + ([] if args.no_plugins else plugin_components())
    roles = list(ROLES) + sorted({c.role for c in components} - set(ROLES)) + [WEIGHTS_ROLE]
    if args.role:
        if args.role not in roles:
            from crabzoo.errors import CrabzooError

            raise CrabzooError(f"unknown role {args.role!r}; choose from {', '.join(roles)}")
        roles = [args.role]
    for role in roles:
        if role == WEIGHTS_ROLE:
            print_packaged_weights()
            continue
        items = sorted((c for c in components if c.role == role), key=lambda c: c.path)
        if not items:
            continue
        print(f"{role}:")
        width = max(len(c.path) for c in items)
        for c in items:
            print(f"  {c.path:<{width}}  {c.summary}")
        print()
