"""The cache and pass-through tables (`bench.cache.rows`, `bench.passthrough.rows`), rendered from
the result JSON: medians, ratios to each anchor of the same run, bursts, memory, the hop's latency."""

from __future__ import annotations

from collections import Counter

from bench.cache.figures import BurstRow, MemoryFigure
from bench.client import BurstResult, StreamsResult
from bench.render import render
from bench.report import LoadRow, Report
from bench.wrk import WrkResult
from tests.helpers import as_written, rendered, section, table_row, wrk

MIB = 1024 * 1024


def burst(last_s: float) -> BurstResult:
    return BurstResult(100, 100, 0.01, last_s, last_s / 2, Counter({200: 100}), Counter({"MISS": 100}))


def row(target: str, *runs: WrkResult) -> LoadRow:
    return LoadRow(target, "hit-20k", mean_body_bytes=20_000, runs=list(runs))


def test_medians_and_ratios_to_each_anchor_of_the_same_run() -> None:
    report = Report("2026-11-28 00:00:00 UTC", {"repeat": "3"})
    report.loads = [
        # Medians: imgproxy 30,000 req/s, p50 2 ms, p99 4 ms; the outlier runs must not count.
        row("imgproxy", wrk(30_000, 2.0, 4.0), wrk(1_000, 50.0, 90.0), wrk(31_000, 1.0, 3.0)),
        row("nginx", wrk(60_000, 1.0, 2.0), wrk(60_000, 1.0, 2.0), wrk(60_000, 1.0, 2.0)),
        row("varnish", wrk(40_000, 4.0, 8.0), wrk(40_000, 4.0, 8.0), wrk(40_000, 4.0, 8.0)),
        row("bare", wrk(20_000, 2.0, 4.0), wrk(20_000, 2.0, 4.0), wrk(20_000, 2.0, 4.0)),
    ]
    data = as_written(report)
    assert data["loads"][0]["median"] == {
        "rps": 30_000, "mb_s": 600.0, "p50_ms": 2.0, "p99_ms": 4.0, "mean_ms": 2.0,
    }  # fmt: skip
    text = render(data)

    assert table_row(section(text, "Cache: hits (wrk, medians)"), "hit-20k")[:6] == [
        "hit-20k", "imgproxy", "30,000", "600.0", "2.00", "4.00",
    ]  # fmt: skip
    ratios = section(text, "Cache: imgproxy / anchor (same run)")
    assert table_row(ratios, "workload") == [
        "workload", "req/s / nginx", "req/s / varnish", "req/s / bare",
        "p50 / nginx", "p50 / varnish", "p50 / bare", "p99 / nginx", "p99 / varnish", "p99 / bare",
    ]  # fmt: skip
    assert table_row(ratios, "hit-20k")[1:] == [
        "0.50",
        "0.75",
        "1.50",
        "2.00",
        "0.50",
        "1.00",
        "2.00",
        "0.50",
        "1.00",
    ]


def test_only_the_anchors_that_ran_get_a_ratio_column() -> None:
    report = Report("2026-12-04 00:00:00 UTC", {"repeat": "1"})
    report.loads = [row("imgproxy", wrk(30_000, 2.0, 4.0)), row("nginx", wrk(40_000, 1.0, 5.0))]
    ratios = section(rendered(report), "Cache: imgproxy / anchor (same run)")
    assert table_row(ratios, "hit-20k") == ["hit-20k", "0.75", "2.00", "0.80"]
    report.loads = [row("imgproxy", wrk(30_000, 2.0, 4.0))]
    assert "imgproxy / anchor" not in rendered(report)


def test_bursts_each_and_the_median_last_response_over_them() -> None:
    report = Report("2026-11-28 00:00:00 UTC", {"repeat": "3"})
    report.bursts = {
        "imgproxy": [BurstRow("imgproxy", burst(s), 1, 0) for s in (0.12, 0.50, 0.14)],
        "varnish": [BurstRow("varnish", burst(s), 1, 0) for s in (0.20, 0.16, 0.18)],
        "bare": [BurstRow("bare", burst(0.1), 0, 0)],
    }
    text = rendered(report)
    bursts = section(text, "Cache: cold burst, 100 concurrent GETs of one uncached 2 MiB blob")
    assert table_row(bursts, "imgproxy #2") == [
        "imgproxy #2",
        "1",
        "0",
        "500",
        "10",
        "250",
        "100/100",
        "MISS 100",
    ]
    assert table_row(bursts, "bare")[1] == "0 (preloaded)"
    medians = section(text, "Cache: cold burst, last response (median over the bursts)")
    assert table_row(medians, "imgproxy") == ["imgproxy", "140", "-"]
    assert table_row(medians, "varnish") == ["varnish", "180", "0.78"]  # imgproxy / varnish
    assert table_row(medians, "bare") == ["bare", "100", "1.40"]


def test_memory_is_the_sum_over_the_serving_processes_or_says_why_not() -> None:
    report = Report("2026-12-04 00:00:00 UTC", {"repeat": "1"})
    streams = StreamsResult(20, 20, 10.0, 20 * 200 * MIB)
    report.memory = MemoryFigure(
        {11: 30 * MIB, 12: 34 * MIB}, {11: 50 * MIB, 12: 60 * MIB}, streams, 200 * MIB
    )
    memory = section(rendered(report), "Cache: memory of imgproxy while 20 clients stream the 200 MiB blob")
    assert table_row(memory, "peak RSS (VmHWM, MiB, sum over the serving processes)")[1] == "110.0"
    assert table_row(memory, "per process (MiB)")[1] == "pid 11: 50.0, pid 12: 60.0"
    assert table_row(memory, "VmHWM right after start (MiB)")[1] == "64.0"
    assert table_row(memory, "streams complete")[1] == "20/20"
    assert table_row(memory, "MB/s, all streams")[1] == "419"  # 4,000 MiB in 10 s
    report.memory, report.memory_note = None, "skipped (BENCH_MEMORY=0)"
    memory = section(rendered(report), "Cache: memory of imgproxy while 20 clients stream the 200 MiB blob")
    assert table_row(memory, "not measured")[1] == "skipped (BENCH_MEMORY=0)"


def pass_row(target: str, workload: str, *runs: WrkResult) -> LoadRow:
    return LoadRow(target, workload, mean_body_bytes=1024, runs=list(runs))


def test_pass_through_has_its_own_table_with_added_latency_and_the_nginx_ratio() -> None:
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
        pass_row("imgproxy", "pass-1k", wrk(6_000, 0.15, 0.3, mean_ms=0.2)),
        pass_row("nginx", "pass-1k", wrk(12_000, 0.08, 0.2)),
        pass_row("direct", "pass-1k", wrk(30_000, 0.03, 0.1)),
    ]
    text = rendered(report)
    assert "pass-1k" not in section(text, "Cache: hits (wrk, medians)")
    passthrough = section(text, "Pass-through: in front of an app (64 connections, and 1)")
    # `added` is imgproxy's one-connection p50 minus direct's: 0.150 - 0.030.
    assert table_row(passthrough, "pass-1k")[1:] == [
        "imgproxy", "30,000", "30.7", "2.00", "6.00", "0", "0.150", "0.200", "0.120", "0.60",
    ]  # fmt: skip
    nginx = next(r for r in passthrough.splitlines() if r.startswith("| pass-1k | nginx |"))
    assert nginx.split("|")[-2].strip() == "1.00"
