"""Admin API: statistics, eviction bounds, purges and authentication."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from azure.storage.blob.aio import ContainerClient

from devtools.azurite import free_port
from imgproxy.app import create_app
from imgproxy.server import start_runner
from imgproxy.web.siblings import RELAYED_HEADER, Siblings
from tests.helpers import (
    ADMIN_TOKEN,
    AUTH,
    AppClient,
    AppClientFactory,
    cache_stats,
    make_test_config,
    payload,
    upload,
    x_cache,
)
from tests.support.origin_proxy import OriginProxy


@pytest.fixture
async def small_client(app_client: AppClientFactory) -> AppClient:
    """An app whose cache holds at most 3 entries and 2500 bytes (items up to 1000 bytes)."""
    return await app_client(cache__max_items=3, cache__max_bytes=2500, cache__max_item_bytes=1000)


async def test_stats_report_sizes_limits_and_counters(client: AppClient, container: ContainerClient) -> None:
    """GET /admin/cache reports the phase-1 keys and the request counters."""
    await upload(container, "a.png", payload(100))
    await x_cache(client, "/images/a.png")
    await x_cache(client, "/images/a.png")
    body = await cache_stats(client)
    assert body["cache_size"] == 1
    assert body["cache_bytes"] == 100
    assert body["cache_limit"] == 100
    assert body["cache_bytes_limit"] == 100 * 1024 * 1024
    assert (body["hits"], body["misses"], body["coalesced"], body["origin_fetches"]) == (1, 1, 0, 1)


async def test_eviction_holds_count_bound(small_client: AppClient, container: ContainerClient) -> None:
    """With room for 3 entries, a 4th evicts the least recently used one."""
    for name in "abcd":
        await upload(container, f"{name}.png", payload(100, seed=ord(name)))
    for name in "abc":
        await x_cache(small_client, f"/images/{name}.png")
    assert await x_cache(small_client, "/images/a.png") == "HIT"  # a is now most recent
    await x_cache(small_client, "/images/d.png")  # evicts b
    body = await cache_stats(small_client)
    assert (body["cache_size"], body["cache_bytes"], body["evictions"]) == (3, 300, 1)
    assert await x_cache(small_client, "/images/a.png") == "HIT"
    assert await x_cache(small_client, "/images/b.png") == "MISS"


async def test_eviction_holds_byte_bound(small_client: AppClient, container: ContainerClient) -> None:
    """Entries are evicted until the byte total fits, even with room for more entries."""
    for name in "xyz":
        await upload(container, f"{name}.png", payload(1000, seed=ord(name)))
    for name in "xyz":
        await x_cache(small_client, f"/images/{name}.png")
        body = await cache_stats(small_client)
        assert body["cache_bytes"] <= 2500
        assert body["cache_size"] <= 3
    body = await cache_stats(small_client)
    assert (body["cache_size"], body["cache_bytes"]) == (2, 2000)
    assert await x_cache(small_client, "/images/x.png") == "MISS"


async def test_purge_one_path(client: AppClient, container: ContainerClient, origin: OriginProxy) -> None:
    """DELETE /admin/cache/{path} forgets that blob only; the next GET goes to Azure."""
    await upload(container, "dir/one.png", payload(10, seed=1))
    await upload(container, "two.png", payload(10, seed=2))
    await x_cache(client, "/images/dir/one.png")
    await x_cache(client, "/images/two.png")

    response = await client.delete("/admin/cache/dir/one.png", headers=AUTH)
    assert response.status == 200
    assert await response.json() == {"path": "dir/one.png", "purged": True}
    assert await x_cache(client, "/images/dir/one.png") == "MISS"
    assert await x_cache(client, "/images/two.png") == "HIT"
    assert origin.count("dir/one.png") == 2

    again = await client.delete("/admin/cache/nothing.png", headers=AUTH)
    assert await again.json() == {"path": "nothing.png", "purged": False}


async def test_purge_all(client: AppClient, container: ContainerClient) -> None:
    """DELETE /admin/cache empties the cache."""
    for name in ("p.png", "q.png"):
        await upload(container, name, payload(10))
        await x_cache(client, f"/images/{name}")
    response = await client.delete("/admin/cache", headers=AUTH)
    assert await response.json() == {"purged": 2}
    assert (await cache_stats(client))["cache_size"] == 0
    assert await x_cache(client, "/images/p.png") == "MISS"


async def test_purge_rejects_bad_path(client: AppClient) -> None:
    """A purge path gets the same validation as an image path."""
    response = await client.delete("/admin/cache/a%00b", headers=AUTH)
    assert response.status == 400


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN_TOKEN}, {"Authorization": "Basic x"}],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/admin/cache"), ("DELETE", "/admin/cache"), ("DELETE", "/admin/cache/a.png")],
)
async def test_admin_needs_the_bearer_token(
    client: AppClient, headers: dict[str, str], method: str, path: str
) -> None:
    """Without the right bearer token every admin call is 401 and purges nothing."""
    response = await client.request(method, path, headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_admin_is_404_without_a_configured_token(app_client: AppClientFactory) -> None:
    """With admin.token empty the admin API does not exist."""
    client = await app_client(admin__token="")
    for method, path in (("GET", "/admin/cache"), ("DELETE", "/admin/cache"), ("DELETE", "/admin/cache/x")):
        response = await client.request(method, path, headers=AUTH)
        assert response.status == 404


async def test_purges_are_relayed_to_sibling_workers_and_a_missing_one_is_reported(
    origin: OriginProxy, container: ContainerClient
) -> None:
    """Workers 0 and 1 of 3 run (in this process), worker 2 does not: a purge sent to worker 0
    empties both caches, counts both, and answers 502 naming worker 2."""
    await upload(container, "relayed.png", payload(900, seed=31))
    config = make_test_config(origin.endpoint, container.container_name)
    sockets = Path(tempfile.mkdtemp(prefix="imgproxy-test-"))  # short: Unix socket paths are limited
    runners = []
    try:
        for index in range(2):
            runner = await start_runner(create_app(config, siblings=Siblings(sockets, index, 3)))
            await web.UnixSite(runner, str(sockets / f"{index}.sock")).start()
            runners.append(runner)
        port = free_port()
        await web.TCPSite(runners[0], "127.0.0.1", port).start()

        async def on_worker(index: int, method: str, path: str, **headers: str) -> tuple[int, Any, str]:
            connector = aiohttp.UnixConnector(path=str(sockets / f"{index}.sock"))
            async with (
                aiohttp.ClientSession(connector=connector) as session,
                session.request(method, f"http://worker{path}", headers=headers) as response,
            ):
                body = await response.json() if method == "DELETE" else await response.read()
                return response.status, body, response.headers.get("X-Cache", "")

        for index in range(2):
            assert (await on_worker(index, "GET", "/images/relayed.png"))[2] == "MISS"
            assert (await on_worker(index, "GET", "/images/relayed.png"))[2] == "HIT"
        async with (
            aiohttp.ClientSession() as session,
            session.delete(f"http://127.0.0.1:{port}/admin/cache", headers=AUTH) as response,
        ):
            status, answer = response.status, await response.json()
        assert status == 502
        assert (answer["purged"], answer["workers"]) == (2, 3)
        [missing] = answer["workers_unreached"]
        assert missing.startswith("worker 2: ")
        for index in range(2):  # both caches were emptied
            assert (await on_worker(index, "GET", "/images/relayed.png"))[2] == "MISS"
        # A relayed call is answered by its worker alone.
        relayed = await on_worker(1, "DELETE", "/admin/cache/relayed.png", **AUTH, **{RELAYED_HEADER: "1"})
        assert relayed[:2] == (200, {"path": "relayed.png", "purged": True})
        assert (await on_worker(0, "GET", "/images/relayed.png"))[2] == "HIT"
    finally:
        for runner in runners:
            await runner.cleanup()
        shutil.rmtree(sockets, ignore_errors=True)
