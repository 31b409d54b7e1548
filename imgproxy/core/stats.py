"""The figures each component keeps (plain counters and snapshots) and how they combine.

Components count into these types; `metrics` renders them for Prometheus and the admin API
reports them; neither reaches into a component for its figures. Pure: no I/O.
"""

from __future__ import annotations

import bisect
import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final, TypeVar

from imgproxy.core.errors import OriginError

ORIGIN_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


LATENCY_BUCKETS_S: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


STATUS_CLASS: Final = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")


@dataclass(slots=True)
class FetchCounters:
    """Monotonic counts kept by the fetcher (one increment per request or per origin call)."""

    hits: int = 0
    misses: int = 0
    coalesced: int = 0
    disk_hits: int = 0
    stale: int = 0
    negative_hits: int = 0
    revalidations: int = 0
    origin_fetches: int = 0
    origin_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True)
class UpstreamStats:
    """Plain counters of the pass-through to the main application (kept by `upstream`)."""

    requests: dict[str, int] = field(default_factory=dict)  # by status class: "2xx", ...
    errors: dict[str, int] = field(default_factory=dict)  # by kind: refused, timeout, idle, ...
    websockets: int = 0  # tunnels open now
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    latency_sum_s: float = 0.0
    connections: int = 0  # open to the app now (in use, idle, tunnels)
    idle: int = 0

    def count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def observe(self, status: int, seconds: float) -> None:
        key = STATUS_CLASS[min(status // 100, 5)]
        self.requests[key] = self.requests.get(key, 0) + 1
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.latency_sum_s += seconds


@dataclass(frozen=True, slots=True)
class OriginStats:
    """A snapshot of the origin's admission state."""

    in_flight: int
    queued: int
    shed: int
    breaker_open: bool
    breaker_opened: int


@dataclass(frozen=True, slots=True)
class DiskStats:
    items: int
    bytes: int
    max_bytes: int
    evictions: int
    discarded_at_start: int
    corrupt: int  # entries found damaged while serving and dropped


@dataclass(slots=True)
class FrontDoorStats:
    """Connections cut off by the front door, by reason (head_timeout, send_timeout, per_ip)."""

    cut: dict[str, int] = field(default_factory=dict)
    open: int = 0

    def count(self, reason: str) -> None:
        self.cut[reason] = self.cut.get(reason, 0) + 1


@dataclass(frozen=True, slots=True)
class TransformStats:
    """A snapshot for `/metrics`: slots, queue, work done by output format, seconds, rejections."""

    slots: int
    running: int  # slots taken, timed-out jobs whose thread still runs included
    queued: int
    max_queue: int
    transforms: Mapping[str, int]  # completed, by output format
    seconds_buckets: tuple[tuple[float, int], ...]  # (upper bound, cumulative count), +Inf last
    seconds_sum: float
    rejected: Mapping[str, int]  # by reason, every one of REJECTIONS present
    killed: int  # timed-out or abandoned jobs that libvips stopped before they finished


@dataclass(frozen=True, slots=True)
class PurgeLogStats:
    appended: int
    append_failures: int
    applied: int
    skipped_own: int
    lost: int  # times the follower could not know what it missed and emptied the caches
    forged: int  # entries skipped for a missing or wrong MAC (with `redis.signing_key`)
    checks: int  # times the follower compared the stream's end with its last id
    following: bool


@dataclass(slots=True)
class Histogram:
    """Observations counted per bucket (`bounds`, upper bounds, one more bucket past the last)."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or under it), +Inf last, as Prometheus renders them."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


@dataclass(slots=True)
class FetchStats:
    """What the cache counts: requests by how they were answered, and every call to Azure (timed
    by kind: whole, range, fill, revalidate)."""

    counters: FetchCounters = field(default_factory=FetchCounters)
    origin_seconds: dict[str, Histogram] = field(default_factory=dict)

    @contextlib.contextmanager
    def origin_call(self, kind: str) -> Iterator[None]:
        """Count one request to Azure of `kind` and time it (a failure counts as an origin error)."""
        counters = self.counters
        counters.origin_fetches += 1
        if kind == "revalidate":
            counters.revalidations += 1
        started = time.perf_counter()
        try:
            yield
        except OriginError:
            counters.origin_errors += 1
            raise
        finally:
            histogram = self.origin_seconds.get(kind)
            if histogram is None:
                histogram = self.origin_seconds[kind] = Histogram(ORIGIN_BUCKETS_S)
            histogram.observe(time.perf_counter() - started)


# How several workers' figures combine (`merge_figures`): integers are summed (each worker has its
# own cache, limits and counters) unless a field says `LARGEST` (the contents of a directory the
# workers share: an entry adopted from a sibling is in both indexes); anything else is the first's.
LARGEST: Final = {"merge": "max"}
F = TypeVar("F")


def merge_figures(first: F, others: Sequence[F]) -> F:
    """`first` combined with `others`, field by field (see `LARGEST`)."""
    combined: dict[str, Any] = {}
    for f in fields(first):  # type: ignore[arg-type]
        mine = getattr(first, f.name)
        if type(mine) is int:
            every = [mine, *(getattr(other, f.name) for other in others)]
            combined[f.name] = max(every) if f.metadata.get("merge") == "max" else sum(every)
    return replace(first, **combined)  # type: ignore[type-var]


def _from(cls: type[F], data: Mapping[str, object]) -> F:
    """A figures dataclass from the JSON keys of the same names (a missing one reads as 0)."""
    return cls(**{f.name: data.get(f.name, 0) for f in fields(cls)})  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class MemoryFigures:
    """The memory tier, as `/admin/cache` reports it."""

    cache_size: int
    cache_bytes: int
    cache_limit: int
    cache_bytes_limit: int
    evictions: int
    cache_variants: int


@dataclass(frozen=True, slots=True)
class DiskFigures:
    """The disk tier, as `/admin/cache` reports it."""

    disk_size: int = field(metadata=LARGEST)
    disk_bytes: int = field(metadata=LARGEST)
    disk_bytes_limit: int = 0
    disk_evictions: int = 0
    disk_corrupt: int = 0
    disk_variants: int = 0
    disk_fills: int = 0  # downloads into the disk tier under way
    disk_enabled: bool = True


@dataclass(frozen=True, slots=True)
class SharedFigures:
    """The shared (Redis) tier, as `/admin/cache` reports it."""

    redis_up: bool
    redis_hits: int
    redis_misses: int
    redis_stores: int
    redis_refused: int
    redis_garbage: int
    redis_errors: int
    redis_waits: int
    redis_waits_served: int


@dataclass(frozen=True, slots=True)
class CacheFigures:
    """Every figure of the cache of one worker for `/admin/cache`, and how workers' combine."""

    memory: MemoryFigures
    counters: FetchCounters
    in_flight: int
    disk: DiskFigures | None = None
    shared: SharedFigures | None = None

    def as_json(self) -> dict[str, int | bool]:
        """The flat object `/admin/cache` answers (`disk_enabled` false without a disk tier)."""
        body: dict[str, int | bool] = {**_flat(self.memory), "in_flight": self.in_flight}
        body.update(self.counters.as_dict())
        body.update(_flat(self.disk) if self.disk is not None else {"disk_enabled": False})
        if self.shared is not None:
            body.update(_flat(self.shared))
        return body

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> CacheFigures:
        """What a sibling worker answered (`as_json`), as figures again."""
        counters = _from(FetchCounters, data)
        disk = _from(DiskFigures, data) if data.get("disk_enabled") else None
        shared = _from(SharedFigures, data) if "redis_up" in data else None
        in_flight = data.get("in_flight", 0)
        return cls(
            _from(MemoryFigures, data), counters, in_flight if isinstance(in_flight, int) else 0, disk, shared
        )

    def merge(self, others: Sequence[CacheFigures]) -> CacheFigures:
        """These figures and `others`' combined (`merge_figures` per section)."""
        return CacheFigures(
            merge_figures(self.memory, [other.memory for other in others]),
            merge_figures(self.counters, [other.counters for other in others]),
            self.in_flight + sum(other.in_flight for other in others),
            _merged(self.disk, [other.disk for other in others]),
            _merged(self.shared, [other.shared for other in others]),
        )


def _flat(figures: object) -> dict[str, int | bool]:
    return {f.name: getattr(figures, f.name) for f in fields(figures)}  # type: ignore[arg-type]


def _merged(mine: F | None, others: Sequence[F | None]) -> F | None:
    if mine is None:
        return None
    return merge_figures(mine, [other for other in others if other is not None])
