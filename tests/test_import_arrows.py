"""The house rule `trainer -> search_env <- agent_server` (docs/DESIGN.md), checked on the source: no module of
the trainer imports agent_server, neither server nor env imports the trainer, search_env imports neither, and
no import loop exists between modules of the three packages. Every import counts, those inside functions
and `if TYPE_CHECKING:` blocks too: a deferred import is still an arrow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("search_env", "agent_server", "trainer")
#: (importer package, imported package) pairs that break the rule
FORBIDDEN = {
    ("trainer", "agent_server"),
    ("search_env", "agent_server"),
    ("search_env", "trainer"),
    ("agent_server", "trainer"),
}


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module of ours that `import name` loads last (`a.b.c` -> `a.b` when c is a name in it)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(modules: dict[str, Path] | None = None) -> dict[str, set[str]]:
    """module -> the modules of ours it imports anywhere in its source."""
    modules = modules if modules is not None else _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps.update(r for a in node.names if (r := _resolve(a.name, modules)))
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the importer's package up
                    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                for alias in node.names:
                    resolved = _resolve(f"{base}.{alias.name}", modules) or _resolve(base, modules)
                    if resolved:
                        deps.add(resolved)
        deps.discard(name)
        graph[name] = deps
    return graph


def import_loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    loops.append(sorted(component))
    return loops


def test_no_arrow_points_the_wrong_way():
    graph = import_graph()
    assert len(graph) > 100  # the walk found the packages
    wrong = sorted(
        f"{module} -> {dep}"
        for module, deps in graph.items()
        for dep in deps
        if (module.split(".")[0], dep.split(".")[0]) in FORBIDDEN
    )
    assert not wrong, "imports against trainer -> search_env <- agent_server:\n" + "\n".join(wrong)


def test_no_import_loop():
    loops = import_loops(import_graph())
    assert not loops, "import loops:\n" + "\n".join(" <-> ".join(loop) for loop in loops)


def test_the_walk_sees_deferred_and_relative_imports_and_finds_loops(tmp_path):
    # The checks above pass on the real tree; this shows they would fail on a tree that breaks the rule.
    package = tmp_path / "trainer"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from agent_server.x import y\n    from . import b\n")
    (package / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from trainer.a import f\n")
    (tmp_path / "agent_server").mkdir()
    (tmp_path / "agent_server" / "__init__.py").write_text("")
    (tmp_path / "agent_server" / "x.py").write_text("y = 1\n")
    modules = {_module_name(p, tmp_path): p for p in tmp_path.rglob("*.py")}
    graph = import_graph(modules)
    assert graph["trainer.a"] == {"agent_server.x", "trainer.b"} and graph["trainer.b"] == {"trainer.a"}
    assert import_loops(graph) == [["trainer.a", "trainer.b"]]


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_is_walked(package):
    assert any(name.startswith(package + ".") for name in import_graph())
