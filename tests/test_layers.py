"""The package's layers, read from the source: lower layers never import higher ones,
nothing imports a stage, and no two modules import each other, directly or in a circle
(imports inside functions count: they only hide a circle)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "spelltune"

# Lowest first. A module may import its own package and any lower layer; the packages of
# one layer are beside each other and never import one another.
LAYERS = [
    {"spelltune"},  # params, paths, files, errors, repo: the schema and the shared plumbing
    {"spelltune.task"},
    {"spelltune.modeling"},
    {"spelltune.training"},
    {"spelltune.stages", "spelltune.experiments", "spelltune.sweeps"},
    {"spelltune.bench"},
    {"spelltune.cli"},  # the cli/ package: the `spelltune` command
]
STAGES = "spelltune.stages"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str) -> set[str]:
    """The spelltune modules `name` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "spelltune"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "spelltune":
            subs = {f"{node.module}.{a.name}" for a in node.names} & MODULES.keys()  # from spelltune.x import y
            found |= subs or {node.module}
    return {m for m in found if m in MODULES and m != name}


def group(name: str) -> str:
    """The package a module belongs to for layering: spelltune.x for spelltune.x and spelltune.x.*
    (the cli/ package too), else `spelltune` (a top-level module: params, paths, ...)."""
    parts = name.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()):
        return ".".join(parts[:2])
    return "spelltune"


def layer(name: str) -> int:
    return next(i for i, packages in enumerate(LAYERS) if group(name) in packages)


def test_every_module_has_a_layer():
    for name in MODULES:
        layer(name)


def test_lower_layers_never_import_higher_ones():
    wrong = []
    for name in MODULES:
        for target in imports(name):
            same = group(target) == group(name)
            if not same and layer(target) >= layer(name):
                wrong.append(f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})")
    assert not wrong, "\n".join(wrong)


def test_nothing_imports_a_stage():
    wrong = [f"{name} imports {target}" for name in MODULES for target in imports(name)
             if target.startswith(STAGES + ".")]
    assert not wrong, "\n".join(wrong)


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    return found


def test_no_import_circles():
    assert circles({name: imports(name) for name in MODULES}) == []


def test_a_circle_is_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
