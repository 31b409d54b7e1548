"""The dependency rule of the packages, checked on the source: every import between imgproxy's
packages points down the layers (TYPE_CHECKING and function-local imports count, as for
`devtools.layout_check`'s cycles).

    server -> app -> web -> {passthrough, transform, replication, metrics, cdn} -> cache
    cache -> {origin, http} -> {config, core};   replication -> cache;   metrics -> core;
    cdn -> http
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

import pytest

PACKAGE: Final = Path(__file__).resolve().parents[2] / "imgproxy"
BASE: Final = frozenset({"config", "core"})
# What each top-level module or package of imgproxy may import (besides itself).
ALLOWED: Final[dict[str, frozenset[str]]] = {
    "core": frozenset(),
    "config": frozenset(),
    "http": BASE,
    "origin": BASE,
    "metrics": frozenset({"core"}),
    "cache": BASE | {"http", "origin"},
    "replication": BASE | {"http", "origin", "cache"},
    "transform": BASE | {"http", "origin", "cache"},
    "passthrough": BASE | {"http"},
    "cdn": BASE | {"http"},
    "web": BASE | {"http", "origin", "cache", "replication", "transform", "passthrough", "metrics", "cdn"},
    "app": BASE
    | {"http", "origin", "cache", "replication", "transform", "passthrough", "metrics", "web", "cdn"}
    | {"tracing"},
    # OpenTelemetry behind core.tracing's protocol: only app imports it (when otel.enabled).
    "tracing": BASE,
    "server": BASE | {"app", "web"},
    # The main application's client: standard library and aiohttp, and transform.signing (stdlib only).
    "client": frozenset({"transform"}),
    "__main__": BASE | {"cache", "transform", "web", "server"},
}


def imports_of(unit: str) -> dict[str, list[str]]:
    """The other units `unit` imports, each with where (file:line)."""
    paths = (
        [PACKAGE / f"{unit}.py"]
        if (PACKAGE / f"{unit}.py").exists()
        else sorted((PACKAGE / unit).rglob("*.py"))
    )
    found: dict[str, list[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "imgproxy" and len(parts) > 1 and parts[1] != unit:
                    found.setdefault(parts[1], []).append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    return found


def test_every_unit_of_the_package_has_a_rule() -> None:
    """A new module or package at the top of imgproxy/ gets its place in the layers first."""
    units = {path.stem if path.is_file() else path.name for path in PACKAGE.iterdir()}
    units -= {"__init__", "__pycache__", "py"}
    assert units == set(ALLOWED)


@pytest.mark.parametrize("unit", sorted(ALLOWED))
def test_imports_point_down_the_layers(unit: str) -> None:
    """`unit` imports only the units below it."""
    forbidden = {target: where for target, where in imports_of(unit).items() if target not in ALLOWED[unit]}
    assert forbidden == {}
