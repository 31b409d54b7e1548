"""The replicas part's tables, from the result JSON: the setups side by side, the cold bursts, the
purge propagation. Columns: docs/benchmarks.md."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..markdown import Table, columns, num, pct
from .figures import ratio, shares


def tables(data: Mapping[str, Any]) -> list[Table]:
    report = data.get("replicas")
    if report is None:
        return []
    setups = report["setups"]
    title = f"{report['replicas']} replicas behind nginx"
    if setups:
        first = setups[0]
        title += f": {first['requests']:,} requests, {first['distinct_images']} distinct images"
    rows = []
    for s in setups:
        load, replicas = s["load"], s["replicas"]
        rows.append(
            [
                f"({s['key']}) {s['label']}",
                str(s["origin_gets"]),
                num(ratio(s["origin_gets"], s["distinct_images"]), 2),
                pct(s["hit_ratio"]),
                str(sum(r["redis_hits"] for r in replicas)) if s["redis"] else "-",
                num(load and load["rps_listed"]),
                num(load and load["p50_ms"], 2),
                num(load and load["p99_ms"], 2),
                "n/a" if load is None else str(load["failed"] + load["errors"]),
                " / ".join(pct(x) for x in shares([r["hits"] + r["misses"] for r in replicas])) or "n/a",
            ]
        )
    header = columns(
        "setup | origin GETs | per distinct image | hit ratio | Redis hits | req/s | p50 ms | p99 ms | "
        "errors | requests per replica"
    )
    bursts = [
        [
            f"({s['key']}) {s['label']}",
            ", ".join(str(b["origin_gets"]) for b in s["bursts"]),
            ", ".join(f"{b['ok']}/{b['clients']}" for b in s["bursts"]),
            ", ".join(num(b["last_s"] * 1000) for b in s["bursts"]),
            ", ".join(b["waits_served"] for b in s["bursts"]) if s["redis"] else "-",
            ", ".join(str(b["redis_errors"]) for b in s["bursts"]) if s["redis"] else "-",
        ]
        for s in setups
        if s["bursts"]
    ]
    burst_header = ["setup", "origin GETs per burst", "200 + body", "last ms", "waits served", "Redis errors"]
    bound_s = report["purge_bound_s"]
    purges = [
        [
            f"({s['key']}) {s['label']}",
            str(p["purges"]),
            str(p["deliveries"]),
            num(p["p50_ms"], 1),
            num(p["p99_ms"], 1),
            num(p["max_ms"], 1),
            f"{sum(d <= bound_s for d in p['delays_s'])}/{p['deliveries'] + p['missed']}",
            str(p["missed"]),
            str(p["not_logged"]),
        ]
        for s in setups
        if (p := s["propagation"]) is not None
    ]
    purge_header = columns(
        f"setup | purges | deliveries | p50 ms | p99 ms | max ms | within {bound_s:g} s | missed | not logged"
    )
    notes = [*report["notes"], *(f"({s['key']}): {n}" for s in setups for n in s["notes"])]
    notes += [
        f"({s['key']}) load average before: {s['loadavg_before']}" for s in setups if s["loadavg_before"]
    ]
    return [
        Table(title, header, rows),
        Table(
            "Replicas: cold bursts, 100 concurrent GETs of a fresh 200 KiB blob each", burst_header, bursts
        ),
        Table("Replicas: purge propagation", purge_header, purges),
        Table("Replicas: notes", ["note"], [[n] for n in notes]),
    ]
