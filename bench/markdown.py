"""The one Markdown renderer of the bench: a `Table` (title, header, rows of cells) to Markdown.

Each part's `rows` module turns its piece of the result JSON into tables; the cell helpers here
format numbers the same way everywhere ("n/a" when a figure is missing).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Table:
    title: str
    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    level: int = 2  # of the title's heading


def num(value: float | None, digits: int = 0) -> str:
    """`1,234.5`; "n/a" for a missing figure (None or NaN)."""
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}"


def pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value * 100:.1f}%"


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b of two figures of the same run; None when either is missing or b is 0."""
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def columns(spec: str) -> list[str]:
    """A header written as Markdown shows it: `"case | req/s | p99 ms"`."""
    return [name.strip() for name in spec.split(" | ")]


def pair(a: str, b: str) -> str:
    """Two figures in one cell: `a / b`."""
    return f"{a} / {b}"


def to_markdown(tables: Iterable[Table]) -> str:
    """Every table with rows as a Markdown section; a table without rows is left out."""
    lines: list[str] = []
    for table in tables:
        if not table.rows:
            continue
        lines += [f"{'#' * table.level} {table.title}", ""]
        lines.append("| " + " | ".join(table.header) + " |")
        lines.append("|" + "|".join(" --- " for _ in table.header) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in table.rows]
        lines.append("")
    return "\n".join(lines)
