"""What the transform workloads measure, as data: runs per figure, medians, ratios, and their JSON.

Every figure is a median over the run's repetitions; every ratio is of two figures of the same run.
`bench.transforms.rows` makes the tables from the JSON.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ..client import Answer
from ..wrk import WrkResult
from .limit import LimitRow, OverheadRow, Rate

MIB: Final = 1024 * 1024


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
    overhead: OverheadRow | None = None  # single-request latency, the last repetition's

    def limit(self, library: str) -> Rate | None:
        rates = [row.rates[library] for row in self.limits if library in row.rates]
        return median_rate(rates) if rates else None

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
        return ratio(mine, faster[1] if faster else None)

    def cold_to_thumbor(self, cpu: bool = False) -> float | None:
        if cpu:
            return ratio(self.imgproxy_cold.cpu_rate, self.thumbor_cold.cpu_rate)
        return ratio(self.imgproxy_cold.rps, self.thumbor_cold.rps)

    def warm_to_original(self) -> float | None:
        return ratio(self.imgproxy_warm.rps, self.original_hits.rps)

    def warm_to_thumbor(self) -> float | None:
        return ratio(self.imgproxy_warm.rps, self.thumbor_warm.rps)

    def as_dict(self) -> dict[str, Any]:
        # The libraries that did the case (the others could not: n/a), and the pool.
        names = dict.fromkeys(lib for row in self.limits for lib in row.rates)
        limits = {lib: self.limit(lib) for lib in names}
        o = self.overhead
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
            "overhead_ms": None if o is None else {"raw": o.raw_ms, "engine": o.engine_ms, "pool": o.pool_ms},
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
        return ratio(self.loaded.p99, self.idle.p99)

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
    processes: int = 0  # the in-process limit's processes (the cores)

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
            "processes": self.processes,
        }


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b
