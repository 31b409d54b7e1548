"""Figures of the replicas part (`bench.replicas.measure`) and their JSON.

Pure arithmetic, so `tests/unit/test_bench_replicas.py` checks it from known figures: origin GETs
from two snapshots of the counting proxy, hit ratios, each replica's share of the requests,
percentiles of the purge delays. `bench.replicas.rows` makes the tables from the JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ..wrk import CountedResult

MS: Final = 1000.0


def origin_gets(before: Mapping[str, int], after: Mapping[str, int], prefix: str) -> int:
    """GETs the counting proxy saw between two snapshots for blobs whose name starts with `prefix`."""
    return sum(
        count - before.get(key, 0)
        for key, count in after.items()
        if key.startswith("GET ") and key[4:].startswith(prefix)
    )


def ratio(part: int, whole: int) -> float:
    """part / whole, NaN for an empty whole (nothing to divide)."""
    return part / whole if whole else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..1) of `values`; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def shares(requests: Sequence[int]) -> list[float]:
    """Each replica's fraction of the requests it answered (hits + misses)."""
    total = sum(requests)
    return [ratio(n, total) for n in requests]


COUNTER_NAMES: Final = (
    "hits",
    "misses",
    "redis_hits",
    "coalesced",
    "redis_errors",
    "redis_waits",
    "redis_waits_served",
)


@dataclass(frozen=True, slots=True)
class ReplicaCounters:
    """One replica's `/admin/cache` counters after the load (fresh process: all from the load)."""

    hits: int
    misses: int
    redis_hits: int = 0
    coalesced: int = 0
    redis_errors: int = 0  # Redis calls that failed (timed out, refused)
    redis_waits: int = 0  # downloads that waited for another replica's
    redis_waits_served: int = 0  # ... and got its value

    @classmethod
    def of(cls, stats: Mapping[str, Any]) -> ReplicaCounters:
        return cls(*(int(stats.get(name, 0)) for name in COUNTER_NAMES))

    def minus(self, before: ReplicaCounters) -> ReplicaCounters:
        """What happened between two snapshots of the same replica."""
        return ReplicaCounters(*(getattr(self, name) - getattr(before, name) for name in COUNTER_NAMES))

    @property
    def requests(self) -> int:
        return self.hits + self.misses


@dataclass(frozen=True, slots=True)
class BurstFigure:
    """One cold burst: `clients` concurrent GETs of one fresh blob spread over the replicas."""

    clients: int
    ok: int  # 200 with the whole body
    origin_gets: int
    last_s: float
    replicas: tuple[ReplicaCounters, ...] = ()  # what the burst changed on each replica

    @property
    def redis_errors(self) -> int:
        return sum(r.redis_errors for r in self.replicas)

    @property
    def waits(self) -> str:
        """Waits for another replica's download that got its value, of those that waited."""
        served = sum(r.redis_waits_served for r in self.replicas)
        return f"{served}/{sum(r.redis_waits for r in self.replicas)}"


@dataclass(slots=True)
class Propagation:
    """Delays from sending a purge to one replica until each other replica no longer holds it."""

    delays_s: list[float] = field(default_factory=list)
    purges: int = 0
    not_logged: int = 0  # answers other than 200 logged:true
    missed: int = 0  # (purge, replica) pairs not seen within the bound

    def quantile_ms(self, q: float) -> float:
        return percentile(self.delays_s, q) * MS

    def within(self, bound_s: float) -> int:
        return sum(1 for d in self.delays_s if d <= bound_s)

    def as_dict(self) -> dict[str, Any]:
        return {
            "purges": self.purges,
            "deliveries": len(self.delays_s),
            "not_logged": self.not_logged,
            "missed": self.missed,
            "p50_ms": self.quantile_ms(0.5),
            "p99_ms": self.quantile_ms(0.99),
            "max_ms": self.quantile_ms(1.0),
            "delays_s": self.delays_s,
        }


@dataclass(slots=True)
class SetupFigures:
    """One load-balancer setup: 3 fresh replicas, the same Zipf request list."""

    key: str
    label: str
    redis: bool
    requests: int
    distinct: int  # distinct images in the request list: the fewest origin GETs possible
    load: CountedResult | None = None
    origin_gets: int = 0
    replicas: list[ReplicaCounters] = field(default_factory=list)
    bursts: list[BurstFigure] = field(default_factory=list)
    propagation: Propagation | None = None
    loadavg: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def hit_ratio(self) -> float:
        """X-Cache: HIT over the listed requests answered, as the client saw them."""
        return math.nan if self.load is None else ratio(self.load.hits, self.load.answered)

    @property
    def server_hit_ratio(self) -> float:
        """The replicas' own count: hits over hits + misses, summed."""
        hits = sum(r.hits for r in self.replicas)
        return ratio(hits, sum(r.requests for r in self.replicas))

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "redis": self.redis,
            "requests": self.requests,
            "distinct_images": self.distinct,
            "origin_gets": self.origin_gets,
            "hit_ratio": self.hit_ratio,
            "server_hit_ratio": self.server_hit_ratio,
            "load": None if self.load is None else self.load.as_dict(),
            "replicas": [
                {"hits": r.hits, "misses": r.misses, "redis_hits": r.redis_hits, "coalesced": r.coalesced}
                for r in self.replicas
            ],
            "bursts": [
                {
                    "clients": b.clients,
                    "ok": b.ok,
                    "origin_gets": b.origin_gets,
                    "last_s": b.last_s,
                    "redis_errors": b.redis_errors,
                    "waits_served": b.waits,
                }
                for b in self.bursts
            ],
            "propagation": None if self.propagation is None else self.propagation.as_dict(),
            "loadavg_before": self.loadavg,
            "notes": self.notes,
        }


@dataclass(slots=True)
class ReplicaReport:
    replicas: int
    connections: int
    purge_bound_s: float
    setups: list[SetupFigures] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "replicas": self.replicas,
            "connections": self.connections,
            "purge_bound_s": self.purge_bound_s,
            "setups": [s.as_dict() for s in self.setups],
            "notes": self.notes,
        }
