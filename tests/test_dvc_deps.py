"""dvc.yaml's deps are complete: every file of the package a stage's code can import is
a dep of that stage, so that a change to it reruns the stage (and nothing else does)."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "spelltune"


def module_file(name: str) -> Path | None:
    """`spelltune.x.y` -> src/spelltune/x/y.py (or its package's __init__.py)."""
    parts = name.split(".")[1:]
    if name == "spelltune":
        return PACKAGE / "__init__.py"
    for candidate in (PACKAGE.joinpath(*parts).with_suffix(".py"), PACKAGE.joinpath(*parts, "__init__.py")):
        if parts and candidate.exists():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every `spelltune.*` module this file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("spelltune.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "spelltune":
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from spelltune import x`
    return found


def reachable(module: str) -> set[Path]:
    """The files `python -m module` runs: every module it imports, and the __init__.py of
    each package on the way (Python runs those first)."""
    todo, seen = [module], set()
    while todo:
        name = todo.pop()
        todo += [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]  # its parent packages
        file = module_file(name)
        if file is None or file in seen:
            continue
        seen.add(file)
        todo += imported_modules(file)
    return seen


def stage_modules() -> dict[str, str]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        words = stage["cmd"].split()
        if words[:2] == ["python", "-m"] and words[2].startswith("spelltune."):
            out[name] = words[2]
    return out


def test_every_stage_runs_a_module_of_the_package():
    assert set(stage_modules()) == set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])


def test_stage_deps_are_exactly_the_files_the_stage_imports():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    missing, extra = {}, {}
    for name, module in stage_modules().items():
        if stages[name].get("always_changed"):  # runs every time: its deps do not decide
            continue
        deps = {str(d) for d in stages[name].get("deps", [])}
        files = {str(f.relative_to(ROOT)) for f in reachable(module)}
        if lacking := sorted(f for f in files if f not in deps):
            missing[name] = lacking
        if unused := sorted(d for d in deps if d.startswith("src/") and d not in files):
            extra[name] = unused
    assert not missing, f"dvc.yaml: stages miss deps on files they import: {missing}"
    assert not extra, f"dvc.yaml: stages depend on package files they never import (a change would rerun them): {extra}"


def test_the_walk_follows_imports_inside_functions(tmp_path):
    # evaluate imports spelltune.modeling.generation only inside a function.
    assert PACKAGE / "modeling" / "generation.py" in reachable("spelltune.stages.evaluate")
    assert PACKAGE / "params.py" in reachable("spelltune.stages.validate")
    # and a module's packages run first
    assert PACKAGE / "modeling" / "__init__.py" in reachable("spelltune.stages.evaluate")
