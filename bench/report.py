"""The result of record: one run's figures as JSON (`Report.as_dict`), written to
bench/results/<UTC time>.json; `bench.render` makes the Markdown tables from that JSON alone.

Medians and ratios are computed here and in each part's `figures` module, so the JSON carries
them; the renderer only formats. Also the machine and the versions (`environment`).
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.azurite import ROOT

from .baseline import BaselineInfo
from .cache.figures import BurstRow, MemoryFigure
from .compare import comparison
from .procs import find_tool
from .replicas.figures import ReplicaReport
from .transforms.figures import TransformReport
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
    def mean(self) -> float:
        return self.median(lambda r: r.mean_ms)

    @property
    def errors(self) -> int:
        return sum(run.errors for run in self.runs)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "workload": self.workload,
            "mean_body_bytes": self.mean_body_bytes,
            "median": {
                "rps": self.rps,
                "mb_s": self.mb_s,
                "p50_ms": self.p50,
                "p99_ms": self.p99,
                "mean_ms": self.mean,
            },
            "errors": self.errors,
            "origin_requests": self.origin_requests,
            "runs": [run.as_dict() for run in self.runs],
            "wrk_output": [run.raw for run in self.runs],
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
    transforms: TransformReport | None = None  # BENCH_TRANSFORMS (bench/transforms)
    baseline: BaselineInfo | None = None  # BENCH_BASELINE (bench/baseline.py, bench/compare.py)
    replicas: ReplicaReport | None = None  # BENCH_REPLICAS (bench/replicas)

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
                comparison(self.baseline, self.loads, self.single, self.bursts)
                if self.baseline is not None
                else None
            ),
            "replicas": self.replicas.as_dict() if self.replicas else None,
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
