#!/usr/bin/env python3
"""Layout check for a Python package: import cycles and module sizes.

    python -m devtools.layout_check [PACKAGE_DIR] [--max-lines N]

Reads every module under PACKAGE_DIR (default: imgproxy) with `ast`, without importing anything,
and builds the graph of imports between its modules. Every import counts: top-level, inside
functions, and under `if TYPE_CHECKING:` (a cycle hidden from the interpreter is still a cycle for
the reader). `from pkg import name` counts as an import of `pkg.name` when that is a module, else
of `pkg` (its `__init__`). Prints each cycle (strongly connected component) with the imports that
tie it, and each module over --max-lines (default 400) lines. Exit 1 if there is either.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(current: str, is_package: bool, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    base = current.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports_of(path: Path, name: str, modules: set[str]) -> dict[str, list[int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    found: dict[str, list[int]] = {}

    def add(target: str, line: int) -> None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.setdefault(target, []).append(line)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = resolve(name, is_package, node.level, node.module)
            for alias in node.names:
                full = f"{base}.{alias.name}" if base else alias.name
                add(full if full in modules else base, node.lineno)
    return found


def cycles(graph: dict[str, dict[str, list[int]]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", nargs="?", default="imgproxy")
    ap.add_argument("--max-lines", type=int, default=400)
    args = ap.parse_args()
    root = Path(args.package).resolve()
    if not (root / "__init__.py").exists():
        print(f"layout_check: {root} is not a package (no __init__.py)")
        return 2
    files = {module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    graph = {name: imports_of(path, name, modules) for name, path in files.items()}
    bad = 0
    for comp in cycles(graph):
        bad += 1
        print(f"cycle of {len(comp)} modules: {', '.join(comp)}")
        members = set(comp)
        for a in comp:
            for b, lines in sorted(graph[a].items()):
                if b in members:
                    print(f"    {a} -> {b} (line {', '.join(map(str, lines))})")
    for _name, path in sorted(files.items()):
        n = sum(1 for _ in path.open(encoding="utf-8"))
        if n > args.max_lines:
            bad += 1
            print(f"long module: {path.relative_to(root.parent)} has {n} lines (> {args.max_lines})")
    edges = sum(len(v) for v in graph.values())
    print(f"layout_check: {len(files)} modules, {edges} imports between them, {bad} finding(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
