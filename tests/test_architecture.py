"""The layout rules of docs/architecture.md, enforced: layers (import-linter, also run by `make test`), no
import cycles between modules, and imports inside function bodies only for heavy libraries, each saying so."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "zooprobe"


def _lint_imports() -> str | None:
    found = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    return found if Path(found).exists() else None


@pytest.mark.skipif(_lint_imports() is None, reason="import-linter is not installed (pip install -e .[dev])")
def test_layers_contract_is_kept() -> None:
    root = SRC.parents[1]
    r = subprocess.run([_lint_imports()], capture_output=True, text=True, cwd=root)  # type: ignore[list-item]
    assert r.returncode == 0 and " kept, 0 broken" in r.stdout, r.stdout + r.stderr


def test_no_import_cycles_between_modules() -> None:
    import grimp

    graph = grimp.build_graph("zooprobe", include_external_packages=False)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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
                cycles.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def test_function_level_imports_are_heavy_and_say_so() -> None:
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    text = " ".join(lines[inner.lineno - 1 : inner.end_lineno])
                    if "# heavy" not in text:
                        offenders.append(f"{path.relative_to(SRC)}:{inner.lineno}")
    assert not offenders, f"imports inside functions without a '# heavy: why' comment: {offenders}"
