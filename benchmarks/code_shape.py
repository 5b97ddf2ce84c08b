"""The shape of the code: the longest modules and the functions over a line limit.

Run from the repository root: `python benchmarks/code_shape.py [--top 15] [--limit 60] [--root src/zooprobe]`.
A module's size is its line count (as `wc -l`); a function's size is `end_lineno - lineno + 1` of its `def`
(decorators not counted, nested functions counted inside their parent and on their own).
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path


def module_lines(root: Path) -> list[tuple[int, str]]:
    rows = [(len(p.read_text().splitlines()), str(p.relative_to(root))) for p in sorted(root.rglob("*.py"))]
    return sorted(rows, key=lambda r: (-r[0], r[1]))


def long_functions(root: Path, limit: int) -> list[tuple[int, str]]:
    rows = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > limit:
                    rows.append((n, f"{path.relative_to(root)}:{node.lineno} {node.name}"))
    return sorted(rows, key=lambda r: (-r[0], r[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="src/zooprobe", help="package folder to measure")
    parser.add_argument("--top", type=int, default=15, help="how many of the longest modules to print")
    parser.add_argument("--limit", type=int, default=60, help="print functions longer than this many lines")
    parser.add_argument("--exclude", action="append", default=[], help="skip modules under this subfolder")
    args = parser.parse_args()
    root = Path(args.root)
    excluded = tuple(e.rstrip("/") + "/" for e in args.exclude)
    modules = [r for r in module_lines(root) if not r[1].startswith(excluded)]
    functions = [r for r in long_functions(root, args.limit) if not r[1].startswith(excluded)]
    print(f"modules: {len(modules)}, lines: {sum(n for n, _ in modules)}")
    print(f"top {args.top} modules by lines:")
    for n, name in modules[: args.top]:
        print(f"  {n:6d}  {name}")
    print(f"modules over 500 lines: {sum(1 for n, _ in modules if n > 500)}")
    print(f"functions over {args.limit} lines: {len(functions)}")
    for n, name in functions:
        print(f"  {n:6d}  {name}")


if __name__ == "__main__":
    main()
