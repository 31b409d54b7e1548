"""The cache part's tables, from the result JSON: hits per target, imgproxy / each anchor, the cold
bursts, memory. What the columns mean: docs/benchmarks.md."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any, Final

from ..markdown import Table, columns, num, ratio

ANCHORS: Final = ("nginx", "varnish", "bare")
MB: Final = 1e6
MIB: Final = 1024 * 1024
METRICS: Final = (("req/s", "rps"), ("p50", "p50_ms"), ("p99", "p99_ms"))


def cache_loads(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [row for row in data.get("loads", []) if not row["workload"].startswith("pass-")]


def tables(data: Mapping[str, Any]) -> list[Table]:
    return [*load_tables(cache_loads(data)), *burst_tables(data.get("bursts", {})), memory_table(data)]


def load_tables(loads: list[Mapping[str, Any]]) -> list[Table]:
    header = ["workload", "target", "req/s", "MB/s", "p50 ms", "p99 ms", "errors", "origin req"]
    rows = [
        [
            row["workload"],
            row["target"],
            num(row["median"]["rps"]),
            num(row["median"]["mb_s"], 1),
            num(row["median"]["p50_ms"], 2),
            num(row["median"]["p99_ms"], 2),
            str(row.get("errors", sum(r["errors"] for r in row["runs"]))),
            str(sum(row["origin_requests"])),
        ]
        for row in loads
    ]
    by_key = {(row["target"], row["workload"]): row["median"] for row in loads}
    anchors = [a for a in ANCHORS if any(target == a for target, _ in by_key)]
    ratio_rows = [
        [
            workload,
            *(
                num(ratio(median[key], anchor[key] if (anchor := by_key.get((a, workload))) else None), 2)
                for _, key in METRICS
                for a in anchors
            ),
        ]
        for (target, workload), median in by_key.items()
        if target == "imgproxy"
    ]
    ratio_header = ["workload", *(f"{label} / {a}" for label, _ in METRICS for a in anchors)]
    return [
        Table("Cache: hits (wrk, medians)", header, rows),
        Table("Cache: imgproxy / anchor (same run)", ratio_header, ratio_rows if anchors else []),
    ]


def burst_tables(bursts: Mapping[str, list[Mapping[str, Any]]]) -> list[Table]:
    header = columns(
        "target | origin GETs | other origin req | last ms | first ms | median ms | 200 + body | X-Cache"
    )
    rows = [
        [
            target + (f" #{index + 1}" if len(runs) > 1 else ""),
            str(b["origin_gets"]) if target != "bare" else "0 (preloaded)",
            str(b["origin_other_requests"]),
            num(b["last_s"] * 1000),
            num(b["first_s"] * 1000),
            num(b["median_s"] * 1000),
            f"{b['ok']}/{b['clients']}",
            ", ".join(f"{k} {v}" for k, v in sorted(b["x_cache"].items())),
        ]
        for target, runs in bursts.items()
        for index, b in enumerate(runs)
    ]
    last = {t: statistics.median(b["last_s"] for b in runs) for t, runs in bursts.items() if runs}
    medians = [
        [t, num(v * 1000), num(ratio(last.get("imgproxy"), v), 2) if t != "imgproxy" else "-"]
        for t, v in last.items()
    ]
    return [
        Table("Cache: cold burst, 100 concurrent GETs of one uncached 2 MiB blob", header, rows),
        Table(
            "Cache: cold burst, last response (median over the bursts)",
            ["target", "ms", "imgproxy / target"],
            medians,
        ),
    ]


def memory_table(data: Mapping[str, Any]) -> Table:
    title = "Cache: memory of imgproxy while 20 clients stream the 200 MiB blob"
    m = data.get("memory")
    if m is None:
        note = data.get("memory_note")
        return Table(title, ["figure", "value"], [["not measured", note]] if note else [])
    peak, seconds = m["peak_vmhwm"], m["seconds"]
    return Table(
        title,
        ["figure", "value"],
        [
            ["peak RSS (VmHWM, MiB, sum over the serving processes)", num(sum(peak.values()) / MIB, 1)],
            ["per process (MiB)", ", ".join(f"pid {pid}: {v / MIB:.1f}" for pid, v in peak.items())],
            ["VmHWM right after start (MiB)", num(sum(m["idle_vmhwm"].values()) / MIB, 1)],
            ["streams complete", f"{m['complete']}/{m['clients']}"],
            ["time for all streams (s)", num(seconds, 1)],
            ["MB/s, all streams", num(ratio(m["bytes_read"] / MB, seconds))],
        ],
    )
