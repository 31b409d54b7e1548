"""Faults at the origin and misbehaving clients: resets, truncation, corruption, the circuit
breaker, the origin concurrency cap, disconnects and slow readers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp import web
from azure.storage.blob.aio import ContainerClient

from imgproxy.web.keys import FETCHER, METRICS
from tests.helpers import (
    MIB,
    AppClientFactory,
    cache_stats,
    fetch,
    payload,
    sha256,
    upload,
    wait_until,
)
from tests.support.origin_proxy import OriginProxy, reads_from


def for_blob(name: str) -> Callable[[web.Request], bool]:
    return lambda request: request.path.endswith("/" + name)


# --- origin faults --------------------------------------------------------------------------


async def test_connection_reset_is_502_and_nothing_cached(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """An origin that drops the connection (after the SDK's retries) gives 502; the next try works."""
    client = await app_client()
    data = payload(3000)
    await upload(container, "reset.png", data)
    origin.reset(for_blob("reset.png"))
    status, _, _ = await fetch(client, "/images/reset.png")
    assert status == 502
    # 3 SDK tries (1 + origin.retries); aiohttp's client may repeat each once on a reset keep-alive.
    assert 3 <= origin.count("reset.png") <= 6
    assert (await cache_stats(client))["cache_size"] == 0
    origin.heal()
    status, _, body = await fetch(client, "/images/reset.png")
    assert (status, sha256(body)) == (200, sha256(data))


async def test_connection_reset_with_stale_entry_serves_stale(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """With an expired entry inside stale_if_error_s, a reset origin still yields the bytes."""
    client = await app_client(cache__ttl_s=0, cache__stale_while_revalidate_s=0)
    data = payload(3000)
    await upload(container, "r.png", data)
    await fetch(client, "/images/r.png")
    origin.reset(for_blob("r.png"))
    status, headers, body = await fetch(client, "/images/r.png")
    assert (status, headers["X-Cache"], sha256(body)) == (200, "STALE", sha256(data))


async def test_corrupted_body_fails_md5_and_is_not_cached(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """A body of the right length but wrong bytes fails the Content-MD5 check: 502, nothing cached."""
    client = await app_client()
    data = payload(50_000)
    await upload(container, "flip.png", data)  # the SDK stores Content-MD5 on upload
    origin.corrupt = for_blob("flip.png")
    status, _, body = await fetch(client, "/images/flip.png")
    assert status == 502
    assert data not in body
    assert (await cache_stats(client))["cache_size"] == 0
    origin.heal()
    status, _, body = await fetch(client, "/images/flip.png")
    assert (status, sha256(body)) == (200, sha256(data))


async def test_truncated_stream_chunk_aborts_response(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """A streamed chunk cut short is never passed on as a complete 200: the response is aborted."""
    client = await app_client(cache__max_item_bytes=100_000, origin__download_chunk_bytes=64 * 1024)
    data = payload(1 * MIB)
    await upload(container, "cut.bin", data)
    # The first GET's 100,000 bytes are sent first; cut the third ranged read after them short.
    origin.truncate_after = (reads_from(100_000 + 2 * 64 * 1024), 1000)
    async with client.get("/images/cut.bin") as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == str(len(data))
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


# --- circuit breaker ------------------------------------------------------------------------


async def test_breaker_opens_sheds_and_keeps_serving_hits(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """After breaker_failures failed calls Azure is left alone: 503 + Retry-After, hits still served."""
    client = await app_client(origin__breaker_failures=3, origin__breaker_cooldown_s=3600, origin__retries=0)
    hot = payload(100)
    await upload(container, "hot.png", hot)
    assert (await fetch(client, "/images/hot.png"))[0] == 200
    origin.fail_with(503)
    for name in ("a.png", "b.png", "c.png"):
        assert (await fetch(client, f"/images/{name}"))[0] == 502
    asked = len(origin.requests)

    status, headers, _ = await fetch(client, "/images/d.png")
    assert status == 503
    assert int(headers["Retry-After"]) >= 1
    assert len(origin.requests) == asked  # refused without asking Azure
    assert (await client.get("/readyz")).status == 503
    status, headers, body = await fetch(client, "/images/hot.png")
    assert (status, headers["X-Cache"], body) == (200, "HIT", hot)


async def test_breaker_serves_stale_while_open(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """While the breaker is open an expired entry is served stale instead of a 503."""
    client = await app_client(
        origin__breaker_failures=1,
        origin__breaker_cooldown_s=3600,
        origin__retries=0,
        cache__ttl_s=0,
        cache__stale_while_revalidate_s=0,
    )
    data = payload(100)
    await upload(container, "s.png", data)
    await fetch(client, "/images/s.png")
    origin.fail_with(500)
    assert (await fetch(client, "/images/other.png"))[0] == 502  # opens the breaker
    status, headers, body = await fetch(client, "/images/s.png")
    assert (status, headers["X-Cache"], body) == (200, "STALE", data)


async def test_breaker_half_open_probe_closes_it(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """After the cool-down one probe reaches Azure; its success closes the breaker at once."""
    cooldown = 0.3
    client = await app_client(
        origin__breaker_failures=1, origin__breaker_cooldown_s=cooldown, origin__retries=0
    )
    await upload(container, "p.png", payload(10))
    origin.fail_with(500)
    assert (await fetch(client, "/images/p.png"))[0] == 502
    assert (await fetch(client, "/images/p.png"))[0] == 503
    origin.heal()
    await asyncio.sleep(cooldown)  # the cool-down is the behaviour under test
    assert (await fetch(client, "/images/p.png"))[0] == 200
    assert (await client.get("/readyz")).status == 200


# --- origin concurrency cap -----------------------------------------------------------------


async def test_origin_concurrency_is_capped_and_excess_shed(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """With max_concurrency=2 and max_queue=3, 10 distinct misses: 2 at Azure, 3 wait, 5 get 503."""
    client = await app_client(origin__max_concurrency=2, origin__max_queue=3)
    blobs = {f"c{i}.png": payload(100, seed=i) for i in range(10)}
    for name, data in blobs.items():
        await upload(container, name, data)
    held = origin.hold(lambda r: r.path.rsplit("/", 1)[-1] in blobs)
    tasks = {name: asyncio.create_task(fetch(client, f"/images/{name}")) for name in blobs}
    await wait_until(lambda: held.count == 2)
    await wait_until(lambda: sum(t.done() for t in tasks.values()) == 5)
    assert held.count == 2
    held.release.set()
    results = {name: await task for name, task in tasks.items()}

    statuses = sorted(status for status, _, _ in results.values())
    assert statuses == [200] * 5 + [503] * 5
    for name, (status, headers, body) in results.items():
        if status == 200:
            assert body == blobs[name]
        else:
            assert headers["Retry-After"] == "1"
    assert len(origin.requests) == 5


# --- clients that go away or read slowly ----------------------------------------------------


async def test_client_disconnect_mid_stream_frees_the_stream(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """A client leaving mid-stream ends its origin reads at once; the blob is not read to the end."""
    client = await app_client(cache__max_item_bytes=100_000, origin__download_chunk_bytes=256 * 1024)
    data = payload(40 * MIB)
    await upload(container, "long.bin", data)
    metrics = client.app[METRICS]
    response = await client.get("/images/long.bin")
    assert response.status == 200
    await response.content.readexactly(MIB)
    await wait_until(lambda: metrics.active_streams == 1)
    response.close()  # drop the connection mid-body

    await wait_until(lambda: metrics.active_streams == 0)
    await wait_until(lambda: client.app[FETCHER].in_flight() == 0)
    assert origin.body_bytes("long.bin") < 20 * MIB
    assert (await client.get("/healthz")).status == 200


async def test_slow_reader_does_not_make_the_server_buffer_the_blob(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """A reader that stops reading stops the origin reads too (back-pressure), far short of the blob."""
    client = await app_client(cache__max_item_bytes=100_000, origin__download_chunk_bytes=256 * 1024)
    data = payload(60 * MIB)
    await upload(container, "slow.bin", data)
    response = await client.get("/images/slow.bin")
    first = await response.content.readexactly(MIB)
    assert first == data[:MIB]
    # Nothing more is read by the client: give the server a moment to fill the socket buffers and
    # stop. Waiting out a window is the point here (proving that nothing further happens).
    await asyncio.sleep(1.0)
    fetched = origin.body_bytes("slow.bin")
    assert fetched < 24 * MIB, f"read {fetched / MIB:.1f} MiB from the origin for a stalled client"
    rest = await response.read()
    assert sha256(first + rest) == sha256(data)
