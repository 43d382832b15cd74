"""The package's layers (docs/architecture.md): every module belongs to one layer, imports only from its own layer
or lower ones, and no modules import each other in a circle. Imports are read from the source with `ast`, those
inside functions included, so a lazy import cannot hide an upward dependency."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ganforge"

# Lowest first. A module belongs to the layer of its longest listed prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("ganforge.version", "ganforge.errors", "ganforge.settings", "ganforge.config", "ganforge.safe_load",
                    "ganforge.download", "ganforge.distributed", "ganforge.augment.config")),
    ("building blocks", ("ganforge.nn", "ganforge.losses", "ganforge.data", "ganforge.metrics", "ganforge.augment",
                         "ganforge.viz.grid", "ganforge.viz.animation", "ganforge.viz.interpolate",
                         "ganforge.viz.nearest", "ganforge.training", "ganforge.training.log",
                         "ganforge.training.loss_scale", "ganforge.training.lookahead")),
    ("models", ("ganforge.models",)),
    ("families", ("ganforge.families",)),
    ("runs on disk", ("ganforge.training.checkpoint", "ganforge.run_loader")),
    ("evaluation and reports", ("ganforge.evaluation", "ganforge.viz.report", "ganforge.viz.plots",
                                "ganforge.viz.run_data")),
    ("engine", ("ganforge.training.engine", "ganforge.training.speed")),
    ("entry points", ("ganforge.api", "ganforge.interop")),
    ("applications", ("ganforge", "ganforge.viz", "ganforge.cli")),
]

# (importer, imported) pairs that may point upward, each with its reason; at most two. None is needed today.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    best, found = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), index
    assert found is not None, f"{module} is in no layer: add it to LAYERS in tests/test_layers.py"
    return found


def imports_of(module: str, path: Path, modules: set[str]) -> set[str]:
    """The ganforge modules `module` imports anywhere in its file (`from pkg import submodule` names the submodule)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from . import x` in a/b/c.py (package a.b) is a.b.x
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {name for name in found if name in modules and name != module}


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((source, target) for source, targets in graph.items() for target in targets
                  if layer_of(target) > layer_of(source))


def test_every_module_has_a_layer() -> None:
    for module in all_modules():
        layer_of(module)


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_no_unlisted_upward_imports() -> None:
    assert len(ALLOWED_UPWARD) <= 2 and all(reason.strip() for reason in ALLOWED_UPWARD.values())
    unlisted = [f"{source} ({LAYERS[layer_of(source)][0]}) → {target} ({LAYERS[layer_of(target)][0]})"
                for source, target in upward_imports(import_graph()) if (source, target) not in ALLOWED_UPWARD]
    assert not unlisted, "upward imports:\n" + "\n".join(unlisted)


def test_allowed_upward_imports_are_still_needed() -> None:
    stale = set(ALLOWED_UPWARD) - set(upward_imports(import_graph()))
    assert not stale, f"allow-list entries no longer used (remove them): {sorted(stale)}"


def test_the_check_catches_a_cycle_and_an_upward_import() -> None:
    graph = {"ganforge.losses": {"ganforge.nn.ema"}, "ganforge.nn.ema": {"ganforge.losses"},
             "ganforge.data.store": {"ganforge.api"}, "ganforge.api": set()}
    assert find_cycle(graph) == ["ganforge.losses", "ganforge.nn.ema", "ganforge.losses"]
    assert ("ganforge.data.store", "ganforge.api") in upward_imports(graph)
