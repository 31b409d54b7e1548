"""`bench.report.render` and its transforms section: medians and ratios to each anchor and target."""

from __future__ import annotations

from collections import Counter

from bench.client import Answer, BurstResult
from bench.report import BurstRow, LoadRow, Report, render
from bench.transform_figures import MIB, CaseFigures, HitsUnderLoad, Load, RssFigure, TransformReport
from bench.transform_limit import LimitRow, Rate
from bench.transform_report import render as render_transforms
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


# --- the transforms section (bench/transform_report.py) ---------------------------------------------


def limit_row(pyvips_wall: float, pillow_wall: float) -> LimitRow:
    rates = {"pyvips": Rate(pyvips_wall, pyvips_wall * 2), "Pillow": Rate(pillow_wall, pillow_wall * 2)}
    return LimitRow("case", rates, {"pyvips": 100, "Pillow": 90})


def loads(*runs: WrkResult) -> Load:
    return Load(list(runs))


def transform_case() -> CaseFigures:
    figures = CaseFigures("12mp-jpeg", "12 MP JPEG -> 300x200 JPEG q80")
    # Limit medians: pyvips 25, Pillow 40 (the faster); the 90 and 5 outliers must not count.
    figures.limits = [limit_row(25, 40), limit_row(90, 5), limit_row(24, 41)]
    figures.imgproxy_cold = loads(wrk(36, 200, 400), wrk(30, 250, 500), wrk(1, 900, 990))
    figures.imgproxy_cold.cpu_rates = [70, 72, 10]
    figures.thumbor_cold = loads(wrk(24, 300, 600), wrk(24, 300, 600), wrk(24, 300, 600))
    figures.thumbor_cold.cpu_rates = [36, 36, 36]
    figures.imgproxy_warm = loads(wrk(9_000, 5, 9), wrk(9_500, 5, 9), wrk(9_000, 5, 9))
    figures.original_hits = loads(wrk(20_000, 2, 4), wrk(20_000, 2, 4), wrk(20_000, 2, 4))
    figures.thumbor_warm = loads(wrk(1_000, 50, 90), wrk(1_000, 50, 90), wrk(1_000, 50, 90))
    return figures


def test_transform_ratios_are_of_medians_to_the_faster_library_and_to_thumbor() -> None:
    """Cold: imgproxy's median over the faster library's median limit and over thumbor's, by wall clock
    and per CPU second (the faster library may differ between the two)."""
    figures = transform_case()
    assert figures.faster_library() == ("Pillow", 40)
    assert figures.faster_library(cpu=True) == ("Pillow", 80)
    assert figures.cold_to_limit() == 30 / 40
    assert figures.cold_to_limit(cpu=True) == 70 / 80
    assert figures.cold_to_thumbor() == 30 / 24
    assert figures.cold_to_thumbor(cpu=True) == 70 / 36
    assert figures.warm_to_original() == 9_000 / 20_000
    assert figures.warm_to_thumbor() == 9.0
    row = figures.median_limit_row()
    assert row is not None
    assert row.rates["pyvips"].wall == 25 and row.rates["Pillow"].cpu == 80


def test_transform_table_says_which_targets_are_met_and_missed() -> None:
    """Each verdict cell holds the ratio and `met` or `MISSED` against the issue's target."""
    report = TransformReport(cases=[transform_case()])
    text = "\n".join(render_transforms(report))
    cold = table_row(text.split("### Cold")[1], "12 MP JPEG -> 300x200 JPEG q80")
    assert cold[1:5] == ["30.0 (250 / 500)", "70.0", "24.0 (300 / 600)", "36.0"]
    assert cold[5:9] == ["25.0 / 40.0", "50.0 / 80.0", "n/a / n/a", "Pillow / Pillow"]
    assert cold[9:13] == ["0.75 MISSED", "0.88 met", "1.25 met", "1.94 met"]
    warm = table_row(text.split("### Warm")[1], "12 MP JPEG -> 300x200 JPEG q80")
    assert warm[1:6] == [
        "9,000 (5.00 / 9.00)",
        "20,000 (2.00 / 4.00)",
        "1,000 (50.00 / 90.00)",
        "0.45 MISSED",
        "9.0",
    ]


def test_thumbor_level_with_imgproxy_misses_the_strict_target() -> None:
    """`> 1` against thumbor: a tie is a miss; a missing anchor is n/a, never met."""
    figures = transform_case()
    figures.thumbor_cold = loads(wrk(30, 1, 1))
    assert figures.cold_to_thumbor() == 1.0
    cold = table_row("\n".join(render_transforms(TransformReport(cases=[figures]))), figures.name)
    assert cold[11] == "1.00 MISSED"
    figures.thumbor_cold = Load()
    cold = table_row("\n".join(render_transforms(TransformReport(cases=[figures]))), figures.name)
    assert cold[3] == "n/a (n/a / n/a)" and cold[11:13] == ["n/a", "n/a"]


def test_peak_rss_is_the_sum_over_serving_processes_and_hit_p99_is_loaded_over_idle() -> None:
    """Memory: the workers' VmHWM added up against 600 MiB; hits: the median p99s' ratio."""
    answers = [Answer("u", 200, 1000, "image/jpeg", "MISS", 1.0)] * 15 + [Answer("u", 0, 0, "", "-", 1.0)]
    report = TransformReport(
        rss=RssFigure({1: 100 * MIB, 2: 100 * MIB}, {1: 350 * MIB, 2: 260 * MIB}, answers, 4.0),
        hits=HitsUnderLoad(
            idle=loads(wrk(400, 0.5, 2.0), wrk(400, 0.5, 4.0), wrk(400, 0.5, 3.0)),
            loaded=loads(wrk(300, 1.0, 30.0), wrk(300, 1.0, 60.0), wrk(300, 1.0, 90.0)),
            transforms=loads(wrk(25, 300, 600)),
        ),
    )
    text = "\n".join(render_transforms(report))
    assert table_row(text, "peak RSS (VmHWM, sum over the serving processes; target < 600 MiB)")[1] == (
        "610.0 MiB, MISSED"
    )
    assert table_row(text, "200 with a body")[1] == "15/16"
    assert report.hits is not None and report.hits.p99_ratio() == 20.0
    assert "p99 under transform load / idle: 20.00." in text
