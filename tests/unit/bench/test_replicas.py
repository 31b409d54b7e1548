"""The replicas part (`bench.replicas.figures`, `bench.replicas.rows`): origin GETs between
snapshots, ratios, shares, percentiles, and the tables rendered from the result JSON."""

from __future__ import annotations

import math

import pytest

from bench.replicas.figures import (
    BurstFigure,
    Propagation,
    ReplicaCounters,
    ReplicaReport,
    SetupFigures,
    origin_gets,
    percentile,
    ratio,
    shares,
)
from bench.report import Report
from bench.wrk import CountedResult, WrkResult
from tests.helpers import rendered, section, table_row


def counted(answered: int, hits: int, seconds: float, p99_ms: float = 9.0, failed: int = 0) -> CountedResult:
    run = WrkResult(
        requests=answered + 64,
        wire_bytes=0,
        duration_s=seconds + 0.2,
        errors=0,
        p50_ms=1.0,
        p90_ms=2.0,
        p99_ms=p99_ms,
        p999_ms=p99_ms,
        mean_ms=1.0,
        max_ms=p99_ms,
        raw="",
    )
    return CountedResult(run, answered, hits, answered - hits - failed, 0, failed, seconds)


def test_origin_gets_counts_the_get_delta_of_matching_blobs_only() -> None:
    """GETs of blobs under the prefix between two snapshots; new keys count whole; HEADs and other
    blobs do not count."""
    before = {"GET img/1.png": 2, "HEAD img/1.png": 1, "GET obj-20k.bin": 5}
    after = {
        "GET img/1.png": 5,
        "GET img/2.png": 1,
        "HEAD img/1.png": 9,
        "GET obj-20k.bin": 50,
        "GET burst/x.bin": 1,
    }
    assert origin_gets(before, after, "img/") == 4
    assert origin_gets(before, after, "burst/x.bin") == 1
    assert origin_gets(after, after, "img/") == 0


def test_ratio_of_nothing_is_nan() -> None:
    assert ratio(1, 4) == 0.25
    assert math.isnan(ratio(0, 0))


@pytest.mark.parametrize(
    ("q", "expected"), [(0.5, 50.0), (0.99, 99.0), (1.0, 100.0), (0.0, 1.0), (0.001, 1.0)]
)
def test_percentile_is_the_nearest_rank(q: float, expected: float) -> None:
    """Of 1..100 (shuffled), the q-th percentile is the value at rank ceil(q * n)."""
    values = [float(v) for v in range(100, 0, -1)]
    assert percentile(values, q) == expected


def test_percentile_of_one_or_no_value() -> None:
    assert percentile([7.0], 0.99) == 7.0
    assert math.isnan(percentile([], 0.5))


def test_shares_are_fractions_of_the_total() -> None:
    assert shares([1, 1, 2]) == [0.25, 0.25, 0.5]
    assert all(math.isnan(x) for x in shares([0, 0]))


def test_hit_ratios_client_side_and_server_side() -> None:
    """The client's ratio is X-Cache HIT over listed answers; the server's is summed hits over
    hits + misses of every replica."""
    figures = SetupFigures("b", "round-robin, Redis", True, requests=1000, distinct=400)
    figures.load = counted(answered=1000, hits=700, seconds=2.0)
    figures.replicas = [ReplicaCounters(300, 100), ReplicaCounters(200, 100), ReplicaCounters(210, 90)]
    assert figures.hit_ratio == 0.7
    assert figures.server_hit_ratio == 710 / 1000
    assert figures.load.rps == 500.0


def test_replica_counters_read_an_admin_answer() -> None:
    """Missing keys (no Redis) read as 0."""
    counters = ReplicaCounters.of({"hits": 5, "misses": 2, "cache_size": 3})
    assert (counters.hits, counters.misses, counters.redis_hits, counters.requests) == (5, 2, 0, 7)


def test_a_burst_sums_what_it_changed_on_each_replica() -> None:
    """Counters after minus before, per replica; the burst shows waits served of waits and the
    Redis errors over all replicas."""
    before = [ReplicaCounters(10, 5, redis_waits=1, redis_waits_served=1), ReplicaCounters(3, 3)]
    after = [
        ReplicaCounters(40, 6, redis_waits=2, redis_waits_served=2),
        ReplicaCounters(36, 4, redis_errors=2, redis_waits=1),
    ]
    changed = tuple(a.minus(b) for a, b in zip(after, before, strict=True))
    assert changed[0] == ReplicaCounters(30, 1, redis_waits=1, redis_waits_served=1)
    burst = BurstFigure(100, 100, 2, 0.1, changed)
    assert (burst.waits, burst.redis_errors) == ("1/2", 2)


def test_propagation_quantiles_and_the_bound() -> None:
    propagation = Propagation([0.001 * n for n in range(1, 101)], purges=50, missed=1)
    assert propagation.quantile_ms(0.5) == pytest.approx(50.0)
    assert propagation.quantile_ms(0.99) == pytest.approx(99.0)
    assert propagation.within(0.0505) == 50


def test_the_tables_show_each_setup_its_bursts_and_the_propagation() -> None:
    """One row per setup with origin GETs, their ratio to the distinct images, hit ratio, req/s and
    p99; the bursts' origin GETs; the propagation's p50/p99 and how many were within the bound."""
    a = SetupFigures("a", "round-robin, no Redis", False, requests=3000, distinct=500)
    a.load = counted(answered=3000, hits=2100, seconds=1.5, p99_ms=40.0)
    a.origin_gets = 900
    a.replicas = [ReplicaCounters(700, 300)] * 3
    a.bursts = [BurstFigure(100, 100, 3, 0.08)] * 3
    a.loadavg = "1.00 1.00 1.00"
    waited = (ReplicaCounters(33, 1), ReplicaCounters(33, 1, redis_waits=1, redis_waits_served=1))
    b = SetupFigures("b", "round-robin, Redis", True, requests=3000, distinct=500)
    b.load = counted(answered=3000, hits=2500, seconds=2.0, p99_ms=50.0, failed=3)
    b.origin_gets = 505
    b.replicas = [ReplicaCounters(800, 200, redis_hits=300)] * 2 + [ReplicaCounters(400, 100, redis_hits=300)]
    b.bursts = [BurstFigure(100, 100, 1, 0.06, waited)] * 3
    b.propagation = Propagation([0.002] * 98 + [0.030, 1.5], purges=50, missed=1)
    report = Report("2026-12-01 00:00:00 UTC", {"repeat": "1"})
    report.replicas = ReplicaReport(3, 64, 1.0, [a, b])
    text = rendered(report)
    setups = section(text, "3 replicas behind nginx: 3,000 requests, 500 distinct images")
    assert table_row(setups, "(a) round-robin, no Redis")[1:] == [
        "900", "1.80", "70.0%", "-", "2,000", "1.00", "40.00", "0", "33.3% / 33.3% / 33.3%",
    ]  # fmt: skip
    assert table_row(setups, "(b) round-robin, Redis")[1:] == [
        "505", "1.01", "83.3%", "900", "1,500", "1.00", "50.00", "3", "40.0% / 40.0% / 20.0%",
    ]  # fmt: skip
    bursts = section(text, "Replicas: cold bursts, 100 concurrent GETs of a fresh 200 KiB blob each")
    assert table_row(bursts, "(a) round-robin, no Redis")[1:] == [
        "3, 3, 3", "100/100, 100/100, 100/100", "80, 80, 80", "-", "-",
    ]  # fmt: skip
    assert table_row(bursts, "(b) round-robin, Redis")[1:] == [
        "1, 1, 1", "100/100, 100/100, 100/100", "60, 60, 60", "1/1, 1/1, 1/1", "0, 0, 0",
    ]  # fmt: skip
    purges = section(text, "Replicas: purge propagation")
    # 100 deliveries (one past the 1 s bound) and one missed: 99 of 101 within the bound.
    assert table_row(purges, "(b) round-robin, Redis")[1:] == [
        "50", "100", "2.0", "30.0", "1,500.0", "99/101", "1", "0",
    ]  # fmt: skip
    assert "(a) load average before: 1.00 1.00 1.00" in section(text, "Replicas: notes")
