"""What every part of one `make bench` run shares: the knobs, the report being filled, the log.

The knobs (BENCH_*, IMGPROXY_BENCH_*) and their defaults are listed in docs/benchmarks.md.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

from . import client
from .baseline import BASE_NAME, BASELINE_VAR, Code
from .dataset import Dataset
from .passthrough.targets import PASS_FILES, PASS_TARGETS
from .report import Report
from .targets import EXTRA_ENV_VAR, Target

ALL_TARGETS: Final = ("imgproxy", "nginx", "varnish", "bare")
FIXED_WORKLOADS: Final = {
    "hit-20k": "obj-20k.bin",
    "hit-200k": "obj-200k.bin",
    "hit-2m": "obj-2m.bin",
    "stream-20m": "obj-20m.bin",
}
ALL_WORKLOADS: Final = (*FIXED_WORKLOADS, "zipf", "burst", *PASS_FILES)
PART_MODES: Final = ("1", "0", "only")  # BENCH_REPLICAS, BENCH_TRANSFORMS
T = TypeVar("T")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def one_line(message: str, limit: int = 400) -> str:
    """A multi-line error (e.g. with a child's output) as one Markdown-safe line."""
    return " / ".join(line.strip() for line in message.splitlines() if line.strip())[:limit]


def in_turn(targets: Sequence[T], repetition: int) -> list[T]:
    """The order of one repetition: as listed, then reversed, and so on (A B, B A, A B, ...), so
    that neither of two targets compared side by side always runs first."""
    return list(targets) if repetition % 2 == 0 else list(targets)[::-1]


@dataclass(frozen=True, slots=True)
class Settings:
    duration_s: int
    connections: int
    repeat: int
    targets: list[str]
    workloads: list[str]
    memory: bool
    pass_targets: list[str]
    transforms: str  # BENCH_TRANSFORMS: "1", "0" or "only"
    replicas: str = "1"  # BENCH_REPLICAS: 1, 0 or only
    replica_requests: int = 30_000
    replica_purges: int = 200
    baseline: str = ""  # BENCH_BASELINE: a git revision measured next to this checkout, or ""

    @classmethod
    def from_env(cls) -> Settings:
        def listing(name: str, default: str, allowed: tuple[str, ...]) -> list[str]:
            items = [x.strip() for x in os.environ.get(name, default).split(",") if x.strip()]
            unknown = [x for x in items if x not in allowed]
            if unknown:
                raise SystemExit(f"{name}: unknown {unknown}; choose from {', '.join(allowed)}")
            return items

        settings = cls(
            duration_s=int(os.environ.get("BENCH_DURATION", "10")),
            connections=int(os.environ.get("BENCH_CONNECTIONS", "64")),
            repeat=int(os.environ.get("BENCH_REPEAT", "1")),
            targets=listing("BENCH_TARGETS", ",".join(ALL_TARGETS), ALL_TARGETS),
            workloads=listing("BENCH_WORKLOADS", "hit-20k,hit-2m,zipf,burst,pass-1k,pass-1m", ALL_WORKLOADS),
            memory=os.environ.get("BENCH_MEMORY", "1") not in ("0", "false", "no"),
            pass_targets=listing("BENCH_PASS_TARGETS", ",".join(PASS_TARGETS), PASS_TARGETS),
            replicas=os.environ.get("BENCH_REPLICAS", "1").strip().lower(),
            replica_requests=int(os.environ.get("BENCH_REPLICA_REQUESTS", "30000")),
            replica_purges=int(os.environ.get("BENCH_REPLICA_PURGES", "200")),
            transforms=os.environ.get("BENCH_TRANSFORMS", "1").strip().lower(),
            baseline=os.environ.get(BASELINE_VAR, "").strip(),
        )
        if settings.transforms not in PART_MODES:
            raise SystemExit("BENCH_TRANSFORMS must be 1, 0 or only")
        if settings.duration_s < 1 or settings.connections < 1 or settings.repeat < 1:
            raise SystemExit("BENCH_DURATION, BENCH_CONNECTIONS and BENCH_REPEAT must be >= 1")
        if settings.replicas not in PART_MODES:
            raise SystemExit(f"BENCH_REPLICAS: {settings.replicas!r}; choose from {', '.join(PART_MODES)}")
        if settings.replica_requests < 1 or settings.replica_purges < 0:
            raise SystemExit("BENCH_REPLICA_REQUESTS must be >= 1 and BENCH_REPLICA_PURGES >= 0")
        return settings

    @property
    def cache_run(self) -> bool:
        """Whether the cache targets, the pass-through and the memory figure run (not when a part
        runs alone)."""
        return self.replicas != "only" and self.transforms != "only"

    def describe(self) -> dict[str, str]:
        """The settings as the report's JSON records them."""
        return {
            "duration": f"{self.duration_s}s",
            "connections": str(self.connections),
            "wrk threads": "1",
            "repeat": str(self.repeat),
            "targets": ",".join(self.targets),
            "workloads": ",".join(self.workloads) if self.cache_run else "(none: one part only)",
            "pass targets": ",".join(self.pass_targets),
            "transforms": self.transforms,
            EXTRA_ENV_VAR: os.environ.get(EXTRA_ENV_VAR, "") or "(none)",
            BASELINE_VAR: self.baseline or "(none)",
            "replicas": self.replicas
            + (
                f" ({self.replica_requests} requests, {self.replica_purges} purges)"
                if self.replicas != "0"
                else ""
            ),
        }


@dataclass(slots=True)
class Run:
    """One run: its settings, the report it fills, the seeded data, the two revisions compared."""

    settings: Settings
    report: Report
    dataset: Dataset = field(default_factory=Dataset)
    counter_url: str = ""  # the counting proxy's stats URL (bench.origin_counter)
    new_code: Code | None = None  # BENCH_BASELINE: this checkout, and the baseline's tree
    base_code: Code | None = None

    def with_base(self, names: list[str]) -> list[str]:
        """`names` with `imgproxy-base` right after `imgproxy` (BENCH_BASELINE), so that the two are
        measured back to back."""
        if self.base_code is None or "imgproxy" not in names:
            return list(names)
        at = names.index("imgproxy") + 1
        return [*names[:at], BASE_NAME, *names[at:]]

    def record_imports(self, target: Target) -> None:
        """BENCH_BASELINE: which tree a started imgproxy imports (checked before its start)."""
        if self.report.baseline is not None and target.imports:
            log(f"{target.name}: imgproxy imported from {target.imports}")
            self.report.baseline.imports[target.name] = target.imports

    def origin_total(self) -> int:
        return sum(client.run(client.origin_stats(self.counter_url)).values())

    def failed(self, what: str, exc: Exception) -> None:
        """A failure becomes a report note; the run goes on."""
        message = f"{what}: {type(exc).__name__}: {exc}"
        log(message)
        self.report.notes.append(one_line(message))
