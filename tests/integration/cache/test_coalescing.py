"""Concurrent misses for one blob: one origin download, shared by every waiter."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from azure.storage.blob.aio import ContainerClient

from imgproxy.config import Config
from imgproxy.web.keys import FETCHER
from tests.helpers import (
    AUTH,
    MIB,
    AppClient,
    AppClientFactory,
    cache_stats,
    fetch_image,
    payload,
    sha256,
    upload,
    wait_until,
)
from tests.support.origin_proxy import OriginProxy


def blob_get(name: str) -> Any:
    return lambda request: request.method == "GET" and request.path.endswith("/" + name)


async def test_hundred_cold_gets_make_one_origin_download(
    client: AppClient, container: ContainerClient, origin: OriginProxy
) -> None:
    """100 concurrent cold GETs of a 2 MiB blob: all byte-exact, the origin sees one GET."""
    data = payload(2 * MIB, seed=7)
    await upload(container, "burst.bin", data)
    fetcher = client.app[FETCHER]
    held = origin.hold(blob_get("burst.bin"))

    tasks = [asyncio.create_task(fetch_image(client, "burst.bin")) for _ in range(100)]
    await held.arrived.wait()
    await wait_until(lambda: fetcher.waiting("burst.bin") == 100)
    held.release.set()
    results = await asyncio.gather(*tasks)

    assert {status for status, _, _ in results} == {200}
    assert {sha256(body) for _, _, body in results} == {sha256(data)}
    assert origin.count("burst.bin") == 1
    assert fetcher.counters()["coalesced"] == 99
    assert fetcher.counters()["origin_fetches"] == 1


async def test_failing_origin_fails_every_waiter_and_caches_nothing(
    client: AppClient, container: ContainerClient, origin: OriginProxy
) -> None:
    """A download that fails gives every waiter a 502; nothing is cached; the next try succeeds."""
    data = payload(1000, seed=8)
    await upload(container, "flaky.png", data)
    fetcher = client.app[FETCHER]
    arrived, release = asyncio.Event(), asyncio.Event()

    async def failing(request: web.Request) -> web.StreamResponse | None:
        if not blob_get("flaky.png")(request):
            return None
        arrived.set()
        await release.wait()
        return web.Response(status=500, text="injected")

    origin.hook = failing
    tasks = [asyncio.create_task(fetch_image(client, "flaky.png")) for _ in range(20)]
    await arrived.wait()
    await wait_until(lambda: fetcher.waiting("flaky.png") == 20)
    release.set()
    results = await asyncio.gather(*tasks)

    assert {status for status, _, _ in results} == {502}
    stats = await cache_stats(client)
    assert stats["cache_size"] == 0
    assert fetcher.counters()["origin_fetches"] == 1

    origin.heal()
    status, cache, body = await fetch_image(client, "flaky.png")
    assert (status, sha256(body), cache) == (200, sha256(data), "MISS")


async def test_purge_during_inflight_fetch_does_not_repopulate(
    client: AppClient, container: ContainerClient, origin: OriginProxy
) -> None:
    """A purge that lands while a download runs keeps that download's bytes out of the cache."""
    await upload(container, "racy.png", payload(500, seed=9))
    held = origin.hold(blob_get("racy.png"))
    first = asyncio.create_task(fetch_image(client, "racy.png"))
    await held.arrived.wait()

    purge = await client.delete("/admin/cache/racy.png", headers=AUTH)
    assert purge.status == 200
    held.release.set()
    assert (await first)[0] == 200

    status, cache, _ = await fetch_image(client, "racy.png")
    assert (status, cache) == (200, "MISS")
    assert origin.count("racy.png") == 2


async def test_large_blob_waiters_stream_in_parallel(
    client: AppClient, container: ContainerClient, config: Config, origin: OriginProxy
) -> None:
    """Followers of a too-large blob each stream at once instead of queueing behind each other."""
    data = payload(config.cache.max_item_bytes + MIB, seed=10)
    await upload(container, "huge.bin", data)
    # Hold every ranged read past the first chunk: all five streams must reach it together.
    held = origin.hold(lambda r: r.path.endswith("/huge.bin") and "If-Match" in r.headers)

    tasks = [asyncio.create_task(fetch_image(client, "huge.bin")) for _ in range(5)]
    await wait_until(lambda: held.count >= 5)
    held.release.set()
    results = await asyncio.gather(*tasks)

    assert {sha256(body) for _, _, body in results} == {sha256(data)}
    first_reads = [r for r in origin.blob_requests("huge.bin") if not r.pinned]
    assert len(first_reads) == 1  # the coalesced first read, shared by all five


async def test_disconnecting_waiter_does_not_cancel_shared_download(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """With handler cancellation on, a waiter that goes away leaves the download to the others."""
    client = await app_client(server_kwargs={"handler_cancellation": True})
    data = payload(3000, seed=11)
    await upload(container, "shared.png", data)
    fetcher = client.app[FETCHER]
    held = origin.hold(blob_get("shared.png"))

    leaver = asyncio.create_task(fetch_image(client, "shared.png"))
    stayer = asyncio.create_task(fetch_image(client, "shared.png"))
    await held.arrived.wait()
    await wait_until(lambda: fetcher.waiting("shared.png") == 2)
    leaver.cancel()
    held.release.set()

    status, _, body = await stayer
    assert (status, sha256(body)) == (200, sha256(data))
    assert origin.count("shared.png") == 1
    assert (await fetch_image(client, "shared.png"))[1] == "HIT"
