"""Counters of the service and their Prometheus text rendering.

Each app owns one `Metrics` with its own `CollectorRegistry` (tests build many apps in one
process). Plain integer counters in `FetchCounters` are the single source for both `/metrics`
and the admin JSON; a collector reads them, and the cache's size, at scrape time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from imgproxy.core.cdn_stats import CdnPurgeStats
from imgproxy.core.lru import CacheStats
from imgproxy.core.stats import (
    LATENCY_BUCKETS_S,
    DiskStats,
    FetchCounters,
    FetchStats,
    FrontDoorStats,
    OriginStats,
    PurgeLogStats,
    TransformStats,
    UpstreamStats,
)
from imgproxy.metrics.cdn import CdnCollector

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


_COUNTER_HELP: Final = {
    "hits": "Requests answered from the cache.",
    "misses": "Requests not answered from the cache.",
    "coalesced": "Requests that joined a download already in flight instead of starting one.",
    "disk_hits": "Requests answered from the disk tier (promoted to memory or sent with sendfile).",
    "stale": "Requests answered with an expired entry (stale-while-revalidate or stale-if-error).",
    "negative_hits": "Requests answered 404 from the cache of missing blobs.",
    "revalidations": "Conditional requests sent to Azure to revalidate an expired entry.",
    "origin_fetches": "Requests sent to Azure (whole reads, ranges and readiness checks).",
    "origin_errors": "Requests to Azure that failed.",
}


class _StatsCollector(Collector):
    def __init__(self, metrics: Metrics, cache_stats: Callable[[], CacheStats]) -> None:
        self._metrics = metrics
        self._counters = metrics.counters
        self._cache_stats = cache_stats

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics
        responses = CounterMetricFamily(
            "imgproxy_http_requests", "HTTP responses by status code.", labels=["status"]
        )
        for status, count in sorted(metrics.responses.items()):
            responses.add_metric([str(status)], count)
        yield responses
        yield CounterMetricFamily(
            "imgproxy_http_sent_bytes", "Body bytes sent to clients.", value=metrics.bytes_served
        )
        yield GaugeMetricFamily(
            "imgproxy_http_streams", "Responses being streamed from Azure now.", metrics.active_streams
        )
        for name, value in self._counters.as_dict().items():
            yield CounterMetricFamily(f"imgproxy_cache_{name}", _COUNTER_HELP[name], value=value)
        stats = self._cache_stats()
        yield GaugeMetricFamily("imgproxy_cache_items", "Entries in the memory cache.", stats.items)
        yield GaugeMetricFamily("imgproxy_cache_bytes", "Bytes held by the memory cache.", stats.bytes)
        yield GaugeMetricFamily(
            "imgproxy_cache_max_items", "Entry limit of the memory cache.", stats.max_items
        )
        yield GaugeMetricFamily(
            "imgproxy_cache_max_bytes", "Byte limit of the memory cache.", stats.max_bytes
        )
        yield CounterMetricFamily(
            "imgproxy_cache_evictions", "Entries evicted by the LRU.", value=stats.evictions
        )


class _OriginCollector(Collector):
    def __init__(self, origin_stats: Callable[[], OriginStats]) -> None:
        self._origin_stats = origin_stats

    def collect(self) -> Iterator[Metric]:
        stats = self._origin_stats()
        yield GaugeMetricFamily("imgproxy_origin_in_flight", "Requests to Azure under way.", stats.in_flight)
        yield GaugeMetricFamily("imgproxy_origin_queued", "Callers waiting for an origin slot.", stats.queued)
        yield CounterMetricFamily(
            "imgproxy_origin_shed", "Origin calls refused (breaker open or queue full).", value=stats.shed
        )
        yield GaugeMetricFamily(
            "imgproxy_origin_breaker_open",
            "1 while the circuit breaker refuses calls.",
            int(stats.breaker_open),
        )
        yield CounterMetricFamily(
            "imgproxy_origin_breaker_opened", "Times the circuit breaker opened.", value=stats.breaker_opened
        )


class _DiskCollector(Collector):
    def __init__(self, disk_stats: Callable[[], DiskStats]) -> None:
        self._disk_stats = disk_stats

    def collect(self) -> Iterator[Metric]:
        stats = self._disk_stats()
        yield GaugeMetricFamily("imgproxy_disk_items", "Entries in the disk tier.", stats.items)
        yield GaugeMetricFamily("imgproxy_disk_bytes", "Bytes held by the disk tier.", stats.bytes)
        yield GaugeMetricFamily("imgproxy_disk_max_bytes", "Byte limit of the disk tier.", stats.max_bytes)
        yield CounterMetricFamily(
            "imgproxy_disk_evictions", "Entries evicted from disk.", value=stats.evictions
        )
        yield CounterMetricFamily(
            "imgproxy_disk_corrupt",
            "Disk entries found damaged (wrong size, modified, short send, bad digest) and dropped.",
            value=stats.corrupt,
        )


_REDIS_COUNTERS: Final = {
    "redis_hits": "Lookups answered by the shared (Redis) tier, verified.",
    "redis_misses": "Lookups the shared tier did not answer (absent, unverifiable, Redis failed).",
    "redis_stores": "Entries written to the shared tier.",
    "redis_refused": "Stores refused (purged meanwhile, lock lost, too large, Redis failed).",
    "redis_garbage": "Values in Redis that did not verify and were deleted (never served).",
    "redis_errors": "Redis calls that failed or timed out.",
    "redis_waits": "Misses that waited for another replica's download.",
    "redis_waits_served": "Waits that ended with the other replica's value.",
}
_LOG_COUNTERS: Final = {
    "appended": "Purges appended to the purge log.",
    "append_failures": "Purges that could not be logged (answered 502, logged: false).",
    "applied": "Other replicas' purges applied here.",
    "lost": "Times this replica could not know what it missed in the log and emptied its caches.",
    "forged": "Log entries skipped for a missing or wrong MAC (redis.signing_key set).",
    "checks": "Times the follower compared the stream's end with its position (reconnects, idle periods).",
}


class _RedisCollector(Collector):
    def __init__(
        self, stats: Callable[[], Mapping[str, int | bool]], log_stats: Callable[[], PurgeLogStats]
    ) -> None:
        self._stats = stats
        self._log_stats = log_stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        yield GaugeMetricFamily(
            "imgproxy_redis_up", "1 while Redis answers.", int(bool(stats.get("redis_up")))
        )
        for name, help_text in _REDIS_COUNTERS.items():
            yield CounterMetricFamily(f"imgproxy_{name}", help_text, value=int(stats.get(name, 0)))
        log = self._log_stats()
        for name, help_text in _LOG_COUNTERS.items():
            yield CounterMetricFamily(f"imgproxy_purge_log_{name}", help_text, value=getattr(log, name))
        yield GaugeMetricFamily(
            "imgproxy_purge_log_following", "1 while the purge log is followed.", int(log.following)
        )


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


class _TransformCollector(Collector):
    def __init__(self, transform_stats: Callable[[], TransformStats]) -> None:
        self._transform_stats = transform_stats

    def collect(self) -> Iterator[Metric]:
        stats = self._transform_stats()
        made = CounterMetricFamily(
            "imgproxy_transforms", "Transforms made, by output format.", labels=["format"]
        )
        for output, count in sorted(stats.transforms.items()):
            made.add_metric([output], count)
        yield made
        seconds = HistogramMetricFamily(
            "imgproxy_transform_seconds", "Time a transform took in its slot (made ones only)."
        )
        seconds.add_metric(
            [],
            buckets=[(_le(bound), count) for bound, count in stats.seconds_buckets],
            sum_value=stats.seconds_sum,
        )
        yield seconds
        yield GaugeMetricFamily("imgproxy_transform_queued", "Transforms waiting for a slot.", stats.queued)
        yield GaugeMetricFamily(
            "imgproxy_transform_running",
            "Transform slots taken (timed-out jobs still ending included).",
            stats.running,
        )
        yield GaugeMetricFamily("imgproxy_transform_slots", "Transforms that may run at once.", stats.slots)
        rejected = CounterMetricFamily(
            "imgproxy_transform_rejected", "Transforms refused or failed, by reason.", labels=["reason"]
        )
        for reason, count in sorted(stats.rejected.items()):
            rejected.add_metric([reason], count)
        yield rejected
        yield CounterMetricFamily(
            "imgproxy_transform_killed",
            "Timed-out or abandoned transforms stopped inside libvips.",
            value=stats.killed,
        )


class _UpstreamCollector(Collector):
    def __init__(self, stats: UpstreamStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        requests = CounterMetricFamily(
            "imgproxy_upstream_requests",
            "Answers of the main application, by status class.",
            labels=["class"],
        )
        for status_class, count in sorted(stats.requests.items()):
            requests.add_metric([status_class], count)
        yield requests
        errors = CounterMetricFamily(
            "imgproxy_upstream_errors",
            "Pass-through failures by kind (refused, connect, timeout, idle, reset, protocol, framing, "
            "pool, closed, body_too_large, client_gone, client_idle, client_error, client_timeout, "
            "busy, websockets_full).",
            labels=["kind"],
        )
        for kind, count in sorted(stats.errors.items()):
            errors.add_metric([kind], count)
        yield errors
        buckets: list[tuple[str, float]] = []
        cumulative = 0
        for bound, count in zip((*LATENCY_BUCKETS_S, float("inf")), stats.latency_counts, strict=True):
            cumulative += count
            buckets.append((_le(bound), cumulative))
        yield HistogramMetricFamily(
            "imgproxy_upstream_request_seconds",
            "Time from a request's arrival to the application's response headers.",
            buckets=buckets,
            sum_value=stats.latency_sum_s,
        )
        yield GaugeMetricFamily(
            "imgproxy_upstream_websockets", "Websocket tunnels open now.", stats.websockets
        )
        yield GaugeMetricFamily(
            "imgproxy_upstream_connections",
            "Connections to the application (in use or idle).",
            stats.connections,
        )
        yield GaugeMetricFamily(
            "imgproxy_upstream_idle_connections",
            "Idle kept-alive connections to the application.",
            stats.idle,
        )


class _OriginTimingCollector(Collector):
    def __init__(self, fetch: FetchStats) -> None:
        self._fetch = fetch

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "imgproxy_origin_request_seconds",
            "Latency of requests to Azure, by kind (whole, range, fill, revalidate).",
            labels=["kind"],
        )
        for kind, histogram in sorted(self._fetch.origin_seconds.items()):
            buckets = [(_le(bound), count) for bound, count in histogram.cumulative()]
            family.add_metric([kind], buckets=buckets, sum_value=histogram.total)
        yield family


class _FrontDoorCollector(Collector):
    def __init__(self, stats: FrontDoorStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        yield GaugeMetricFamily("imgproxy_client_connections", "Client connections open now.", stats.open)
        cut = CounterMetricFamily(
            "imgproxy_client_cutoffs",
            "Client connections the server cut off, by reason (head_timeout, send_timeout, per_ip).",
            labels=["reason"],
        )
        for reason, count in sorted(self._stats.cut.items()):
            cut.add_metric([reason], count)
        yield cut


class Metrics:
    """Every metric of one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.fetch = FetchStats()  # the cache counts here (and times its calls to Azure)
        self.active_streams = 0  # responses being streamed from Azure right now
        # Plain integers on the hot path; rendered by the collector at scrape time.
        self.responses: dict[int, int] = {}
        self.bytes_served = 0
        self.registry.register(_OriginTimingCollector(self.fetch))

    @property
    def counters(self) -> FetchCounters:
        return self.fetch.counters

    def watch_cache(self, cache_stats: Callable[[], CacheStats]) -> None:
        """Report the counters and the cache's size at every scrape."""
        self.registry.register(_StatsCollector(self, cache_stats))

    def count_response(self, status: int) -> None:
        self.responses[status] = self.responses.get(status, 0) + 1

    def watch_origin(self, origin_stats: Callable[[], OriginStats]) -> None:
        """Report the origin's slots, queue and breaker at every scrape."""
        self.registry.register(_OriginCollector(origin_stats))

    def watch_disk(self, disk_stats: Callable[[], DiskStats]) -> None:
        """Report the disk tier's size at every scrape."""
        self.registry.register(_DiskCollector(disk_stats))

    def watch_redis(
        self, stats: Callable[[], Mapping[str, int | bool]], log_stats: Callable[[], PurgeLogStats]
    ) -> None:
        """Report the shared tier and the purge log at every scrape."""
        self.registry.register(_RedisCollector(stats, log_stats))

    def watch_transforms(self, transform_stats: Callable[[], TransformStats]) -> None:
        """Report the transform pool's work, queue and rejections at every scrape."""
        self.registry.register(_TransformCollector(transform_stats))

    def watch_upstream(self, stats: UpstreamStats) -> None:
        """Report the pass-through to the main application at every scrape."""
        self.registry.register(_UpstreamCollector(stats))

    def watch_frontdoor(self, stats: FrontDoorStats) -> None:
        """Report the server's client connections and cut-offs at every scrape."""
        self.registry.register(_FrontDoorCollector(stats))

    def watch_cdn(self, stats: Callable[[], CdnPurgeStats]) -> None:
        """Report the purges forwarded to a CDN at every scrape."""
        self.registry.register(CdnCollector(stats))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def merge_workers(expositions: Mapping[int, bytes], unreached: int) -> bytes:
    """One exposition of several workers' metrics: each family once, each sample labelled with
    its `worker`, so that series stay continuous whichever worker a scrape lands on."""
    families: dict[str, Metric] = {}
    for index, text in sorted(expositions.items()):
        for family in text_string_to_metric_families(text.decode()):
            merged = families.setdefault(
                family.name, Metric(family.name, family.documentation, family.type, family.unit)
            )
            for sample in family.samples:
                labels = {**sample.labels, "worker": str(index)}
                merged.add_sample(sample.name, labels, sample.value, sample.timestamp, sample.exemplar)
    unreached_gauge = GaugeMetricFamily(
        "imgproxy_workers_unreached", "Workers whose figures this scrape could not get.", unreached
    )
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_Families([*families.values(), unreached_gauge]))
    return generate_latest(registry)
