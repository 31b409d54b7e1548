"""The disk tier: restart survival, crash safety, eviction, one origin download for many
clients of a large blob (tailing the growing file), purges and safe file names."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from azure.storage.blob.aio import ContainerClient

from imgproxy.cache.disk.tier import DiskTier
from imgproxy.config import DiskConfig
from imgproxy.web.keys import FETCHER
from tests.helpers import (
    AUTH,
    MIB,
    AppClientFactory,
    cache_stats,
    fetch_image,
    files_under,
    payload,
    settled,
    sha256,
    stream_digest,
    upload,
    wait_until,
)
from tests.integration.cache.disk.conftest import ITEM_LIMIT
from tests.support.origin_proxy import OriginProxy, reads_from


async def test_restart_serves_from_disk_without_origin_requests(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """Small and large blobs cached before a restart are served after it with no origin request."""
    small, large = payload(10_000, seed=1), payload(3 * MIB, seed=2)
    await upload(container, "small.png", small)
    await upload(container, "large.bin", large)
    first = await app_client()
    assert (await fetch_image(first, "small.png"))[2] == small
    assert (await fetch_image(first, "large.bin"))[2] == large
    await settled(first, 2)
    await first.close()
    asked = len(origin.requests)

    second = await app_client()  # a new app: index rebuilt from the directory
    for name, data in (("small.png", small), ("large.bin", large)):
        status, cache, body = await fetch_image(second, name)
        assert (status, cache, sha256(body)) == (200, "HIT", sha256(data))
    status, _, body = await fetch_image(second, "large.bin", Range="bytes=100-199")
    assert (status, body) == (206, large[100:200])
    assert len(origin.requests) == asked
    counters = await cache_stats(second)
    assert counters["disk_hits"] == 3
    # The small blob was promoted to memory: its next hit does not touch the disk.
    await fetch_image(second, "small.png")
    assert (await cache_stats(second))["disk_hits"] == 3


async def test_incomplete_entries_are_discarded_at_start(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy, disk_dir: Path
) -> None:
    """A truncated data file, a leftover temporary and an orphan are discarded, never served."""
    data = payload(200_000, seed=3)
    await upload(container, "cut.bin", data)
    first = await app_client()
    await fetch_image(first, "cut.bin")
    await settled(first, 1)
    await first.close()

    (data_file,) = [p for p in files_under(disk_dir) if not p.name.endswith(".meta")]
    with data_file.open("r+b") as f:
        f.truncate(1000)  # as if the process died mid-write with the metadata already there
    (data_file.parent / f"{data_file.name}.dead.tmp").write_bytes(b"partial")
    orphan = data_file.parent / ("0" * 64)
    orphan.write_bytes(b"no metadata")
    asked = origin.count("cut.bin")

    second = await app_client()
    assert files_under(disk_dir) == []
    status, cache, body = await fetch_image(second, "cut.bin")
    assert (status, cache, sha256(body)) == (200, "MISS", sha256(data))
    assert origin.count("cut.bin") > asked


async def test_eviction_keeps_the_directory_under_max_bytes(
    app_client: AppClientFactory, container: ContainerClient, disk_dir: Path
) -> None:
    """Writing more than disk.max_bytes evicts least-recently-used entries, files included."""
    client = await app_client(disk__max_bytes=250_000)
    for i in range(5):
        await upload(container, f"e{i}.bin", payload(100_000, seed=i))
        await fetch_image(client, f"e{i}.bin")
        await settled(client, min(i + 1, 2))
        body = await cache_stats(client)
        assert body["disk_bytes"] <= 250_000
    body = await cache_stats(client)
    assert (body["disk_size"], body["disk_bytes"]) == (2, 200_000)
    assert body["disk_evictions"] == 3
    await wait_until(lambda: len(files_under(disk_dir)) == 4)  # 2 entries x (data + meta)
    assert sum(p.stat().st_size for p in files_under(disk_dir) if not p.name.endswith(".meta")) == 200_000


async def test_ten_clients_of_a_large_blob_make_one_origin_download(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """10 concurrent clients of an uncached 100 MiB blob: one download, every client byte-exact."""
    size = 100 * MIB
    data = payload(size, seed=100)
    expected = hashlib.sha256(data).hexdigest()
    await upload(container, "big.bin", data)
    del data
    client = await app_client()
    answers = await asyncio.gather(*(stream_digest(client, "/images/big.bin") for _ in range(10)))
    assert answers == [(200, expected)] * 10
    assert origin.body_bytes("big.bin") == size  # once: the first GET's bytes start the fill
    await settled(client, 1)


async def test_range_of_an_uncached_large_blob_moves_about_the_range(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """A 1 KiB range near the end of a large blob not on disk goes to Azure alone: no whole fill."""
    data = payload(8 * MIB, seed=9)
    await upload(container, "ranged.bin", data)
    client = await app_client()
    start = len(data) - 5000
    ranged = {"Range": f"bytes={start}-{start + 1023}"}
    async with client.get("/images/ranged.bin", headers=ranged) as response:
        assert response.status == 206
        assert await response.read() == data[start : start + 1024]
    # The first GET (at most the memory item limit) learns the size, then one 1 KiB ranged read.
    assert origin.body_bytes("ranged.bin") <= ITEM_LIMIT + 1024
    assert (await cache_stats(client))["disk_size"] == 0


async def test_slow_client_does_not_slow_the_others_and_late_joiner_starts_at_zero(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """A stalled reader does not hold back fast ones; a client joining late gets every byte."""
    data = payload(30 * MIB, seed=5)
    await upload(container, "shared.bin", data)
    client = await app_client()
    fetcher = client.app[FETCHER]
    fast_done = asyncio.Event()

    async def read(stall: bool) -> bytes:
        async with client.get("/images/shared.bin") as response:
            head: bytes = await response.content.readexactly(MIB)
            if stall:
                await fast_done.wait()
            rest: bytes = await response.read()
            return head + rest

    slow = asyncio.create_task(read(stall=True))
    await wait_until(lambda: fetcher.disk_stats()["disk_fills"] == 1)
    fast = await asyncio.gather(*(read(stall=False) for _ in range(3)))
    fast_done.set()
    late = await read(stall=False)  # the fill may be done by now: then it is a disk hit
    assert {sha256(b) for b in [*fast, await slow, late]} == {sha256(data)}
    assert origin.body_bytes("shared.bin") == len(data)  # the first GET's bytes are not read twice


async def test_late_joiner_tails_a_fill_in_progress(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """A client arriving mid-download reads the same file from byte 0, with no second download."""
    data = payload(8 * MIB, seed=6)
    await upload(container, "tail.bin", data)
    client = await app_client()
    held = origin.hold(reads_from(4 * MIB))
    first = asyncio.create_task(fetch_image(client, "tail.bin"))
    await held.arrived.wait()  # the fill is half way
    second = asyncio.create_task(fetch_image(client, "tail.bin"))
    await wait_until(lambda: client.app[FETCHER].counters()["coalesced"] == 1)
    held.release.set()
    for task in (first, second):
        status, cache, body = await task
        assert (status, cache, sha256(body)) == (200, "MISS", sha256(data))
    assert origin.body_bytes("tail.bin") == len(data)  # the first GET's bytes are not read twice


async def test_failed_fill_aborts_followers_and_leaves_nothing(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy, disk_dir: Path
) -> None:
    """When the download fails mid-way every follower is cut short and no file remains."""
    data = payload(4 * MIB, seed=7)
    await upload(container, "fail.bin", data)
    client = await app_client(origin__retries=0)
    origin.truncate_after = (reads_from(2 * MIB), 10)

    async def read() -> int:
        async with client.get("/images/fail.bin") as response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
            status: int = response.status
            return status

    await asyncio.gather(*(read() for _ in range(3)))
    await wait_until(lambda: client.app[FETCHER].disk_stats()["disk_fills"] == 0)
    assert (await cache_stats(client))["disk_size"] == 0
    assert files_under(disk_dir) == []
    origin.heal()
    status, _, body = await fetch_image(client, "fail.bin")
    assert (status, sha256(body)) == (200, sha256(data))


async def test_purge_removes_disk_entries(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy, disk_dir: Path
) -> None:
    """A purge by path, or of everything, deletes the files; the next GET goes to Azure."""
    for name in ("p1.bin", "p2.bin"):
        await upload(container, name, payload(300_000, seed=len(name)))
    client = await app_client()
    await fetch_image(client, "p1.bin")
    await fetch_image(client, "p2.bin")
    await settled(client, 2)
    purge = await client.delete("/admin/cache/p1.bin", headers=AUTH)
    assert (await purge.json())["purged"] is True
    assert len(files_under(disk_dir)) == 2
    before = origin.count("p1.bin")
    assert (await fetch_image(client, "p1.bin"))[1] == "MISS"
    assert origin.count("p1.bin") > before
    await settled(client, 2)
    await client.delete("/admin/cache", headers=AUTH)
    assert files_under(disk_dir) == []


async def test_disk_entry_revalidates_and_is_replaced_when_changed(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """An expired disk entry is revalidated: unchanged keeps the file, changed serves new bytes."""
    old, new = payload(300_000, seed=8), payload(310_000, seed=9)
    await upload(container, "rv.bin", old)
    client = await app_client(cache__ttl_s=0, cache__stale_while_revalidate_s=0)
    await fetch_image(client, "rv.bin")
    await settled(client, 1)
    status, cache, body = await fetch_image(client, "rv.bin")
    assert (status, cache, body) == (200, "HIT", old)
    assert [r.status for r in origin.requests if r.blob == "rv.bin" and r.conditional] == [304]
    await upload(container, "rv.bin", new)
    status, _, body = await fetch_image(client, "rv.bin")
    assert (status, sha256(body)) == (200, sha256(new))


NAMES = ["....png", "..hidden", "a../b..", "deep/er/path/x.png", "日本/画像.png", "sp ace.png", "%25.png"]


async def test_file_names_stay_inside_the_cache_directory(
    app_client: AppClientFactory, container: ContainerClient, disk_dir: Path
) -> None:
    """Dotted, nested and non-ASCII blob names all land as hashed files inside disk.path."""
    client = await app_client()
    from urllib.parse import quote

    for i, name in enumerate(NAMES):
        data = payload(1000 + i, seed=i)
        await upload(container, name, data)
        response = await client.get(f"/images/{quote(name)}")
        assert response.status == 200, name
        assert await response.read() == data
    await settled(client, len(NAMES))
    root = await asyncio.to_thread(disk_dir.resolve)
    files = files_under(root)
    assert len(files) == 2 * len(NAMES)
    for file in files:
        assert file.resolve().is_relative_to(root)
        stem = file.name.removesuffix(".meta")
        assert len(stem) == 64 and all(c in "0123456789abcdef" for c in stem)
        assert file.parent.parent.parent == root
    assert not any(os.sep + ".." in str(f) for f in files)


async def test_processes_sharing_the_disk_make_one_download_of_a_small_blob(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """Two workers on one directory, a cold burst on both: one origin GET; the other adopts the entry."""
    data = payload(ITEM_LIMIT // 2, seed=31)
    await upload(container, "both.png", data)
    first, second = await app_client(shared_disk=True), await app_client(shared_disk=True)
    held = origin.hold(lambda r: r.path.endswith("/both.png"))  # keep the download in flight
    burst = [asyncio.create_task(fetch_image(c, "both.png")) for c in (first, second) for _ in range(10)]
    await held.arrived.wait()
    # Every request waits: in one worker on its download, in the other on the lock file.
    await wait_until(lambda: all(c.app[FETCHER].waiting("both.png") == 10 for c in (first, second)))
    held.release.set()
    answers = await asyncio.gather(*burst)
    assert {(status, sha256(body)) for status, _, body in answers} == {(200, sha256(data))}
    assert origin.count("both.png") == 1
    # Each worker now serves it from its own memory, without the origin.
    for client in (first, second):
        assert (await fetch_image(client, "both.png"))[1] == "HIT"
    assert origin.count("both.png") == 1


async def test_processes_sharing_the_disk_download_a_large_blob_once(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """A large blob asked of two workers at once is filled once; the other worker reads that file."""
    data = payload(3 * MIB, seed=32)
    await upload(container, "wide.bin", data)
    first, second = await app_client(shared_disk=True), await app_client(shared_disk=True)
    answers = await asyncio.gather(*(fetch_image(c, "wide.bin") for c in (first, second) for _ in range(3)))
    assert {(status, sha256(body)) for status, _, body in answers} == {(200, sha256(data))}
    # The blob's bytes once, plus at most the other worker's first GET (it learns the size).
    assert len(data) <= origin.body_bytes("wide.bin") <= len(data) + ITEM_LIMIT
    fills = [(await cache_stats(c))["origin_fetches"] for c in (first, second)]
    assert sum(fills) <= 3  # two first GETs and one fill


async def test_a_worker_streams_a_siblings_fill_while_it_is_written(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """A large blob a sibling is filling: the other worker's client gets the bytes already on disk
    before that download ends (it follows the sibling's file), and Azure sends the blob once."""
    data = payload(4 * MIB, seed=34)
    await upload(container, "followed.bin", data)
    first, second = await app_client(shared_disk=True), await app_client(shared_disk=True)
    held = origin.hold(reads_from(2 * MIB, "followed.bin"))  # the sibling's fill stops half-way
    filling = asyncio.create_task(fetch_image(first, "followed.bin"))
    await held.arrived.wait()
    async with second.get("/images/followed.bin") as response:
        assert response.status == 200
        early = await asyncio.wait_for(response.content.readexactly(MIB), 10)
        held.release.set()
        rest = await response.content.read()
    status, _, body = await filling
    assert (status, sha256(body)) == (200, sha256(data))
    assert sha256(early + rest) == sha256(data)
    assert len(data) <= origin.body_bytes("followed.bin") <= len(data) + ITEM_LIMIT


async def test_a_siblings_failed_fill_aborts_its_followers_and_leaves_no_entry(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy, disk_dir: Path
) -> None:
    """The sibling's download breaks half-way: the follower's client gets a cut body, not a
    complete-looking one, and nothing is published; the next request downloads it whole."""
    data = payload(4 * MIB, seed=35)
    await upload(container, "broken.bin", data)
    first, second = await app_client(shared_disk=True), await app_client(shared_disk=True)
    held = origin.hold(reads_from(2 * MIB, "broken.bin"))
    filling = asyncio.create_task(fetch_image(first, "broken.bin"))
    await held.arrived.wait()
    async with second.get("/images/broken.bin") as response:
        assert response.status == 200
        assert await asyncio.wait_for(response.content.readexactly(MIB), 10) == data[:MIB]
        origin.truncate_after = (reads_from(2 * MIB, "broken.bin"), 1000)  # the held read, and retries
        held.release.set()
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.content.read()
    with pytest.raises(aiohttp.ClientPayloadError):
        await filling
    origin.truncate_after = None
    status, _, body = await fetch_image(second, "broken.bin")
    assert (status, sha256(body)) == (200, sha256(data))


async def test_a_worker_adopts_an_entry_a_sibling_wrote_after_it_started(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """An entry published by one worker is found by the other on its next miss: no origin request."""
    data = payload(ITEM_LIMIT * 2, seed=33)
    await upload(container, "later.bin", data)
    first, second = await app_client(shared_disk=True), await app_client(shared_disk=True)
    assert (await fetch_image(first, "later.bin"))[0] == 200
    await settled(first, 1)
    status, _, body = await fetch_image(second, "later.bin")
    assert (status, sha256(body)) == (200, sha256(data))
    assert origin.body_bytes("later.bin") == len(data)


async def test_a_lock_cancelled_while_its_file_opens_leaves_no_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while the thread opening the lock file is still in `open`: the file is closed later."""
    disk = DiskTier(DiskConfig(enabled=True, path=str(tmp_path)), "c", shared=True)
    entered, gate = threading.Event(), threading.Event()
    opened: list[int] = []
    real_open = os.open

    def slow_open(path: Any, flags: int, *args: Any) -> int:
        entered.set()
        gate.wait(10)
        opened.append(real_open(path, flags, *args))
        return opened[-1]

    monkeypatch.setattr(os, "open", slow_open)
    taking = asyncio.create_task(disk.lock("a.png"))
    assert await asyncio.to_thread(entered.wait, 10)
    taking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await taking
    gate.set()

    def closed() -> bool:
        if not opened:
            return False
        try:
            os.fstat(opened[0])
        except OSError:
            return True
        return False

    await wait_until(closed)
    # And the entry can be locked again at once (no stale flock held by a leaked descriptor).
    monkeypatch.setattr(os, "open", real_open)
    again = await disk.lock("a.png")
    assert not again.waited
    again.release()


WAITER_SCRIPT = """
import asyncio, sys
from imgproxy.config import DiskConfig
from imgproxy.cache.disk.tier import DiskTier

async def main() -> None:
    disk = DiskTier(DiskConfig(enabled=True, path=sys.argv[1], lock_timeout_s=0.2), "c", shared=True)
    lock = await disk.lock("a.png")
    print("held" if lock.held else "gave up", flush=True)
    await disk.close()

asyncio.run(main())
"""


async def test_a_worker_waiting_for_a_siblings_lock_still_exits(tmp_path: Path) -> None:
    """A process whose thread still waits in flock for a lock a sibling holds (a long fill) exits at
    once when it is done: the waiting thread does not hold up the interpreter's exit."""
    sibling = DiskTier(DiskConfig(enabled=True, path=str(tmp_path)), "c", shared=True)
    held = await sibling.lock("a.png")
    try:
        waiter = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WAITER_SCRIPT, str(tmp_path), stdout=asyncio.subprocess.PIPE
        )
        try:
            out, _ = await asyncio.wait_for(waiter.communicate(), 15)
        finally:
            if waiter.returncode is None:
                waiter.kill()
                await waiter.wait()
        assert (waiter.returncode, out) == (0, b"gave up\n")
    finally:
        held.release()
        await sibling.close()
