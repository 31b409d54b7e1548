"""The transforms section of the report: cold and warm rates, ratios to the targets, memory, hit latency.

Pure arithmetic on measured figures (tests/unit/test_bench_report.py feeds it known ones). Every
figure is a median over the run's repetitions; every ratio is of two figures of the same run.
Targets (issue 12): cold >= 0.85x the faster library's in-process limit and > 1x thumbor on every
case; warm variant hits >= 0.9x original hits of the same size; peak RSS of 16 concurrent cold
24 MP transforms < 600 MiB.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from .client import Answer
from .transform_limit import LimitRow, Rate
from .wrk import WrkResult

MIB: Final = 1024 * 1024
COLD_TARGET_LIMIT: Final = 0.85
COLD_TARGET_THUMBOR: Final = 1.0
WARM_TARGET_ORIGINAL: Final = 0.9
RSS_TARGET_MIB: Final = 600.0


def _median(runs: Sequence[WrkResult], metric: Callable[[WrkResult], float]) -> float | None:
    return statistics.median(metric(run) for run in runs) if runs else None


@dataclass(slots=True)
class Load:
    """The wrk runs of one (server, case, cold or warm) figure."""

    runs: list[WrkResult] = field(default_factory=list)
    # Per run: answers per CPU second of the server's processes x cores (the limit's `cpu` unit).
    cpu_rates: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float | None:
        return _median(self.runs, lambda r: r.rps)

    @property
    def cpu_rate(self) -> float | None:
        return statistics.median(self.cpu_rates) if self.cpu_rates else None

    @property
    def p50(self) -> float | None:
        return _median(self.runs, lambda r: r.p50_ms)

    @property
    def p99(self) -> float | None:
        return _median(self.runs, lambda r: r.p99_ms)

    @property
    def errors(self) -> int:
        return sum(run.errors for run in self.runs)

    def cell(self, rps_digits: int, ms_digits: int) -> str:
        """`req/s (p50 / p99 ms)` for a table."""
        return f"{_fmt(self.rps, rps_digits)} ({_fmt(self.p50, ms_digits)} / {_fmt(self.p99, ms_digits)})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "median": {"rps": self.rps, "p50_ms": self.p50, "p99_ms": self.p99, "cpu_rate": self.cpu_rate},
            "errors": self.errors,
            "cpu_rates": self.cpu_rates,
            "runs": [run.as_dict() for run in self.runs],
        }


def median_rate(rates: Sequence[Rate]) -> Rate:
    return Rate(
        statistics.median(r.wall for r in rates),
        statistics.median(r.cpu for r in rates),
        statistics.median(r.parallelism for r in rates),
    )


@dataclass(slots=True)
class CaseFigures:
    """Everything measured for one case."""

    slug: str
    name: str
    limits: list[LimitRow] = field(default_factory=list)  # one per repetition
    imgproxy_cold: Load = field(default_factory=Load)
    thumbor_cold: Load = field(default_factory=Load)
    imgproxy_warm: Load = field(default_factory=Load)
    original_hits: Load = field(default_factory=Load)  # an original of the variant's size
    thumbor_warm: Load = field(default_factory=Load)
    output_bytes: dict[str, int] = field(default_factory=dict)  # server or library -> bytes
    output_pixels: dict[str, str] = field(default_factory=dict)  # server -> "WxH"

    def limit(self, library: str) -> Rate | None:
        rates = [row.rates[library] for row in self.limits if library in row.rates]
        return median_rate(rates) if rates else None

    def median_limit_row(self) -> LimitRow | None:
        """The repetitions' limits as one row (medians), for `transform_limit.render`."""
        if not self.limits:
            return None
        libraries = dict.fromkeys(lib for row in self.limits for lib in row.rates)
        rates = {lib: rate for lib in libraries if (rate := self.limit(lib)) is not None}
        return LimitRow(self.name, rates, self.limits[-1].output_bytes)

    def faster_library(self, cpu: bool = False) -> tuple[str, float] | None:
        """The library with the higher limit (wall clock, or per CPU second x cores), and that limit."""
        found = [
            (lib, rate.cpu if cpu else rate.wall)
            for lib in ("pyvips", "Pillow")
            if (rate := self.limit(lib)) is not None
        ]
        return max(found, key=lambda item: item[1]) if found else None

    def cold_to_limit(self, cpu: bool = False) -> float | None:
        """imgproxy's cold rate over the faster library's limit, both by wall clock or both per CPU."""
        faster = self.faster_library(cpu)
        mine = self.imgproxy_cold.cpu_rate if cpu else self.imgproxy_cold.rps
        return _ratio(mine, faster[1] if faster else None)

    def cold_to_thumbor(self, cpu: bool = False) -> float | None:
        if cpu:
            return _ratio(self.imgproxy_cold.cpu_rate, self.thumbor_cold.cpu_rate)
        return _ratio(self.imgproxy_cold.rps, self.thumbor_cold.rps)

    def warm_to_original(self) -> float | None:
        return _ratio(self.imgproxy_warm.rps, self.original_hits.rps)

    def warm_to_thumbor(self) -> float | None:
        return _ratio(self.imgproxy_warm.rps, self.thumbor_warm.rps)

    def as_dict(self) -> dict[str, Any]:
        limits = {lib: self.limit(lib) for lib in ("pyvips", "Pillow", "engine", "pool")}
        return {
            "slug": self.slug,
            "name": self.name,
            "limit_median": {
                lib: {"wall": r.wall, "cpu": r.cpu, "parallelism": r.parallelism}
                for lib, r in limits.items()
                if r is not None
            },
            "limit_runs": [{lib: vars_of(rate) for lib, rate in row.rates.items()} for row in self.limits],
            "imgproxy_cold": self.imgproxy_cold.as_dict(),
            "thumbor_cold": self.thumbor_cold.as_dict(),
            "imgproxy_warm": self.imgproxy_warm.as_dict(),
            "original_hits": self.original_hits.as_dict(),
            "thumbor_warm": self.thumbor_warm.as_dict(),
            "output_bytes": self.output_bytes,
            "output_pixels": self.output_pixels,
            "ratios": {
                "cold_to_faster_limit": self.cold_to_limit(),
                "cold_to_faster_limit_cpu": self.cold_to_limit(cpu=True),
                "cold_to_thumbor": self.cold_to_thumbor(),
                "cold_to_thumbor_cpu": self.cold_to_thumbor(cpu=True),
                "warm_to_original": self.warm_to_original(),
                "warm_to_thumbor": self.warm_to_thumbor(),
            },
        }


def vars_of(rate: Rate) -> dict[str, float]:
    return {"wall": rate.wall, "cpu": rate.cpu, "parallelism": rate.parallelism}


@dataclass(slots=True)
class RssFigure:
    """Peak RSS (VmHWM) of the server's processes around 16 concurrent cold 24 MP transforms."""

    idle_hwm: dict[int, int]  # pid -> bytes right after start
    peak_hwm: dict[int, int]  # pid -> bytes after the transforms
    answers: list[Answer]
    seconds: float

    @property
    def peak_mib(self) -> float:
        return sum(self.peak_hwm.values()) / MIB

    @property
    def ok(self) -> int:
        return sum(1 for a in self.answers if a.status == 200 and a.size > 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "idle_vmhwm": self.idle_hwm,
            "peak_vmhwm": self.peak_hwm,
            "peak_mib": self.peak_mib,
            "ok": self.ok,
            "requests": len(self.answers),
            "seconds": self.seconds,
            "statuses": [a.status for a in self.answers],
        }


@dataclass(slots=True)
class HitsUnderLoad:
    """A paced prober on a cached 20 KiB original, on an idle server and while transforms run."""

    idle: Load = field(default_factory=Load)
    loaded: Load = field(default_factory=Load)
    transforms: Load = field(default_factory=Load)  # the cold-transform load that ran meanwhile

    def p99_ratio(self) -> float | None:
        return _ratio(self.loaded.p99, self.idle.p99)

    def as_dict(self) -> dict[str, Any]:
        return {
            "idle": self.idle.as_dict(),
            "loaded": self.loaded.as_dict(),
            "transforms": self.transforms.as_dict(),
            "p99_ratio": self.p99_ratio(),
        }


@dataclass(slots=True)
class TransformReport:
    settings: dict[str, str] = field(default_factory=dict)  # connections, durations, configs
    versions: dict[str, str] = field(default_factory=dict)
    cases: list[CaseFigures] = field(default_factory=list)
    rss: RssFigure | None = None
    rss_note: str = ""
    hits: HitsUnderLoad | None = None
    notes: list[str] = field(default_factory=list)
    loadavg: list[str] = field(default_factory=list)  # "when: 1-min load", taken along the run
    limit_tables: str = ""  # transform_limit.render of the medians

    def as_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "versions": self.versions,
            "cases": [case.as_dict() for case in self.cases],
            "rss": self.rss.as_dict() if self.rss else None,
            "rss_note": self.rss_note,
            "hits_under_load": self.hits.as_dict() if self.hits else None,
            "notes": self.notes,
            "loadavg": self.loadavg,
            "limit_tables": self.limit_tables,
        }


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


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
