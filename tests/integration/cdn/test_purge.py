"""Purges forwarded to a CDN (`cdn.purge_url`), against a stand-in endpoint that records them:
the request as configured (method, secret header from the environment, body with the tag), once
per purge across replicas, after the endpoint comes back from an outage, within the queue bound,
and what is left at shutdown."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest
from aiohttp import web
from azure.storage.blob.aio import ContainerClient

from devtools.azurite import free_port
from devtools.redis_server import RedisServer
from imgproxy.app import create_app
from imgproxy.config import load_config
from imgproxy.core.cdn_stats import CdnPurgeStats
from imgproxy.server import start_runner
from imgproxy.web.keys import CDN_PURGER, REPLICATION
from imgproxy.web.siblings import Siblings
from tests.helpers import (
    AUTH,
    AppClient,
    AppClientFactory,
    fetch,
    make_test_config,
    payload,
    upload,
    wait_until,
)
from tests.integration.cdn.test_tags import expected_tags
from tests.support.cdn_standin import CdnStandIn
from tests.support.origin_proxy import OriginProxy

SECRET: Final = "s3cret-cdn-token-value"


def purger_stats(client: AppClient) -> CdnPurgeStats:
    return client.app[CDN_PURGER].stats()


def cdn_settings(cdn: CdnStandIn, **overrides: Any) -> dict[str, Any]:
    """`[cdn]` for the stand-in: tags in `Cache-Tag`, no delay (one replica), short backoffs, and
    overrides."""
    return {
        "cdn__tag_headers": ("Cache-Tag",),
        "cdn__purge_url": f"{cdn.url}/zones/z1/purge_cache",
        "cdn__purge_delay_s": 0.0,
        "cdn__purge_backoff_s": 0.02,
        "cdn__purge_max_backoff_s": 0.1,
        **{f"cdn__{key}": value for key, value in overrides.items()},
    }


async def purge(client: AppClient, path: str | None) -> int:
    target = "/admin/cache" if path is None else f"/admin/cache/{path}"
    async with client.delete(target, headers=AUTH) as response:
        return response.status


async def test_a_purge_reaches_the_cdn_once_as_configured(
    app_client: AppClientFactory,
    container: ContainerClient,
    cdn: CdnStandIn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A purge of one blob, then of everything, each reach the endpoint once: POST, the
    Authorization header with the secret from the environment, the JSON body with the blob's tag
    (the one its answers carry), then the container's; counted in /metrics, the secret never logged."""
    # The header as an operator writes it: the secret named, read from the environment at load.
    loaded = load_config(
        None,
        {
            "IMGPROXY_ORIGIN_CONNECTION_STRING": "UseDevelopmentStorage=true",
            "IMGPROXY_CDN_TAG_HEADERS": "Cache-Tag",
            "IMGPROXY_CDN_PURGE_URL": "https://cdn.example/purge",
            "IMGPROXY_CDN_PURGE_HEADERS": json.dumps({"Authorization": "Bearer ${CDN_TOKEN}"}),
            "CDN_TOKEN": SECRET,
        },
    )
    await upload(container, "p.png", payload(500, seed=3))
    client = await app_client(**cdn_settings(cdn, purge_headers=loaded.cdn.purge_headers))
    blob, whole = expected_tags(container.container_name, "p.png")
    status, headers, _ = await fetch(client, "/images/p.png")
    assert (status, headers["Cache-Tag"]) == (200, f"{blob},{whole}")
    caplog.set_level(logging.DEBUG)

    assert await purge(client, "p.png") == 200
    await wait_until(lambda: len(cdn.received) == 1)
    assert await purge(client, None) == 200
    await wait_until(lambda: len(cdn.received) == 2)
    first, second = cdn.received
    assert (first.method, first.path_qs) == ("POST", "/zones/z1/purge_cache")
    assert first.headers["Authorization"] == f"Bearer {SECRET}"
    assert first.headers["Content-Type"] == "application/json"
    assert json.loads(first.body) == {"tags": [blob]}
    assert json.loads(second.body) == {"tags": [whole]}
    assert purger_stats(client) == CdnPurgeStats(sent=2)
    _, _, metrics = await fetch(client, "/metrics")
    text = metrics.decode()
    assert 'imgproxy_cdn_purges_total{outcome="sent"} 2.0' in text
    assert "imgproxy_cdn_purge_queued 0.0" in text
    assert SECRET not in caplog.text


async def test_a_purge_reaches_the_cdn_once_across_three_replicas(
    app_client: AppClientFactory, redis_server: RedisServer, container: ContainerClient, cdn: CdnStandIn
) -> None:
    """Three replicas sharing Redis, each configured with the endpoint: a purge accepted by one
    reaches the endpoint once, from that replica; the two that apply it from the purge log send
    nothing."""
    await upload(container, "r.png", payload(500, seed=4))
    a, b, c = [await app_client(redis=redis_server, **cdn_settings(cdn)) for _ in range(3)]
    assert await purge(b, "r.png") == 200
    await wait_until(lambda: all(r.app[REPLICATION].log.stats().applied == 1 for r in (a, c)))
    await wait_until(lambda: purger_stats(b).sent == 1)
    assert len(cdn.received) == 1
    assert json.loads(cdn.received[0].body) == {"tags": [expected_tags(container.container_name, "r.png")[0]]}
    assert purger_stats(a) == purger_stats(c) == CdnPurgeStats()


async def test_a_purge_relayed_to_sibling_workers_is_sent_once(
    origin: OriginProxy, container: ContainerClient, cdn: CdnStandIn
) -> None:
    """Two workers of one replica (in this process): the purge accepted by worker 0 is relayed to
    worker 1, which applies it and leaves the CDN to worker 0; the endpoint receives it once."""
    config = make_test_config(origin.endpoint, container.container_name, **cdn_settings(cdn))
    sockets = Path(tempfile.mkdtemp(prefix="imgproxy-test-"))  # short: Unix socket paths are limited
    runners: list[web.AppRunner] = []
    try:
        for index in range(2):
            runner = await start_runner(create_app(config, siblings=Siblings(sockets, index, 2)))
            await web.UnixSite(runner, str(sockets / f"{index}.sock")).start()
            runners.append(runner)
        port = free_port()
        await web.TCPSite(runners[0], "127.0.0.1", port).start()
        async with (
            aiohttp.ClientSession() as session,
            session.delete(f"http://127.0.0.1:{port}/admin/cache/s.png", headers=AUTH) as response,
        ):
            assert (response.status, (await response.json())["workers"]) == (200, 2)
        purgers = [started.app[CDN_PURGER] for started in runners]
        await wait_until(lambda: purgers[0].stats().sent == 1)
        assert len(cdn.received) == 1
        assert purgers[1].stats() == CdnPurgeStats()
    finally:
        for started in runners:
            await started.cleanup()
        shutil.rmtree(sockets, ignore_errors=True)


@pytest.mark.parametrize("outage", ["503", "refused"])
async def test_an_endpoint_down_for_a_while_receives_the_purges_after(
    outage: str, app_client: AppClientFactory, cdn: CdnStandIn, container: ContainerClient
) -> None:
    """While the endpoint answers 503 (or refuses connections) the purges are tried again with
    backoff; once it is back they arrive, in order, each once."""
    client = await app_client(**cdn_settings(cdn, purge_attempts=50))
    if outage == "503":
        cdn.failing_status = 503
    else:
        await cdn.go_down()
    assert await purge(client, "one.png") == 200
    assert await purge(client, "two.png") == 200
    # Down for five failed attempts (about 0.3 s with these backoffs: 0.02 doubled, at most 0.1).
    await wait_until(lambda: purger_stats(client).retried >= 5)
    assert cdn.received == []
    if outage == "503":
        assert cdn.refused >= 5
        cdn.failing_status = None
    else:
        await cdn.go_up()
    await wait_until(lambda: len(cdn.received) == 2)
    tags = [json.loads(r.body)["tags"][0] for r in cdn.received]
    assert tags == [expected_tags(container.container_name, name)[0] for name in ("one.png", "two.png")]
    stats = purger_stats(client)
    assert (stats.sent, stats.failed, stats.dropped, stats.queued) == (2, 0, 0, 0)
    assert stats.retried >= 5


async def test_the_queue_holds_its_bound_and_overflows_into_one_purge_of_everything(
    app_client: AppClientFactory, cdn: CdnStandIn, container: ContainerClient
) -> None:
    """With `purge_queue` 3 and the endpoint failing: the queue never holds more than 3; the
    fourth waiting purge replaces them all with one purge of the container's tag (4 dropped),
    which the endpoint receives once it is back, after the purge that was being tried."""
    client = await app_client(**cdn_settings(cdn, purge_queue=3, purge_attempts=1000))
    cdn.failing_status = 503
    assert await purge(client, "first.png") == 200
    await wait_until(lambda: purger_stats(client).retried >= 1)  # being tried: out of the queue
    depths = []
    for i in range(5):
        assert await purge(client, f"q{i}.png") == 200
        depths.append(purger_stats(client).queued)
    assert depths == [1, 2, 3, 1, 2]
    assert purger_stats(client).dropped == 4
    cdn.failing_status = None
    await wait_until(lambda: len(cdn.received) == 3)
    first, whole = expected_tags(container.container_name, "first.png")
    q4, _ = expected_tags(container.container_name, "q4.png")
    # q4 came after the overflow: it waits behind the purge of everything.
    assert [json.loads(r.body)["tags"][0] for r in cdn.received] == [first, whole, q4]
    stats = purger_stats(client)
    assert (stats.sent, stats.dropped, stats.queued) == (3, 4, 0)


async def test_attempts_are_bounded_and_a_refusal_is_not_tried_again(
    app_client: AppClientFactory, cdn: CdnStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """A 503 is tried `purge_attempts` times, then given up; a 400 (the endpoint refuses the
    request itself) once. Each is one WARNING naming the tag and the reason."""
    client = await app_client(**cdn_settings(cdn, purge_attempts=3))
    cdn.failing_status = 503
    assert await purge(client, "gone.png") == 200
    await wait_until(lambda: purger_stats(client).failed == 1)
    assert (cdn.refused, purger_stats(client).retried) == (3, 2)
    cdn.failing_status = 400
    assert await purge(client, "bad.png") == 200
    await wait_until(lambda: purger_stats(client).failed == 2)
    assert (cdn.refused, purger_stats(client).retried) == (4, 2)
    warnings = [r.getMessage() for r in caplog.records if r.name == "imgproxy.cdn.purger"]
    assert len(warnings) == 2
    assert "after 3 attempt(s): status 503" in warnings[0]
    assert "after 1 attempt(s): status 400" in warnings[1]


async def test_a_rate_limits_retry_after_is_waited_within_the_maximum_backoff(
    app_client: AppClientFactory, cdn: CdnStandIn
) -> None:
    """A 429 with `Retry-After: 1` is tried again after a second, not the 0.02 s backoff; with a
    `purge_max_backoff_s` of 0.1 the wait stays within it."""
    cdn.failing_status, cdn.retry_after = 429, "1"
    client = await app_client(**cdn_settings(cdn, purge_attempts=2, purge_max_backoff_s=5.0))
    assert await purge(client, "limited.png") == 200
    await wait_until(lambda: purger_stats(client).failed == 1)
    assert cdn.arrivals[1] - cdn.arrivals[0] >= 0.95
    capped = await app_client(**cdn_settings(cdn, purge_attempts=2))
    assert await purge(capped, "capped.png") == 200
    await wait_until(lambda: purger_stats(capped).failed == 1)
    assert cdn.arrivals[3] - cdn.arrivals[2] < 0.9


async def test_shutdown_sends_what_is_queued_without_waiting_for_the_delay(
    app_client: AppClientFactory, cdn: CdnStandIn
) -> None:
    """A purge waiting out `purge_delay_s` (60 s) is sent at once when the app closes."""
    client = await app_client(**cdn_settings(cdn, purge_delay_s=60.0))
    assert await purge(client, "late.png") == 200
    assert purger_stats(client).queued == 1 and cdn.received == []
    purger = client.app[CDN_PURGER]
    await client.close()
    assert len(cdn.received) == 1
    assert purger.stats() == CdnPurgeStats(sent=1)
