"""The layout holds: no import circles, no Ray in the core, the two Ray layers side by side
(neither imports the other), no sys.path edits, and README's Layout section names every package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sentisweep", "ray_session", "sweeps", "ray_jobs", "analysis", "benchmarks")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` names, at any depth of the file; for
    `from a import b`, both `a` and `a.b` (b may be a module)."""
    named = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            named |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            named |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return named


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    modules = {module_name(p): p for p in files}
    return {name: {m for m in imports_of(path) if m in modules and m != name} | {
        m for m in imports_of(path) if m.split(".")[0] == "ray"} for name, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
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

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circles(graph):
    assert circles(graph) == []


def test_circles_are_found():  # the check above can fail
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_core_never_imports_ray(graph):
    assert {m for m, targets in graph.items() if m.startswith("sentisweep")
            and any(t.split(".")[0] == "ray" for t in targets)} == set()


def test_the_ray_layers_do_not_import_each_other(graph):
    crossing = [(m, t) for m, targets in graph.items() for t in targets
                if (m.startswith("sweeps") and t.startswith("ray_jobs"))
                or (m.startswith("ray_jobs") and t.startswith("sweeps"))]
    assert crossing == []


def test_nothing_edits_sys_path():
    edits = ("sys.path." + "insert", "sys.path." + "append")  # spelt apart: this file names them, edits neither
    ours = [p for p in ROOT.rglob("*.py")  # not a venv's (.venv, venv) or a cache's
            if not any(part.startswith(".") or part == "venv" for part in p.relative_to(ROOT).parts)]
    found = [str(p.relative_to(ROOT)) for p in ours if any(edit in p.read_text() for edit in edits)]
    assert found == []


def test_readme_layout_names_every_package_and_subpackage():
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    folders = [p.parent.name for package in PACKAGES for p in (ROOT / package).rglob("__init__.py")]
    assert [f for f in folders if f"{f}/ " not in layout] == []  # a subpackage indented under its parent
