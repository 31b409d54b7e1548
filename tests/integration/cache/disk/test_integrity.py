"""The disk tier's files are untrusted: a damaged file is never served and never hangs a client.

Damage done while the server runs is found before any header is sent (the opened file's `fstat`
against the entry; the bytes against their digest when read into memory) and the request is
answered from Azure. Damage that happens after that check (the file shrinks during the send)
aborts the connection. Each request here is bounded by a client timeout well under the test's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest
from azure.storage.blob.aio import ContainerClient

from devtools.azurite import connection_string
from tests.helpers import (
    MIB,
    AppClient,
    AppClientFactory,
    ImageAnswer,
    cache_stats,
    data_files,
    fetch_image,
    payload,
    poll,
    settled,
    sha256,
    upload,
)
from tests.integration.cache.disk.conftest import ITEM_LIMIT
from tests.support.origin_proxy import OriginProxy
from tests.support.processes import WORKER_TOKEN, disk_env, start_server, two_workers
from tests.support.tls import loopback_tls

REQUEST_TIMEOUT_S: Final = 10.0  # per request; the suite's per-test timeout is 300 s
SIZES: Final = {"sendfile": 300_000, "promoted": 10_000}  # over and under ITEM_LIMIT
DAMAGES: Final = ("truncate", "extend", "garbage")


def damage(file: Path, how: str) -> None:
    """Damage a data file as a full disk, a careless tool, or a bad restore would."""
    size = file.stat().st_size
    if how == "truncate":
        os.truncate(file, size // 2)
    elif how == "extend":
        with file.open("ab") as f:
            f.write(b"\0" * 1000)
    elif how == "garbage":
        rewrite_in_place(file, payload(size, seed=666))
    elif how == "delete":
        file.unlink()
    else:
        raise AssertionError(how)


def rewrite_in_place(file: Path, garbage: bytes) -> None:
    """Overwrite `file` with `garbage` of its own size, as `dd conv=notrunc` would."""
    before = file.stat().st_mtime_ns
    while True:
        with file.open("r+b") as f:
            f.write(garbage)
        if file.stat().st_mtime_ns != before:
            return
        # The file system's clock is coarse (a few ms): write again once it has ticked, so the
        # damage looks like what it is, a later write.
        time.sleep(0.001)


async def fetch_bounded(client: AppClient, name: str, **headers: str) -> ImageAnswer:
    """`fetch_image`, bounded by REQUEST_TIMEOUT_S: these tests look for hangs."""
    async with asyncio.timeout(REQUEST_TIMEOUT_S):
        return await fetch_image(client, name, **headers)


async def only_on_disk(client: AppClient, container: ContainerClient, name: str, kind: str) -> bytes:
    """Upload `name`, download it once, and leave it on disk only (out of the memory cache)."""
    data = payload(SIZES[kind], seed=len(name) + SIZES[kind])
    await upload(container, name, data)
    status, cache, body = await fetch_bounded(client, name)
    assert (status, cache, sha256(body)) == (200, "MISS", sha256(data))
    await settled(client, 1)
    if kind == "promoted":  # cache.max_items = 1: another blob pushes it out of memory
        await upload(container, "filler.bin", b"filler")
        await fetch_bounded(client, "filler.bin")
        await settled(client, 2)
    return data


def data_file_of(disk_dir: Path, size: int) -> Path:
    (file,) = [f for f in data_files(disk_dir) if f.stat().st_size == size]
    return file


def damage_warnings(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and "damaged" in r.getMessage() and name in r.getMessage()
    ]


@pytest.mark.parametrize("span", ["full", "range"])
@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("kind", list(SIZES))
async def test_a_file_damaged_while_the_server_runs_is_dropped_and_the_blob_comes_from_azure(
    app_client: AppClientFactory,
    container: ContainerClient,
    origin: OriginProxy,
    disk_dir: Path,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    how: str,
    span: str,
) -> None:
    """Truncated, extended or same-size garbage: the next request is a byte-exact MISS from Azure
    (full or ranged), the damage is logged once and counted, and the entry is gone from disk."""
    client = await app_client(cache__max_items=1)
    data = await only_on_disk(client, container, "hurt.bin", kind)
    damage(data_file_of(disk_dir, len(data)), how)
    asked = origin.count("hurt.bin")
    caplog.set_level(logging.WARNING)

    if span == "range":
        status, cache, body = await fetch_bounded(client, "hurt.bin", Range="bytes=1000-8999")
        assert (status, cache, sha256(body)) == (206, "MISS", sha256(data[1000:9000]))
    else:
        status, cache, body = await fetch_bounded(client, "hurt.bin")
        assert (status, cache, sha256(body)) == (200, "MISS", sha256(data))
    assert origin.count("hurt.bin") > asked
    assert (await cache_stats(client))["disk_corrupt"] == 1
    assert len(damage_warnings(caplog, "hurt.bin")) == 1

    # Right afterwards the blob is served whole and exact again, and no damaged byte is left.
    status, _, body = await fetch_bounded(client, "hurt.bin")
    assert (status, sha256(body)) == (200, sha256(data))
    await settled(client, 1 if kind == "sendfile" else 2)  # written again (and the filler)
    for file in data_files(disk_dir):
        if file.stat().st_size != len(b"filler"):
            assert sha256(file.read_bytes()) == sha256(data)
    assert (await cache_stats(client))["disk_corrupt"] == 1


async def test_the_damage_counter_is_a_prometheus_counter(
    app_client: AppClientFactory, container: ContainerClient, disk_dir: Path
) -> None:
    """`imgproxy_disk_corrupt_total` counts dropped entries."""
    client = await app_client()
    data = await only_on_disk(client, container, "counted.bin", "sendfile")
    damage(data_file_of(disk_dir, len(data)), "truncate")
    assert (await fetch_bounded(client, "counted.bin"))[1] == "MISS"
    async with client.get("/metrics") as response:
        assert "imgproxy_disk_corrupt_total 1.0" in (await response.text()).splitlines()


@pytest.mark.parametrize("kind", list(SIZES))
async def test_a_file_deleted_under_the_running_server_is_fetched_again(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy, disk_dir: Path, kind: str
) -> None:
    """A data file deleted while the server runs: the next request is a byte-exact MISS (gone is
    not damage: nothing is counted)."""
    client = await app_client(cache__max_items=1)
    data = await only_on_disk(client, container, "gone.bin", kind)
    damage(data_file_of(disk_dir, len(data)), "delete")
    asked = origin.count("gone.bin")
    status, cache, body = await fetch_bounded(client, "gone.bin")
    assert (status, cache, sha256(body)) == (200, "MISS", sha256(data))
    assert origin.count("gone.bin") > asked
    assert (await cache_stats(client))["disk_corrupt"] == 0


@pytest.mark.parametrize("how", DAMAGES)
async def test_a_damaged_file_a_sibling_worker_published_is_not_adopted(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy, disk_dir: Path, how: str
) -> None:
    """Two workers on one directory: the second worker's adoption of a small entry reads it into
    memory, finds the damage and downloads the blob itself, byte-exact."""
    first, second = await app_client(shared_disk=True), await app_client(shared_disk=True)
    data = payload(SIZES["promoted"], seed=7)
    await upload(container, "shared.bin", data)
    assert (await fetch_bounded(first, "shared.bin"))[2] == data
    await settled(first, 1)
    damage(data_file_of(disk_dir, len(data)), how)
    asked = origin.count("shared.bin")

    status, cache, body = await fetch_bounded(second, "shared.bin")
    assert (status, cache, sha256(body)) == (200, "MISS", sha256(data))
    assert origin.count("shared.bin") == asked + 1
    assert (await cache_stats(second))["disk_corrupt"] == 1
    # The first worker still answers from its memory, which was never damaged.
    assert (await fetch_bounded(first, "shared.bin"))[1:] == ("HIT", data)


async def test_a_sibling_republishing_an_entry_is_not_taken_for_damage(
    app_client: AppClientFactory, container: ContainerClient, disk_dir: Path
) -> None:
    """A worker whose index holds an entry a sibling has since dropped and written again (a new
    file at the same place) serves the new file: a newer entry is not damage."""
    first, second = await app_client(shared_disk=True), await app_client(shared_disk=True)
    data = payload(SIZES["sendfile"], seed=8)
    await upload(container, "again.bin", data)
    assert (await fetch_bounded(first, "again.bin"))[2] == data
    await settled(first, 1)
    assert (await fetch_bounded(second, "again.bin"))[2] == data  # adopted: now in both indexes
    assert (await fetch_bounded(second, "again.bin"))[1:] == ("HIT", data)

    damage(data_file_of(disk_dir, len(data)), "truncate")
    assert (await fetch_bounded(first, "again.bin"))[1:] == ("MISS", data)  # dropped and filled again
    await settled(first, 1)
    status, cache, body = await fetch_bounded(second, "again.bin")
    assert (status, cache, sha256(body)) == (200, "HIT", sha256(data))
    assert (await cache_stats(second))["disk_corrupt"] == 0


def tls_kwargs(tmp_path: Path) -> dict[str, Any]:
    pair = loopback_tls(tmp_path)
    return {
        "server_kwargs": {"ssl": pair.server},
        "client_kwargs": {"connector": aiohttp.TCPConnector(ssl=pair.client)},
    }


@pytest.mark.parametrize("transport", ["plain", "tls"])
@pytest.mark.parametrize("span", ["full", "range"])
async def test_a_file_that_shrinks_during_the_send_aborts_the_connection(
    app_client: AppClientFactory,
    container: ContainerClient,
    disk_dir: Path,
    tmp_path: Path,
    transport: str,
    span: str,
) -> None:
    """The file passes its check, then shrinks while it is sent (kernel sendfile on plain TCP,
    asyncio's copy on TLS): the client gets an error, not a hang or a complete-looking body;
    the entry is dropped and the next request is a byte-exact MISS."""
    size = 32 * MIB  # far more than the socket buffers hold, so most of it is sent after the cut
    client = await app_client(**(tls_kwargs(tmp_path) if transport == "tls" else {}))
    data = payload(size, seed=9)
    await upload(container, "shrinks.bin", data)
    assert (await fetch_bounded(client, "shrinks.bin"))[2] == data
    await settled(client, 1)
    start = 1000 if span == "range" else 0
    headers = {"Range": f"bytes={start}-"} if span == "range" else {}

    received = b""
    async with asyncio.timeout(REQUEST_TIMEOUT_S):
        async with client.get("/images/shrinks.bin", headers=headers) as response:
            assert response.headers["X-Cache"] == "HIT"
            assert response.content_length == size - start
            os.truncate(data_file_of(disk_dir, size), MIB)  # after the check: headers are sent
            with pytest.raises(aiohttp.ClientError):
                async for chunk in response.content.iter_chunked(MIB):
                    received += chunk
    assert len(received) < size - start
    assert received == data[start : start + len(received)]  # what came is right, and it is cut
    assert (await cache_stats(client))["disk_corrupt"] == 1

    status, cache, body = await fetch_bounded(client, "shrinks.bin")
    assert (status, cache, sha256(body)) == (200, "MISS", sha256(data))


async def test_damaged_entries_are_dropped_at_start(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy, disk_dir: Path
) -> None:
    """While the server is stopped: a data file truncated, extended, rewritten with garbage of its
    own size, deleted, or made unreadable (a directory in its place). The restarted server
    indexes none of them, deletes them, and serves every blob byte-exact from Azure."""
    hows = ("truncate", "extend", "garbage", "delete", "unreadable")
    blobs = {how: payload(ITEM_LIMIT * 2 + i, seed=20 + i) for i, how in enumerate(hows)}
    first = await app_client()
    for how, data in blobs.items():
        await upload(container, f"{how}.bin", data)
        assert (await fetch_bounded(first, f"{how}.bin"))[2] == data
    await settled(first, len(blobs))
    await first.close()
    for how, data in blobs.items():
        file = data_file_of(disk_dir, len(data))
        if how == "unreadable":
            file.unlink()
            file.mkdir()
        else:
            damage(file, how)

    second = await app_client()
    assert (await cache_stats(second))["disk_size"] == 0
    assert data_files(disk_dir) == []
    for how, data in blobs.items():
        asked = origin.count(f"{how}.bin")
        status, cache, body = await fetch_bounded(second, f"{how}.bin")
        assert (status, cache, sha256(body)) == (200, "MISS", sha256(data))
        assert origin.count(f"{how}.bin") > asked


# --- real processes: uvloop (which has no loop.sendfile, so disk hits are copied) and two workers ---


def disk_env_small_items(root: Path) -> dict[str, str]:
    return {**disk_env(root), "IMGPROXY_CACHE_MAX_ITEM_BYTES": str(ITEM_LIMIT)}


async def process_settled(session: aiohttp.ClientSession, base: str, entries: int) -> None:
    """Until the server's disk tier holds `entries` and fills nothing (another process: polled)."""

    async def settled_there() -> bool:
        body = await cache_stats(session, base, WORKER_TOKEN)
        return bool(body["disk_size"] == entries and not body["disk_fills"])

    await poll(settled_there, 30, f"{entries} entries on disk")


async def exact_or_aborted(session: aiohttp.ClientSession, url: str, data: bytes) -> str:
    """GET `url`: "exact" for the right bytes, "aborted" for a connection cut; anything else fails."""
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S), session.get(url) as response:
            body = await response.read()
    except aiohttp.ClientError:
        return "aborted"
    assert (response.status, sha256(body)) == (200, sha256(data))
    return "exact"


async def test_under_uvloop_a_copied_send_that_comes_up_short_aborts(
    container: ContainerClient, origin: OriginProxy, tmp_path: Path
) -> None:
    """The real server on uvloop copies disk files through bounded reads: damage before a request
    is found by the check (a byte-exact MISS), a file that shrinks mid-send aborts the connection."""
    size = 32 * MIB
    data = payload(size, seed=40)
    await upload(container, "copied.bin", data)
    env = {
        **disk_env_small_items(tmp_path / "disk"),
        "IMGPROXY_SERVER_DRAIN_S": "0",
        "IMGPROXY_ADMIN_TOKEN": WORKER_TOKEN,
    }
    with start_server(connection_string(origin.endpoint), container.container_name, **env) as running:
        url = f"{running.base}/images/copied.bin"
        async with aiohttp.ClientSession() as session:
            assert await exact_or_aborted(session, url, data) == "exact"
            await process_settled(session, running.base, 1)
            received = b""
            async with asyncio.timeout(REQUEST_TIMEOUT_S), session.get(url) as response:
                assert response.headers["X-Cache"] == "HIT"
                os.truncate(data_file_of(tmp_path / "disk", size), MIB)
                with pytest.raises(aiohttp.ClientError):
                    async for chunk in response.content.iter_chunked(MIB):
                        received += chunk
            assert len(received) < size and received == data[: len(received)]
            assert (await cache_stats(session, running.base, WORKER_TOKEN))["disk_corrupt"] == 1

            async with asyncio.timeout(REQUEST_TIMEOUT_S), session.get(url) as response:
                assert (response.headers["X-Cache"], sha256(await response.read())) == ("MISS", sha256(data))
            await process_settled(session, running.base, 1)
            rewrite_in_place(data_file_of(tmp_path / "disk", size), payload(size, seed=41))
            async with asyncio.timeout(REQUEST_TIMEOUT_S), session.get(url) as response:
                assert (response.headers["X-Cache"], sha256(await response.read())) == ("MISS", sha256(data))
            assert (await cache_stats(session, running.base, WORKER_TOKEN))["disk_corrupt"] == 2


@pytest.mark.parametrize("how", DAMAGES)
async def test_two_workers_sharing_the_directory_never_serve_a_damaged_file(
    container: ContainerClient, origin: OriginProxy, tmp_path: Path, how: str
) -> None:
    """`server.workers = 2` on one directory: after a large (sent from the file) and a small
    (adopted into memory) entry are damaged, every answer on new connections is byte-exact or
    an aborted connection, then all are exact; each damage is counted; Azure is asked again."""
    large, small = payload(SIZES["sendfile"], seed=42), payload(SIZES["promoted"], seed=43)
    await upload(container, "large.bin", large)
    await upload(container, "small.bin", small)
    root = tmp_path / "disk"
    with two_workers(origin, container, **disk_env_small_items(root)) as running:
        urls = {name: f"{running.base}/images/{name}" for name in ("large.bin", "small.bin")}
        blobs = {"large.bin": large, "small.bin": small}
        # A new connection per request, so the kernel spreads them over both workers.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            for _ in range(20):  # both workers index the large entry (one downloads, one adopts)
                assert await exact_or_aborted(session, urls["large.bin"], large) == "exact"
            assert await exact_or_aborted(session, urls["small.bin"], small) == "exact"  # in one only
            # The stats of a shared directory are the largest worker index's: large and small.
            await process_settled(session, running.base, 2)
            asked = {name: origin.count(name) for name in blobs}
            for data in blobs.values():
                damage(data_file_of(root, len(data)), how)

            outcomes = [
                await exact_or_aborted(session, urls[name], blobs[name]) for _ in range(20) for name in blobs
            ]
            assert set(outcomes) <= {"exact", "aborted"}
            for _ in range(10):
                for name, data in blobs.items():
                    assert await exact_or_aborted(session, urls[name], data) == "exact"
            counted = (await cache_stats(session, running.base, WORKER_TOKEN))["disk_corrupt"]
        assert 2 <= counted <= 3  # the large entry by one or both workers, the small one by one
        assert all(origin.count(name) > asked[name] for name in blobs)
