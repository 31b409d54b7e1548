"""The CDN purge forwarder's figures as Prometheus families (with `cdn.purge_url` set)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from imgproxy.core.cdn_stats import CdnPurgeStats


class CdnCollector(Collector):
    def __init__(self, stats: Callable[[], CdnPurgeStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        purges = CounterMetricFamily(
            "imgproxy_cdn_purges",
            "Purges forwarded to the CDN, by outcome (sent, failed, dropped).",
            labels=["outcome"],
        )
        for outcome, count in (("sent", stats.sent), ("failed", stats.failed), ("dropped", stats.dropped)):
            purges.add_metric([outcome], count)
        yield purges
        yield CounterMetricFamily(
            "imgproxy_cdn_purge_retries",
            "Attempts to send a CDN purge after a failed one.",
            value=stats.retried,
        )
        yield GaugeMetricFamily("imgproxy_cdn_purge_queued", "CDN purges waiting to be sent.", stats.queued)
