"""The transforms section of the report (Markdown): cold and warm tables with verdicts, memory, hits.

Pure rendering of `bench.transform_figures` (tests/unit/test_bench_report.py feeds it known figures).
"""

from __future__ import annotations

from collections.abc import Sequence

from .transform_figures import (
    COLD_TARGET_LIMIT,
    COLD_TARGET_THUMBOR,
    MIB,
    RSS_TARGET_MIB,
    WARM_TARGET_ORIGINAL,
    CaseFigures,
    TransformReport,
)
from .transform_figures import fmt as _fmt


def _verdict(value: float | None, target: float, above: bool = True, strict: bool = False) -> str:
    if value is None:
        return "n/a"
    ok = (value > target if strict else value >= target) if above else value < target
    return f"{value:.2f} {'met' if ok else 'MISSED'}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return out + ["| " + " | ".join(row) + " |" for row in rows]


def _cold_rows(cases: Sequence[CaseFigures]) -> list[list[str]]:
    rows = []
    for c in cases:
        pyvips, pillow, engine = c.limit("pyvips"), c.limit("Pillow"), c.limit("engine")
        faster, faster_cpu = c.faster_library(), c.faster_library(cpu=True)
        rows.append(
            [
                c.name,
                c.imgproxy_cold.cell(1, 0),
                _fmt(c.imgproxy_cold.cpu_rate),
                c.thumbor_cold.cell(1, 0),
                _fmt(c.thumbor_cold.cpu_rate),
                f"{_fmt(pyvips.wall if pyvips else None)} / {_fmt(pillow.wall if pillow else None)}",
                f"{_fmt(pyvips.cpu if pyvips else None)} / {_fmt(pillow.cpu if pillow else None)}",
                f"{_fmt(engine.wall if engine else None)} / {_fmt(engine.cpu if engine else None)}",
                f"{faster[0] if faster else 'n/a'} / {faster_cpu[0] if faster_cpu else 'n/a'}",
                _verdict(c.cold_to_limit(), COLD_TARGET_LIMIT),
                _verdict(c.cold_to_limit(cpu=True), COLD_TARGET_LIMIT),
                _verdict(c.cold_to_thumbor(), COLD_TARGET_THUMBOR, strict=True),
                _verdict(c.cold_to_thumbor(cpu=True), COLD_TARGET_THUMBOR, strict=True),
                f"{c.imgproxy_cold.errors} / {c.thumbor_cold.errors}",
            ]
        )
    return rows


def _warm_rows(cases: Sequence[CaseFigures]) -> list[list[str]]:
    rows = []
    for c in cases:
        rows.append(
            [
                c.name,
                c.imgproxy_warm.cell(0, 2),
                c.original_hits.cell(0, 2),
                c.thumbor_warm.cell(0, 2),
                _verdict(c.warm_to_original(), WARM_TARGET_ORIGINAL),
                _fmt(c.warm_to_thumbor()),
                f"{c.imgproxy_warm.errors} / {c.original_hits.errors} / {c.thumbor_warm.errors}",
            ]
        )
    return rows


def render(report: TransformReport) -> list[str]:
    """The Markdown lines of the transforms section."""
    lines = ["## Image transforms (issue 12)", ""]
    lines += ["- " + ", ".join(f"{k}: {v}" for k, v in report.versions.items())] if report.versions else []
    lines += [f"- {k}: {v}" for k, v in report.settings.items()]
    if report.loadavg:
        lines.append("- 1-minute load average along the run: " + "; ".join(report.loadavg))
    lines += [""] + ([f"- {note}" for note in report.notes] + [""] if report.notes else [])
    if report.cases:
        lines += ["### Cold: every request a new variant", ""]
        header = [
            "case",
            "imgproxy req/s (p50 / p99 ms)",
            "imgproxy per CPU",
            "thumbor req/s (p50 / p99 ms)",
            "thumbor per CPU",
            "limit img/s pyvips / Pillow",
            "limit per CPU pyvips / Pillow",
            "limit engine (wall / CPU)",
            "faster (wall / CPU)",
            "imgproxy / faster limit (>= 0.85)",
            "same, per CPU",
            "imgproxy / thumbor (> 1)",
            "same, per CPU",
            "errors imgproxy / thumbor",
        ]
        lines += _table(header, _cold_rows(report.cases))
        lines += [
            "",
            "The limit: the same operation in a tight loop on source bytes in memory, one process per "
            "core, measured in this run between the servers' runs (`bench/transform_limit.py`; its "
            "tables follow). `engine` is our pipeline in that loop, without HTTP, cache or pool. "
            "`per CPU`: answers (images) per CPU second used by the server's processes (all of "
            "thumbor's and its nginx's; the limit's loops) times the cores: what the cores would give "
            "if nothing else ran. The wall-clock ratios hold when the machine is quiet; on a loaded "
            "one the per-CPU ratios are the ones to read (they leave out wrk's own CPU).",
            "",
            "### Warm: variant hits against original hits of the same size",
            "",
        ]
        header = [
            "case",
            "imgproxy variant hits req/s (p50 / p99 ms)",
            "imgproxy original hits, same bytes",
            "thumbor result storage",
            "variant / original (>= 0.9)",
            "imgproxy / thumbor",
            "errors",
        ]
        lines += _table(header, _warm_rows(report.cases))
        lines += [
            "",
            "The original is the variant's own bytes uploaded as a blob, so both answers have one size.",
            "",
            "### Output of one request: bytes (pixels)",
            "",
        ]
        names = sorted({name for c in report.cases for name in c.output_bytes})
        lines += _table(["case", *names], [[c.name, *(_output(c, n) for n in names)] for c in report.cases])
        lines.append("")
    lines += render_memory_and_hits(report)
    return lines


def _output(case: CaseFigures, name: str) -> str:
    if name not in case.output_bytes:
        return "n/a"
    pixels = case.output_pixels.get(name)
    return f"{case.output_bytes[name]:,}" + (f" ({pixels})" if pixels else "")


def render_memory_and_hits(report: TransformReport) -> list[str]:
    lines = ["### Memory: 16 concurrent cold transforms of 24 MP JPEGs (16 source blobs)", ""]
    if report.rss is not None:
        rss = report.rss
        per = ", ".join(f"pid {pid}: {v / MIB:.1f}" for pid, v in rss.peak_hwm.items())
        lines += _table(
            ["figure", "value"],
            [
                [
                    "peak RSS (VmHWM, sum over the serving processes; target < 600 MiB)",
                    f"{rss.peak_mib:.1f} MiB, {'met' if rss.peak_mib < RSS_TARGET_MIB else 'MISSED'}",
                ],
                ["per process (MiB)", per],
                ["right after start (MiB)", f"{sum(rss.idle_hwm.values()) / MIB:.1f}"],
                ["200 with a body", f"{rss.ok}/{len(rss.answers)}"],
                ["time for all 16", f"{rss.seconds:.1f} s"],
            ],
        )
        lines.append("")
    else:
        lines += [report.rss_note or "not measured", ""]
    lines += ["### Cached hits (20 KiB original) while cold transforms saturate the CPU", ""]
    if report.hits is not None:
        h = report.hits
        lines += _table(
            ["server state", "hits req/s", "p50 ms", "p99 ms", "errors"],
            [
                ["idle", _fmt(h.idle.rps, 0), _fmt(h.idle.p50, 2), _fmt(h.idle.p99, 2), str(h.idle.errors)],
                [
                    f"cold transforms running ({_fmt(h.transforms.rps)} req/s)",
                    _fmt(h.loaded.rps, 0),
                    _fmt(h.loaded.p50, 2),
                    _fmt(h.loaded.p99, 2),
                    str(h.loaded.errors),
                ],
            ],
        )
        lines += ["", f"p99 under transform load / idle: {_fmt(h.p99_ratio(), 2)}.", ""]
    else:
        lines += ["not measured", ""]
    if report.limit_tables:
        lines += [
            "### The in-process limit in detail (medians over the repetitions)",
            "",
            report.limit_tables,
        ]
    return lines
