"""No import cycles in the attnmt package, counting imports inside functions too.

A function-level import only delays a cycle to the first call, and modules that import each other
can no longer be read, tested or changed one at a time: any cycle fails, with its modules named.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "attnmt"


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, packages named by their folder (attnmt.data for data/__init__.py)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = (package.name, *path.relative_to(package).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every dotted name an import statement anywhere in `tree` names (relative ones made absolute)."""
    names = set()
    for node in ast.walk(tree):  # walks function bodies as well as the module level
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return names


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package modules it imports, including the packages whose __init__ an import runs."""
    known = modules(package)
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for target in imported_names(tree, name, path.name == "__init__.py"):
            parts = target.split(".")
            for depth in range(1, len(parts) + 1):  # a.b.c runs a/__init__, a/b/__init__, then a/b/c
                candidate = ".".join(parts[:depth])
                # a module's own packages are initialised before it runs: not edges
                if candidate in known and candidate != name and not name.startswith(candidate + "."):
                    graph[name].add(candidate)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per back edge found by a depth-first search, as [a, b, ..., a]."""
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == "open":
                cycles.append(stack[stack.index(child):] + [child])
            elif child not in state:
                visit(child)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_the_package_has_no_import_cycles() -> None:
    graph = import_graph()
    assert {"attnmt.inference", "attnmt.translate", "attnmt.models.seq2seq"} <= set(graph)
    assert "attnmt.inference" in graph["attnmt.translate"] and "attnmt.checkpoint" in graph["attnmt.inference"]
    assert "attnmt.data.tokenizer" in graph["attnmt.checkpoint"]  # a function-level import counts
    cycles = find_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_cycles_through_function_level_and_relative_imports_are_found(tmp_path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from . import b\n")
    (package / "a.py").write_text("def late():\n    from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("from ..a import late\n")
    (package / "c.py").write_text("import pkg.sub.b\n")
    graph = import_graph(package)
    assert graph["pkg.c"] == {"pkg.sub", "pkg.sub.b"}  # importing pkg.sub.b runs pkg/sub/__init__ first
    assert find_cycles(graph) == [["pkg.a", "pkg.sub", "pkg.sub.b", "pkg.a"]]
