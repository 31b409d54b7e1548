"""Figures of the replica part of the bench (`bench/replicas.py`) and their Markdown section.

Pure arithmetic and rendering, so `tests/unit/test_replica_report.py` checks it from known
figures: origin GETs from two snapshots of the counting proxy, hit ratios, each replica's share of
the requests, percentiles of the purge delays.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from .wrk import CountedResult

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
            "propagation": None
            if self.propagation is None
            else {
                "purges": self.propagation.purges,
                "deliveries": len(self.propagation.delays_s),
                "not_logged": self.propagation.not_logged,
                "missed": self.propagation.missed,
                "p50_ms": self.propagation.quantile_ms(0.5),
                "p99_ms": self.propagation.quantile_ms(0.99),
                "max_ms": self.propagation.quantile_ms(1.0),
                "delays_s": self.propagation.delays_s,
            },
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


def _num(value: float, digits: int = 0) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value * 100:.1f}%"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def render_replicas(report: ReplicaReport) -> str:
    """The Markdown section: the setups side by side, the cold bursts, the purge propagation."""
    lines = [f"## {report.replicas} replicas behind a load balancer (nginx)", ""]
    setups = report.setups
    if setups:
        first = setups[0]
        lines += [
            f"Each setup starts {report.replicas} fresh replicas (memory tier only, empty) behind nginx "
            f"configured from `deploy/nginx-replicas.conf`, then sends the same list of {first.requests:,} "
            f"requests (Zipf mix over the 1,000 images, {first.distinct} distinct: the fewest origin GETs "
            f"possible) with wrk, {report.connections} connections, 1 thread. Cold start included: "
            "origin GETs are what the setup costs the origin for this list. The replicas, nginx, wrk, "
            "Redis, the counting proxy and Azurite share this machine's cores with each other and with "
            "whatever else runs on it (load averages in the notes): compare the setups with each other.",
            "",
        ]
    rows = []
    for s in setups:
        load = s.load
        share = shares([r.requests for r in s.replicas])
        rows.append(
            [
                f"({s.key}) {s.label}",
                str(s.origin_gets),
                _num(ratio(s.origin_gets, s.distinct), 2) + "x",
                _pct(s.hit_ratio),
                str(sum(r.redis_hits for r in s.replicas)) if s.redis else "-",
                _num(math.nan if load is None else load.rps),
                _num(math.nan if load is None else load.wrk.p50_ms, 2),
                _num(math.nan if load is None else load.wrk.p99_ms, 2),
                "n/a" if load is None else str(load.failed + load.wrk.errors),
                " / ".join(_pct(x) for x in share) if share else "n/a",
            ]
        )
    header = [
        "setup",
        "origin GETs",
        "per distinct image",
        "hit ratio",
        "Redis hits",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "requests per replica",
    ]
    lines += _table(header, rows)
    lines += [
        "",
        "Origin GETs: counted by the proxy in front of Azurite during the load, for the images only. Hit "
        "ratio: `X-Cache: HIT` over the listed answers, as wrk saw them (a Redis hit is a HIT). Errors: "
        "statuses >= 400 plus wrk's socket errors. Latency is wrk's, of every request (the few "
        "`/lb-health` fillers that keep wrk's connections busy until the last answer included).",
        "",
    ]
    burst_rows = [
        [
            f"({s.key}) {s.label}",
            ", ".join(str(b.origin_gets) for b in s.bursts),
            ", ".join(f"{b.ok}/{b.clients}" for b in s.bursts),
            ", ".join(_num(b.last_s * MS) for b in s.bursts),
            ", ".join(b.waits for b in s.bursts) if s.redis else "-",
            ", ".join(str(b.redis_errors) for b in s.bursts) if s.redis else "-",
        ]
        for s in setups
        if s.bursts
    ]
    if burst_rows:
        clients = next(s.bursts[0].clients for s in setups if s.bursts)
        lines += [
            f"### Cold burst: {clients} concurrent GETs of a fresh 200 KiB blob, spread over the replicas",
            "",
        ]
        header = ["setup", "origin GETs per burst", "200 + full body", "last response ms", "waits served"]
        lines += _table([*header, "Redis errors"], burst_rows)
        lines += [
            "",
            "Requests go to the replicas directly (request i to replica i mod 3), not through nginx. "
            "Waits served: downloads that waited for another replica's and got its value, of those "
            "that waited. Redis errors: Redis calls that failed during the burst (timed out after "
            "`redis.timeout_s`, refused); a failed claim or wait sends that replica to Azure itself.",
            "",
        ]
    for s in setups:
        p = s.propagation
        if p is None:
            continue
        lines += [f"### Purge propagation, ({s.key}) {s.label}", ""]
        lines += _table(
            [
                "purges",
                "deliveries",
                "p50 ms",
                "p99 ms",
                "max ms",
                f"within {report.purge_bound_s:g} s",
                "missed",
            ],
            [
                [
                    str(p.purges),
                    str(len(p.delays_s)),
                    _num(p.quantile_ms(0.5), 1),
                    _num(p.quantile_ms(0.99), 1),
                    _num(p.quantile_ms(1.0), 1),
                    f"{p.within(report.purge_bound_s)}/{len(p.delays_s) + p.missed}",
                    str(p.missed),
                ]
            ],
        )
        lines += [
            "",
            "One purge at a time, on replica i mod 3, of an image every replica holds in memory (each "
            "asked for it first); a delivery is the time from sending `DELETE /admin/cache/<path>` until "
            "another replica's `/admin/cache` shows one entry fewer (polled back to back over keep-alive: "
            "another process has no event to wait on). "
            + (f"Purges not answered 200 `logged: true`: {p.not_logged}." if p.not_logged else ""),
            "",
        ]
    notes = [*report.notes, *(f"({s.key}): {n}" for s in setups for n in s.notes)]
    loads = [f"({s.key}) {s.loadavg}" for s in setups if s.loadavg]
    if loads:
        notes.append("load average before each setup: " + "; ".join(loads))
    if notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)
