"""The pass-through part's table, from the result JSON: throughput at N connections, latency one
request at a time, what a hop adds over `direct`, req/s over nginx's. Columns: docs/benchmarks.md."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from ..markdown import Table, columns, num, ratio


def tables(data: Mapping[str, Any]) -> list[Table]:
    loads = [row for row in data.get("loads", []) if row["workload"].startswith("pass-")]
    single = {(row["target"], row["workload"]): row for row in data.get("single_connection", [])}
    nginx = {row["workload"]: row["median"]["rps"] for row in loads if row["target"] == "nginx"}
    rows = []
    for row in loads:
        median = row["median"]
        one = single.get((row["target"], row["workload"]))
        direct = single.get(("direct", row["workload"]))
        rows.append(
            [
                row["workload"],
                row["target"],
                num(median["rps"]),
                num(median["mb_s"], 1),
                num(median["p50_ms"], 2),
                num(median["p99_ms"], 2),
                str(row.get("errors", sum(r["errors"] for r in row["runs"]))),
                num(one and one["median"]["p50_ms"], 3),
                num(
                    one
                    and one["median"].get("mean_ms", statistics.median(r["mean_ms"] for r in one["runs"])),
                    3,
                ),
                num(one["median"]["p50_ms"] - direct["median"]["p50_ms"] if one and direct else None, 3),
                num(ratio(median["rps"], nginx.get(row["workload"])), 2),
            ]
        )
    connections = data.get("settings", {}).get("connections", "?")
    header = columns(
        "workload | target | req/s | MB/s | p50 ms | p99 ms | errors | 1 conn p50 ms | 1 conn mean ms | "
        "added ms (1 conn p50 - direct's) | req/s / nginx"
    )
    return [Table(f"Pass-through: in front of an app ({connections} connections, and 1)", header, rows)]
