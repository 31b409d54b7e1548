"""The Markdown report, made from the result JSON alone: the run's facts, then every part's tables.

    python -m bench.render bench/results/<UTC time>.json    # prints that run's report again

`make bench` writes the JSON (the record) and this rendering of it side by side. What the figures
mean and how to read them: docs/benchmarks.md.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from . import compare
from .cache import rows as cache_rows
from .markdown import Table, num, to_markdown
from .passthrough import rows as passthrough_rows
from .replicas import rows as replica_rows
from .transforms import rows as transform_rows

PARTS: Final[tuple[Callable[[Mapping[str, Any]], list[Table]], ...]] = (
    cache_rows.tables,
    passthrough_rows.tables,
    compare.tables,
    replica_rows.tables,
    transform_rows.tables,
)


def facts(data: Mapping[str, Any]) -> list[str]:
    env = data.get("environment", {})
    settings = data.get("settings", {})
    return [
        f"# imgproxy benchmark, {data['started']}",
        "",
        f"- Host: `{env.get('hostname')}`, CPU: {env.get('cpu')}, cores: {env.get('cores')}, "
        f"kernel {env.get('kernel')}",
        f"- nginx: {env.get('nginx')}; Varnish: {env.get('varnish')}; wrk: {env.get('wrk')}",
        f"- Python {env.get('python')}, aiohttp {env.get('aiohttp')}, uvloop {env.get('uvloop')}",
        f"- Azurite {env.get('azurite')}",
        "- Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()),
        f"- Whole run: {num(data.get('seconds'))} s; load average before it: {env.get('loadavg')}",
        "- Method and columns: docs/benchmarks.md",
        "",
    ]


def run_tables(data: Mapping[str, Any]) -> list[Table]:
    """The targets as started (and warmed) and the run's notes (skipped targets, failures)."""
    warm = data.get("warm", {})
    targets = [
        [name, "; ".join(notes), warm.get(name, "-")] for name, notes in data.get("target_notes", {}).items()
    ]
    return [
        Table("Targets", ["target", "as started", "warm-up"], targets),
        Table("Notes", ["note"], [[note] for note in data.get("notes", [])]),
    ]


def render(data: Mapping[str, Any]) -> str:
    tables = run_tables(data) + [table for part in PARTS for table in part(data)]
    return "\n".join(facts(data)) + "\n" + to_markdown(tables)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    print(render(json.loads(Path(argv[0]).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
