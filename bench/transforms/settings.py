"""The transforms part's knobs (BENCH_TRANSFORM_*, IMGPROXY_BENCH_TRANSFORM_ENV: docs/benchmarks.md),
the environment of its imgproxy, and the machine's load before it starts."""

from __future__ import annotations

import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .cases import DEFAULT_CASES, TRANSFORM_CASES

TRANSFORM_ENV_VAR: Final = "IMGPROXY_BENCH_TRANSFORM_ENV"
ALL_TRANSFORM_TARGETS: Final = ("imgproxy", "thumbor", "limit")


@dataclass(frozen=True, slots=True)
class TransformSettings:
    """BENCH_TRANSFORM_* knobs (docs/benchmarks.md)."""

    cases: list[str]
    targets: list[str]
    connections: int
    limit_seconds: float
    duration_s: int
    repeat: int
    warm_connections: int
    rss: bool

    @classmethod
    def from_env(cls, duration_s: int, repeat: int, warm_connections: int, rss: bool) -> TransformSettings:
        def listing(name: str, allowed: tuple[str, ...], default: tuple[str, ...] = ()) -> list[str]:
            value = os.environ.get(name, ",".join(default or allowed))
            items = [x.strip() for x in value.split(",") if x.strip()]
            if unknown := [x for x in items if x not in allowed]:
                raise SystemExit(f"{name}: unknown {unknown}; choose from {', '.join(allowed)}")
            return items

        return cls(
            cases=listing("BENCH_TRANSFORM_CASES", tuple(TRANSFORM_CASES), DEFAULT_CASES),
            targets=listing("BENCH_TRANSFORM_TARGETS", ALL_TRANSFORM_TARGETS),
            connections=int(os.environ.get("BENCH_TRANSFORM_CONNECTIONS", "8")),
            limit_seconds=float(os.environ.get("BENCH_TRANSFORM_SECONDS", "3")),
            duration_s=duration_s,
            repeat=repeat,
            warm_connections=warm_connections,
            rss=rss,
        )


def cores() -> int:
    return len(os.sched_getaffinity(0))


def transform_env() -> dict[str, str]:
    """imgproxy for the transform workloads; IMGPROXY_BENCH_TRANSFORM_ENV="K=V ..." overrides."""
    env = {
        "IMGPROXY_SERVER_WORKERS": str(cores()),
        "IMGPROXY_TRANSFORM_ENABLED": "true",
        "IMGPROXY_TRANSFORM_ALLOW_UNSIGNED": "true",
        # The cold runs' counter is a box side: room for it, the output size does not change.
        "IMGPROXY_TRANSFORM_MAX_WIDTH": "100000",
        "IMGPROXY_TRANSFORM_MAX_HEIGHT": "100000",
    }
    for item in shlex.split(os.environ.get(TRANSFORM_ENV_VAR, "")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{TRANSFORM_ENV_VAR}: {item!r} is not KEY=VALUE")
        env[key] = value
    return env


def ambient_busy(seconds: float = 2.0) -> float:
    """The share of all cores busy over `seconds` (from /proc/stat): others' load before we start."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    return (busy1 - busy0) / max(1, total1 - total0)
