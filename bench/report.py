"""The Markdown report: environment, throughput table, imgproxy's ratios, cold burst, memory."""

from __future__ import annotations

import os
import platform
import socket
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.azurite import ROOT

from .baseline import BaselineInfo
from .baseline_report import baseline_dict, render_baseline
from .client import BurstResult, StreamsResult
from .procs import find_tool
from .transform_figures import TransformReport
from .transform_report import render as render_transforms
from .wrk import WrkResult

MB = 1e6
MIB = 1024 * 1024


@dataclass(slots=True)
class LoadRow:
    """All repetitions of one (target, workload) wrk run."""

    target: str
    workload: str
    mean_body_bytes: float
    runs: list[WrkResult] = field(default_factory=list)
    origin_requests: list[int] = field(default_factory=list)

    def median(self, metric: Callable[[WrkResult], float]) -> float:
        return statistics.median(metric(run) for run in self.runs)

    @property
    def rps(self) -> float:
        return self.median(lambda r: r.rps)

    @property
    def mb_s(self) -> float:
        return self.median(lambda r: r.rps * self.mean_body_bytes / MB)

    @property
    def p50(self) -> float:
        return self.median(lambda r: r.p50_ms)

    @property
    def p99(self) -> float:
        return self.median(lambda r: r.p99_ms)

    @property
    def errors(self) -> int:
        return sum(run.errors for run in self.runs)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "workload": self.workload,
            "mean_body_bytes": self.mean_body_bytes,
            "median": {"rps": self.rps, "mb_s": self.mb_s, "p50_ms": self.p50, "p99_ms": self.p99},
            "origin_requests": self.origin_requests,
            "runs": [run.as_dict() for run in self.runs],
            "wrk_output": [run.raw for run in self.runs],
        }


@dataclass(slots=True)
class BurstRow:
    target: str
    result: BurstResult
    origin_gets: int
    origin_other: int

    def as_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            "target": self.target,
            "origin_gets": self.origin_gets,
            "origin_other_requests": self.origin_other,
            "clients": r.clients,
            "ok": r.ok,
            "first_s": r.first_s,
            "median_s": r.median_s,
            "last_s": r.last_s,
            "statuses": dict(r.statuses),
            "x_cache": dict(r.x_cache),
        }


@dataclass(slots=True)
class MemoryFigure:
    idle_hwm: dict[int, int]  # pid -> VmHWM bytes right after start
    peak_hwm: dict[int, int]  # pid -> VmHWM bytes after the streams
    streams: StreamsResult
    blob_bytes: int

    def as_dict(self) -> dict[str, Any]:
        s = self.streams
        return {
            "idle_vmhwm": self.idle_hwm,
            "peak_vmhwm": self.peak_hwm,
            "clients": s.clients,
            "complete": s.complete,
            "seconds": s.seconds,
            "bytes_read": s.bytes_read,
            "blob_bytes": self.blob_bytes,
        }


@dataclass(slots=True)
class Report:
    started: str  # UTC ISO time
    settings: dict[str, str]
    notes: list[str] = field(default_factory=list)  # skipped anchors, failures
    target_notes: dict[str, list[str]] = field(default_factory=dict)
    warm: dict[str, str] = field(default_factory=dict)
    loads: list[LoadRow] = field(default_factory=list)
    single: list[LoadRow] = field(default_factory=list)  # one connection (pass-through latency)
    bursts: dict[str, list[BurstRow]] = field(default_factory=dict)
    memory: MemoryFigure | None = None
    memory_note: str = ""
    seconds: float = 0.0
    environment: dict[str, str] = field(default_factory=dict)  # taken before the run starts
    transforms: TransformReport | None = None  # BENCH_TRANSFORMS (bench/transform_bench.py)
    baseline: BaselineInfo | None = None  # BENCH_BASELINE (bench/baseline.py)

    def as_dict(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "settings": self.settings,
            "environment": self.environment,
            "notes": self.notes,
            "target_notes": self.target_notes,
            "warm": self.warm,
            "loads": [row.as_dict() for row in self.loads],
            "single_connection": [row.as_dict() for row in self.single],
            "bursts": {t: [b.as_dict() for b in rows] for t, rows in self.bursts.items()},
            "memory": self.memory.as_dict() if self.memory else None,
            "memory_note": self.memory_note,
            "seconds": self.seconds,
            "transforms": self.transforms.as_dict() if self.transforms else None,
            "baseline": (
                baseline_dict(self.baseline, self.loads, self.single) if self.baseline is not None else None
            ),
        }


def _version(argv: list[str], stream: str = "stderr") -> str:
    tool = find_tool(argv[0])
    if tool is None:
        return "not installed"
    try:
        done = subprocess.run([tool, *argv[1:]], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (done.stderr if stream == "stderr" else done.stdout) or done.stdout or done.stderr
    return text.strip().splitlines()[0] if text.strip() else "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict[str, str]:
    import aiohttp

    try:
        import uvloop

        uvloop_version = str(getattr(uvloop, "__version__", "unknown"))
    except ImportError:  # pragma: no cover
        uvloop_version = "not installed"
    azurite = "unknown"
    package = ROOT / "node_modules" / "azurite" / "package.json"
    if package.exists():
        import json

        azurite = str(json.loads(package.read_text()).get("version", "unknown"))
    return {
        "hostname": socket.gethostname(),
        "cpu": _cpu_model(),
        "cores": f"{os.cpu_count()} (usable: {len(os.sched_getaffinity(0))})",
        "kernel": platform.release(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "nginx": _version(["nginx", "-v"]),
        "varnish": _version(["varnishd", "-V"]),
        "wrk": _version(["wrk", "-v"], "stdout"),
        "python": sys.version.split()[0],
        "aiohttp": aiohttp.__version__,
        "uvloop": uvloop_version,
        "azurite": f"{azurite} ({_version(['node', '--version'], 'stdout')})",
    }


def _ratio(a: float, b: float | None) -> str:
    if b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}"


def _num(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def render(report: Report) -> str:
    env = report.environment or environment()
    lines = [f"# imgproxy benchmark, {report.started}", ""]
    lines += [
        f"- Host: `{env['hostname']}`, CPU: {env['cpu']}, cores: {env['cores']}, kernel {env['kernel']}",
        f"- nginx: {env['nginx']}; Varnish: {env['varnish']}; wrk: {env['wrk']}",
        f"- Python {env['python']}, aiohttp {env['aiohttp']}, uvloop {env['uvloop']}",
        f"- Azurite {env['azurite']}",
        "- Settings: " + ", ".join(f"{k}={v}" for k, v in report.settings.items()),
        f"- Whole run: {report.seconds:.0f} s; load average before it: {env['loadavg']}",
        "",
        "Everything runs on this one machine over loopback: wrk (1 thread), the target, and (for misses "
        "only) a counting proxy and Azurite share the cores. Every target sits in front of the same "
        "Azurite container and serves `/images/<blob>`; hits never reach the origin (see `origin req`). "
        "The cores are shared with other work running on the machine meanwhile (see the load "
        "average): compare figures within one run, not across runs.",
        "",
    ]
    if report.target_notes:
        lines += ["Targets:", ""]
        for target, notes in report.target_notes.items():
            warm = report.warm.get(target)
            lines.append(f"- **{target}**: {'; '.join(notes)}" + (f". Warm-up: {warm}" if warm else ""))
        lines.append("")
    if report.notes:
        lines += ["Notes:", ""] + [f"- {note}" for note in report.notes] + [""]

    if report.loads:
        lines += _loads(report)
    if report.baseline is not None:
        repeat = report.settings.get("repeat", "?")
        lines += render_baseline(report.baseline, report.loads, report.single, report.bursts, repeat)
    if report.bursts:
        lines += _bursts(report)
    if report.memory is not None or report.memory_note:
        lines += _memory(report)
    if report.transforms is not None:
        lines += render_transforms(report.transforms)
    return "\n".join(lines)


def _loads(report: Report) -> list[str]:
    cache_loads = [row for row in report.loads if not row.workload.startswith("pass-")]
    if not cache_loads:
        return _passthrough_section(report)
    lines = ["## Throughput and latency (wrk, all hits after one warm-up request per object)", ""]
    rows = []
    for row in cache_loads:
        rows.append(
            [
                row.workload,
                row.target,
                _num(row.rps),
                _num(row.mb_s, 1),
                _num(row.p50, 2),
                _num(row.p99, 2),
                str(row.errors),
                str(sum(row.origin_requests)),
            ]
        )
    header = ["workload", "target", "req/s", "MB/s", "p50 ms", "p99 ms", "errors", "origin req"]
    lines += _table(header, rows)
    lines += [
        "",
        "MB/s is body bytes (req/s x mean body size of the workload; 1 MB = 10^6 bytes). Latency is "
        "wrk's (from its Lua `done()`). `errors`: connect/read/write errors, timeouts and statuses >= 400. "
        "`origin req`: requests that reached the counting proxy in front of Azurite during the run. "
        + (
            f"Figures are medians of {report.settings.get('repeat')} runs."
            if report.settings.get("repeat") != "1"
            else ""
        ),
        "",
    ]

    by_key = {(row.target, row.workload): row for row in cache_loads}
    # MB/s ratios equal req/s ratios (same objects for every target), so they are not repeated.
    anchors = ("nginx", "varnish", "bare")
    ratio_rows = []
    for row in cache_loads:
        if row.target != "imgproxy":
            continue
        cells = [row.workload]
        for metric in ("rps", "p50", "p99"):
            value = float(getattr(row, metric))
            for name in anchors:
                anchor = by_key.get((name, row.workload))
                cells.append(_ratio(value, float(getattr(anchor, metric)) if anchor else None))
        ratio_rows.append(cells)
    if ratio_rows and any(t in anchors for t, _ in by_key):
        lines += ["## imgproxy relative to the anchors (same run)", ""]
        header = ["workload"] + [f"{m} / {a}" for m in ("req/s = MB/s", "p50", "p99") for a in anchors]
        lines += _table(header, ratio_rows)
        lines += [
            "",
            "Ratios are imgproxy's figure divided by the anchor's: above 1 is better for req/s (and MB/s, "
            "whose ratios are the same), worse for latency.",
            "",
        ]

    lines += _passthrough_section(report)
    return lines


def _bursts(report: Report) -> list[str]:
    lines = ["## Cold burst: 100 concurrent GETs of one uncached 2 MiB blob", ""]
    burst_rows = []
    for target, bursts in report.bursts.items():
        for index, burst in enumerate(bursts):
            r = burst.result
            burst_rows.append(
                [
                    target + (f" #{index + 1}" if len(bursts) > 1 else ""),
                    str(burst.origin_gets) if target != "bare" else "0 (preloaded)",
                    str(burst.origin_other),
                    _num(r.last_s * 1000, 0),
                    _num(r.first_s * 1000, 0),
                    _num(r.median_s * 1000, 0),
                    f"{r.ok}/{r.clients}",
                    ", ".join(f"{k} {v}" for k, v in sorted(r.x_cache.items())),
                ]
            )
    header = [
        "target",
        "origin GETs",
        "other origin req",
        "last response ms",
        "first ms",
        "median ms",
        "200 + full body",
        "X-Cache",
    ]
    lines += _table(header, burst_rows)
    lines += [
        "",
        "Origin requests are counted by the proxy between the target and Azurite, for this blob only "
        "(`other origin req`: HEADs and the like for it). Times run from launching the 100 requests to "
        "each full body.",
        "",
    ]
    last = {t: statistics.median(b.result.last_s for b in bursts) for t, bursts in report.bursts.items()}
    if "imgproxy" in last and len(last) > 1:
        lines += [
            "Last response, median over the bursts: "
            + ", ".join(f"{t} {_num(v * 1000, 0)} ms" for t, v in last.items())
            + "; imgproxy / "
            + ", imgproxy / ".join(
                f"{t} {_ratio(last['imgproxy'], v)}" for t, v in last.items() if t != "imgproxy"
            )
            + ".",
            "",
        ]

    return lines


def _memory(report: Report) -> list[str]:
    lines = ["## Memory: imgproxy while 20 clients stream the 200 MiB blob", ""]
    if report.memory is not None:
        m = report.memory
        s = m.streams
        idle = sum(m.idle_hwm.values())
        peak = sum(m.peak_hwm.values())
        per = ", ".join(f"pid {pid}: {v / MIB:.1f} MiB" for pid, v in m.peak_hwm.items())
        lines += _table(
            ["figure", "value"],
            [
                [
                    "peak RSS (VmHWM)" + (", sum over processes" if len(m.peak_hwm) > 1 else ""),
                    f"{peak / MIB:.1f} MiB",
                ],
                ["VmHWM right after start", f"{idle / MIB:.1f} MiB"],
                ["streams complete", f"{s.complete}/{s.clients}"],
                [
                    "time for all streams",
                    f"{s.seconds:.1f} s ({s.bytes_read / MB / s.seconds:,.0f} MB/s total)",
                ],
            ],
        )
        if len(m.peak_hwm) > 1:
            lines += ["", f"Per process: {per}."]
        lines += [
            "",
            "A fresh imgproxy (same settings) connected straight to Azurite (no counting proxy); the blob is "
            "above `cache.max_item_bytes`, so every client streams it from the origin.",
            "",
        ]
    else:
        lines += [report.memory_note or "not measured", ""]
    return lines


def _passthrough_section(report: Report) -> list[str]:
    """Pass-through rows: throughput at N connections, latency one request at a time, ratios."""
    loads = [row for row in report.loads if row.workload.startswith("pass-")]
    if not loads:
        return []
    single = {(row.target, row.workload): row for row in report.single}
    by_key = {(row.target, row.workload): row for row in loads}
    rows = []
    for row in loads:
        one = single.get((row.target, row.workload))
        direct = single.get(("direct", row.workload))
        nginx = by_key.get(("nginx", row.workload))
        added = _num(one.p50 - direct.p50, 3) if one is not None and direct is not None else "n/a"
        rows.append(
            [
                row.workload,
                row.target,
                _num(row.rps),
                _num(row.mb_s, 1),
                _num(row.p50, 2),
                _num(row.p99, 2),
                str(row.errors),
                _num(one.p50, 3) if one else "n/a",
                _num(one.median(lambda r: r.mean_ms), 3) if one else "n/a",
                added,
                _ratio(row.rps, nginx.rps if nginx else None),
            ]
        )
    header = [
        "workload",
        "target",
        "req/s",
        "MB/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "1 conn p50 ms",
        "1 conn mean ms",
        "added ms (p50)",
        "req/s / nginx",
    ]
    connections = report.settings.get("connections", "?")
    lines = ["## Pass-through: in front of an app (nginx serving static files)", ""]
    lines += _table(header, rows)
    lines += [
        "",
        f"req/s, MB/s, p50 and p99 at {connections} connections; `1 conn`: wrk with one connection "
        "(one request at a time); `added`: the median latency at one connection minus `direct`'s "
        "(the app alone; medians, as a busy machine's outliers swamp means). `nginx` is `proxy_pass` "
        "with a keep-alive pool; `session` a plain aiohttp route with `ClientSession` "
        "(bench/session_pass.py); imgproxy and session run `server.workers` = cores. Targets are "
        "measured in turn within each repetition.",
        "",
    ]
    return lines
