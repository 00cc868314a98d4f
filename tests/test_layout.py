"""The package's structure: no private names across modules, no import cycles, a light ``import jaxvpp``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jaxvpp"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text(encoding="utf-8")) for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(tree: ast.Module, module: str, *, top_level_only: bool) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import of a jaxvpp module."""
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = []
    for node in nodes:
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.level == 0
            and node.module.split(".")[0] == "jaxvpp"
        ):
            out.extend((node.module, a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.Import):
            out.extend((a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == "jaxvpp")
    return out


def test_no_private_name_is_imported_across_modules():
    bad = []
    for module, tree in _modules().items():
        for source, name, line in _imports(tree, module, top_level_only=False):
            if name is not None and name.startswith("_"):
                bad.append(f"{module}:{line} imports {source}.{name}")
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for module, tree in mods.items():
        for source, name, _ in _imports(tree, module, top_level_only=True):
            target = f"{source}.{name}" if name is not None and f"{source}.{name}" in mods else source
            if target in mods and target != module:
                graph[module].add(target)
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n) :] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_function_level_imports_only_for_optional_dependencies():
    """Inside functions, jaxvpp imports only the modules that pull in matplotlib or cvxpy."""
    lazy_ok = {"jaxvpp.plots", "jaxvpp.reference"}
    bad = []
    for module, tree in _modules().items():
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if id(node) in top or not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for source, name, line in _imports(ast.Module(body=[node], type_ignores=[]), module, top_level_only=True):
                full = f"{source}.{name}" if name else source
                if source not in lazy_ok and full not in lazy_ok:
                    bad.append(f"{module}:{line} imports {full} inside a function")
    assert not bad, "\n".join(bad)


def test_import_jaxvpp_is_light():
    code = (
        "import sys, jaxvpp\n"
        "print(jaxvpp.coordinate, jaxvpp.solve_batteries, jaxvpp.sensitivities, jaxvpp.sweep, jaxvpp.run)\n"
        "heavy = [m for m in ('matplotlib', 'cvxpy', 'sklearn', 'clarabel') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
