"""What clients get when Azure fails, stalls or changes a blob under us."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web
from azure.storage.blob.aio import ContainerClient

from imgproxy.config import Config
from tests.helpers import AUTH, MIB, AppClient, AppClientFactory, payload, sha256, upload
from tests.support.origin_proxy import OriginProxy, reads_from


@pytest.fixture
async def impatient_client(app_client: AppClientFactory) -> AppClient:
    """An app that gives the origin 0.5 s per call."""
    return await app_client(origin__timeout_s=0.5)


async def test_origin_5xx_is_502(client: AppClient, container: ContainerClient, origin: OriginProxy) -> None:
    """When Azure answers 500 (after the SDK's bounded retries), the client gets 502."""
    await upload(container, "e.png", payload(10))
    origin.fail_with(500)
    response = await client.get("/images/e.png")
    assert response.status == 502
    assert "origin" in await response.text()
    assert origin.count("e.png") == 3  # first try + origin.retries (2)


async def test_origin_auth_failure_is_502(
    app_client: AppClientFactory, config: Config, container: ContainerClient
) -> None:
    """A wrong account key is an origin failure (502), not a missing blob."""
    bad_key = config.origin.connection_string.replace("AccountKey=Eby8", "AccountKey=Xby8")
    import dataclasses

    bad = dataclasses.replace(config, origin=dataclasses.replace(config.origin, connection_string=bad_key))
    client = await app_client(config=bad)
    await upload(container, "k.png", payload(10))
    assert (await client.get("/images/k.png")).status == 502


async def test_slow_origin_is_504_and_nothing_cached(
    impatient_client: AppClient, container: ContainerClient, origin: OriginProxy
) -> None:
    """An origin that does not answer within origin.timeout_s gives every waiter a 504."""
    await upload(container, "slow.png", payload(10))
    held = origin.hold(lambda r: r.path.endswith("/slow.png"))
    try:
        responses = await asyncio.gather(*(impatient_client.get("/images/slow.png") for _ in range(5)))
        assert [r.status for r in responses] == [504] * 5
    finally:
        held.release.set()
    stats = await (await impatient_client.get("/admin/cache", headers=AUTH)).json()
    assert stats["cache_size"] == 0
    assert (await impatient_client.get("/images/slow.png")).status == 200


async def test_stall_between_chunks_aborts_the_stream(
    impatient_client: AppClient, container: ContainerClient, config: Config, origin: OriginProxy
) -> None:
    """A stream whose next chunk does not come in time is cut short, never completed wrongly."""
    data = payload(config.cache.max_item_bytes + 3 * MIB, seed=3)
    await upload(container, "stall.bin", data)
    held = origin.hold(reads_from(config.cache.max_item_bytes + MIB, "stall.bin"))  # after the first chunk
    try:
        async with impatient_client.get("/images/stall.bin") as response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
    finally:
        held.release.set()


async def test_blob_overwritten_mid_stream_aborts_response(
    client: AppClient, container: ContainerClient, config: Config, origin: OriginProxy
) -> None:
    """If the blob changes while streaming, the response is aborted and the new bytes served next."""
    old = payload(config.cache.max_item_bytes + 3 * MIB, seed=4)
    new = payload(config.cache.max_item_bytes + 2 * MIB, seed=5)
    await upload(container, "moving.bin", old)
    held = origin.hold(reads_from(config.cache.max_item_bytes + MIB, "moving.bin"))
    async with client.get("/images/moving.bin") as response:
        assert response.status == 200
        reading = asyncio.create_task(response.read())
        await held.arrived.wait()
        await upload(container, "moving.bin", new)
        held.release.set()
        with pytest.raises(aiohttp.ClientPayloadError):
            await reading

    origin.heal()
    async with client.get("/images/moving.bin") as again:
        assert again.status == 200
        assert sha256(await again.read()) == sha256(new)


async def test_blob_overwritten_before_stream_starts_is_served_fresh(
    client: AppClient, container: ContainerClient, config: Config
) -> None:
    """A large blob replaced since its metadata was learnt is looked up again, not failed."""
    first = payload(config.cache.max_item_bytes + MIB, seed=6)
    second = payload(config.cache.max_item_bytes + 2 * MIB, seed=7)
    await upload(container, "swap.bin", first)
    assert sha256(await (await client.get("/images/swap.bin")).read()) == sha256(first)
    await upload(container, "swap.bin", second)
    response = await client.get("/images/swap.bin")
    assert response.status == 200
    assert sha256(await response.read()) == sha256(second)


async def test_truncated_origin_body_is_not_cached(
    client: AppClient, container: ContainerClient, origin: OriginProxy
) -> None:
    """A body cut short by the origin never becomes a cache entry or a complete-looking 200."""
    data = payload(200_000, seed=12)
    await upload(container, "cut.png", data)

    async def truncate(request: web.Request) -> web.StreamResponse | None:
        if not request.path.endswith("/cut.png"):
            return None
        headers = {"Content-Type": "image/png", "Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}"}
        response = web.StreamResponse(status=206, headers=headers)
        response.content_length = len(data)
        await response.prepare(request)
        await response.write(data[:1000])
        assert request.transport is not None
        request.transport.close()
        return response

    origin.hook = truncate
    response = await client.get("/images/cut.png")
    assert response.status == 502
    origin.heal()
    stats = await (await client.get("/admin/cache", headers=AUTH)).json()
    assert stats["cache_size"] == 0
    good = await client.get("/images/cut.png")
    assert sha256(await good.read()) == sha256(data)
