"""The soak's short form (`bench.soak.run`, 2 minutes): two workers under the mixed load with a
Redis outage halfway; each worker's anonymous RSS grows less than 10 % after the warm-up, no 5xx
but those of the outage, every body checked right."""

from __future__ import annotations

import pytest

from bench.soak.run import figures, seed_blobs, soak
from bench.soak.sampler import MIB, Sample
from devtools.azurite import AzuriteServer
from devtools.redis_server import RedisServer

SHORT_S = 120.0


def test_figures_take_window_medians_after_the_warm_up() -> None:
    """100 s: warm-up 40 s, windows of 10 s; a spike in a window does not move its median."""
    samples = [
        Sample(float(t), [100 * MIB + (t >= 50) * 10 * MIB + (t == 95) * 500 * MIB], [9], [3])
        for t in range(101)
    ]
    got = figures(samples, 100.0)
    worker = got["workers"][0]
    assert (got["warmup_s"], got["window_s"]) == (40.0, 10.0)
    assert worker["rss_anon_after_warmup"] == 100 * MIB
    assert worker["rss_anon_end"] == 110 * MIB
    assert worker["rss_anon_peak"] == 610 * MIB
    assert worker["growth"] == pytest.approx(0.1)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_minute_soak_keeps_memory_flat_and_answers_right(
    azurite: AzuriteServer, own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MALLOC_ARENA_MAX", "MALLOC_CONF", "LD_PRELOAD", "IMGPROXY_SERVER_MALLOC_ARENA_MAX"):
        monkeypatch.delenv(name, raising=False)
    seed_blobs(azurite.connection_string)
    result = soak(azurite.connection_string, own_redis, SHORT_S, "default", cache_mib=32)
    workers = result["figures"]["workers"]
    print(f"\n[soak] {result['requests']} requests; per worker: {workers}")
    assert len(workers) == 2
    assert all(worker["growth"] < 0.10 for worker in workers), workers
    unexpected = (result["statuses"], result["outage_at_s"], result["redis_outage_s"], result["five_xx_at_s"])
    assert result["unexpected_5xx"] == 0, unexpected
    assert result["wrong_bodies"] == 0
    assert result["transport_errors"] == 0
    assert result["redis_restarts"] == 1
    actions = {key.split()[0] for key in result["statuses"]}
    assert actions == {"hit", "miss", "cold", "range", "upload", "page", "purge"}
    assert result["requests"] > 1000
