"""Import layering: no module of a package imports, directly or through siblings, a module that imports it back.

Imports are read with ``ast`` from the source, including those inside functions (a function-level import only
delays a cycle, it does not remove it); imports under ``if TYPE_CHECKING:`` are left out (they never run).
Packages checked: the leaderboard (collect -> compare -> claims -> table -> render -> latex / html -> build ->
cli), the runner and its executors (runner -> executors), and the ContRec plugin (e.g. model -> packing ->
backbone).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# (package the files belong to, the files); plugins/ ships as genrec_bench_plugins.
GROUPS = {
    "leaderboard": ("genrec_bench.leaderboard", sorted((ROOT / "genrec_bench" / "leaderboard").glob("*.py"))),
    "runner": ("genrec_bench", [ROOT / "genrec_bench" / f for f in ("runner.py", "executors.py")]),
    "contrec": ("genrec_bench_plugins.contrec", sorted((ROOT / "plugins" / "contrec").glob("*.py"))),
}


def _module(package: str, path: Path) -> str:
    return package if path.stem == "__init__" else f"{package}.{path.stem}"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement outside ``if TYPE_CHECKING:`` bodies, with whether it sits inside a function."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append((node, in_function))
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            children: list[ast.AST] = list(node.orelse)
        else:
            children = list(ast.iter_child_nodes(node))
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in children:
            visit(child, inner)

    visit(tree, False)
    return found


def _targets(node: ast.Import | ast.ImportFrom, package: str, module: str) -> list[str]:
    """Full dotted names an import may load: the module imported from, and each name as a submodule."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module if module == package else module.rpartition(".")[0]  # the module's own package
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        source = f"{base}.{node.module}" if node.module else base
    else:
        source = node.module or ""
    return [source] + [f"{source}.{alias.name}" for alias in node.names]


def import_graph(package: str, files: list[Path]) -> dict[str, dict[str, bool]]:
    """module -> {sibling it imports: whether only inside functions}, for the modules of ``files``."""
    modules = {_module(package, path): path for path in files}
    graph: dict[str, dict[str, bool]] = {}
    for module, path in modules.items():
        edges: dict[str, bool] = {}
        for node, in_function in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            for target in _targets(node, package, module):
                if target in modules and target != module:
                    edges[target] = edges.get(target, True) and in_function
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, dict[str, bool]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None when the graph is a DAG."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_no_import_cycles(group):
    package, files = GROUPS[group]
    assert all(path.is_file() for path in files), [str(p) for p in files if not p.is_file()]
    cycle = find_cycle(import_graph(package, files))
    assert cycle is None, f"import cycle in {package}: {' -> '.join(cycle or [])}"


def test_leaderboard_imports_siblings_at_module_level():
    """A function-level import of a sibling is how a cycle hides; the leaderboard needs none."""
    package, files = GROUPS["leaderboard"]
    late = [f"{m} -> {t}" for m, edges in import_graph(package, files).items() for t, f in edges.items() if f]
    assert not late, f"function-level imports of siblings: {late}"


def test_checker_finds_cycles(tmp_path):
    """The checker itself: a cycle through a function-level import counts, one under TYPE_CHECKING does not."""
    (tmp_path / "a.py").write_text("from .b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from .c import y\n")
    (tmp_path / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import z\n")
    files = sorted(tmp_path.glob("*.py"))
    graph = import_graph("pkg", files)
    assert graph == {"pkg.a": {"pkg.b": False}, "pkg.b": {"pkg.c": True}, "pkg.c": {}}
    assert find_cycle(graph) is None
    (tmp_path / "c.py").write_text("import pkg.a\n")
    assert find_cycle(import_graph("pkg", files)) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    (tmp_path / "c.py").write_text("from . import a\n")
    assert find_cycle(import_graph("pkg", files)) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
