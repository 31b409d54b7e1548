"""`bench.report.render`: medians, ratios to each anchor and the burst summary, from known figures."""

from __future__ import annotations

from collections import Counter

from bench.client import BurstResult
from bench.report import BurstRow, LoadRow, Report, render
from bench.wrk import WrkResult


def wrk(rps: float, p50_ms: float, p99_ms: float) -> WrkResult:
    return WrkResult(
        requests=int(rps * 10),
        wire_bytes=0,
        duration_s=10.0,
        errors=0,
        p50_ms=p50_ms,
        p90_ms=p50_ms,
        p99_ms=p99_ms,
        p999_ms=p99_ms,
        mean_ms=p50_ms,
        max_ms=p99_ms,
        raw="",
    )


def burst(last_s: float) -> BurstResult:
    return BurstResult(100, 100, 0.01, last_s, last_s / 2, Counter({200: 100}), Counter({"MISS": 100}))


def row(target: str, *runs: WrkResult) -> LoadRow:
    return LoadRow(target, "hit-20k", mean_body_bytes=20_000, runs=list(runs))


def table_row(text: str, first_cell: str) -> list[str]:
    line = next(x for x in text.splitlines() if x.startswith(f"| {first_cell} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_ratios_are_of_the_medians_to_each_anchor_of_the_same_run() -> None:
    report = Report("2026-11-28 00:00:00 UTC", {"repeat": "3"})
    report.loads = [
        # Medians: imgproxy 30,000 req/s, p50 2 ms; the outlier runs must not count.
        row("imgproxy", wrk(30_000, 2.0, 4.0), wrk(1_000, 50.0, 90.0), wrk(31_000, 1.0, 3.0)),
        row("nginx", wrk(60_000, 1.0, 2.0), wrk(60_000, 1.0, 2.0), wrk(60_000, 1.0, 2.0)),
        row("varnish", wrk(40_000, 4.0, 8.0), wrk(40_000, 4.0, 8.0), wrk(40_000, 4.0, 8.0)),
        row("bare", wrk(20_000, 2.0, 4.0), wrk(20_000, 2.0, 4.0), wrk(20_000, 2.0, 4.0)),
    ]
    report.bursts = {
        "imgproxy": [BurstRow("imgproxy", burst(s), 1, 0) for s in (0.12, 0.50, 0.14)],
        "varnish": [BurstRow("varnish", burst(s), 1, 0) for s in (0.20, 0.16, 0.18)],
    }
    text = render(report)

    # imgproxy's own row: the median run.
    assert table_row(text, "hit-20k")[:4] == ["hit-20k", "imgproxy", "30,000", "600.0"]
    cells = table_row(text.split("relative to the anchors")[1], "hit-20k")
    # req/s over nginx, Varnish, bare; then p50 over the same; then p99.
    assert cells == ["hit-20k", "0.50", "0.75", "1.50", "2.00", "0.50", "1.00", "2.00", "0.50", "1.00"]
    assert (
        "Last response, median over the bursts: imgproxy 140 ms, varnish 180 ms; imgproxy / varnish 0.78."
        in text
    )


def pass_row(target: str, workload: str, *runs: WrkResult) -> LoadRow:
    return LoadRow(target, workload, mean_body_bytes=1024, runs=list(runs))


def test_pass_through_rows_have_their_own_table_with_added_latency_and_nginx_ratio() -> None:
    """pass-* rows leave the cache tables; their table shows the one-connection latency, what a hop
    adds over `direct` (median latency difference) and the req/s ratio to nginx, all of medians."""
    report = Report("2026-12-01 00:00:00 UTC", {"repeat": "1", "connections": "64"})
    report.loads = [
        row("imgproxy", wrk(30_000, 2.0, 4.0)),
        pass_row("imgproxy", "pass-1k", wrk(30_000, 2.0, 6.0)),
        pass_row("nginx", "pass-1k", wrk(50_000, 1.0, 2.0)),
        pass_row("direct", "pass-1k", wrk(80_000, 0.5, 1.0)),
    ]
    report.single = [
        pass_row("imgproxy", "pass-1k", wrk(6_000, 0.15, 0.3)),
        pass_row("nginx", "pass-1k", wrk(12_000, 0.08, 0.2)),
        pass_row("direct", "pass-1k", wrk(30_000, 0.03, 0.1)),
    ]
    text = render(report)
    cache_table = text.split("## Throughput and latency")[1].split("##")[0]
    assert "pass-1k" not in cache_table
    section = text.split("## Pass-through")[1].split("## Memory")[0]
    # `added` is imgproxy's one-connection p50 minus direct's: 0.150 - 0.030.
    assert table_row(section, "pass-1k")[1:] == [
        "imgproxy", "30,000", "30.7", "2.00", "6.00", "0", "0.150", "0.150", "0.120", "0.60",
    ]  # fmt: skip
    nginx = next(r for r in section.splitlines() if r.startswith("| pass-1k | nginx |"))
    assert nginx.split("|")[-2].strip() == "1.00"
    assert "64 connections" in section
