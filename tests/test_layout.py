"""The package's shape (docs/DESIGN.md): no import cycles, counting imports made inside
functions and under `TYPE_CHECKING`; modules small enough to read; the worker is arq's face."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "premix"
MAX_LINES = 500
LONG_BY_NATURE = {"localnet/chain.py"}  # the chain model: LiteSVM, blocks, commitments, log


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """premix modules `path` imports anywhere in its body (a `from package import name` names
    the submodule when `name` is one)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return {module for module in found if module in modules and module != name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    graph = {module_name(path): imported_modules(path, modules) for path in paths}
    # Importing a submodule runs its package's __init__ first.
    for module in list(graph):
        parent = module.rpartition(".")[0]
        for imported in list(graph[module]):
            ancestor = imported.rpartition(".")[0]
            while (
                ancestor
                and ancestor not in (parent, module)
                and not module.startswith(ancestor + ".")
            ):
                graph[module].add(ancestor)
                ancestor = ancestor.rpartition(".")[0]
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == 1:
                return [*path[path.index(imported) :], imported]
            if imported not in state and (cycle := visit(imported)) is not None:
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)) is not None:
            return cycle
    return None


def test_no_module_imports_one_that_imports_it_back() -> None:
    cycle = find_cycle(import_graph())

    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_sees_function_level_and_type_checking_imports(tmp_path: Path) -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}

    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize(
    "path",
    [p for p in sorted(PACKAGE.rglob("*.py")) if p.relative_to(PACKAGE).as_posix()
     not in LONG_BY_NATURE],
    ids=lambda p: p.relative_to(PACKAGE).as_posix(),
)  # fmt: skip
def test_every_module_is_at_most_500_lines(path: Path) -> None:
    lines = len(path.read_text().splitlines())

    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines"
