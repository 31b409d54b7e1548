"""The real process: `python -m imgproxy --config PATH`, its start-up errors and its memory."""

from __future__ import annotations

import asyncio
import hashlib
import io
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from azure.storage.blob.aio import ContainerClient
from prometheus_client.parser import text_string_to_metric_families

from devtools.azurite import AzuriteServer, connection_string
from imgproxy.web.siblings import RELAYED_HEADER
from tests.helpers import (
    MIB,
    admin_headers,
    cache_stats,
    data_files,
    fetch_ok,
    payload,
    peak_rss_bytes,
    stream_digest,
)
from tests.support.images import decode, jpeg
from tests.support.origin_proxy import OriginProxy
from tests.support.processes import CONFIG, WORKER_TOKEN, disk_env, server_env, start_server, two_workers
from tests.support.upstream_app import UpstreamApp


@pytest.fixture
def server(azurite: AzuriteServer, container: ContainerClient) -> Iterator[tuple[str, int]]:
    """The proxy as a separate process on a free port; yields (base URL, pid)."""
    with start_server(azurite, container.container_name, IMGPROXY_SERVER_DRAIN_S="0") as running:
        yield running.base, running.proc.pid


def test_bad_config_value_fails_with_the_key_named(azurite: AzuriteServer) -> None:
    """A bad setting stops start-up with a message naming the key, not a traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "imgproxy", "--config", str(CONFIG)],
        env=server_env(azurite, "x", 0, IMGPROXY_CACHE_MAX_ITEMS="many"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "cache.max_items" in result.stderr
    assert "Traceback" not in result.stderr


def test_console_script_is_installed() -> None:
    """`imgproxy --help` works from the virtualenv's bin directory."""
    script = Path(sys.executable).parent / "imgproxy"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "--config" in result.stdout


async def test_process_serves_an_image(server: tuple[str, int], container: ContainerClient) -> None:
    """The CLI-started server answers images, health and readiness."""
    data = payload(5000)
    await container.upload_blob("p.png", data)
    base, _ = server
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/images/p.png") as response:
            assert response.status == 200
            assert await response.read() == data
        for path in ("/healthz", "/readyz"):
            async with session.get(base + path) as response:
                assert response.status == 200


@pytest.mark.slow
async def test_twenty_streams_of_200_mib_keep_peak_rss_under_300_mib(
    server: tuple[str, int], container: ContainerClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """20 concurrent clients of a 200 MiB blob: byte-exact, and the server's peak RSS < 300 MiB."""
    size = 200 * MIB
    data = payload(size, seed=200)
    expected = hashlib.sha256(data).hexdigest()
    await container.upload_blob("huge.bin", io.BytesIO(data), length=size, max_concurrency=4)
    del data
    base, pid = server

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        results = await asyncio.gather(
            *(stream_digest(session, f"{base}/images/huge.bin") for _ in range(20))
        )

    peak = peak_rss_bytes(pid)
    with capsys.disabled():
        print(f"\n[memory] 20 x 200 MiB streams: server peak RSS {peak / MIB:.1f} MiB")
    assert results == [(200, expected)] * 20
    assert peak < 300 * MIB


async def test_sigterm_drains_then_lets_the_stream_finish(
    azurite: AzuriteServer, container: ContainerClient
) -> None:
    """On SIGTERM /readyz turns 503 first, the in-flight stream completes byte-exact, exit status 0."""
    data = payload(30 * MIB, seed=30)
    await container.upload_blob("leaving.bin", io.BytesIO(data), length=len(data), max_concurrency=4)
    with start_server(azurite, container.container_name, IMGPROXY_SERVER_DRAIN_S="2") as running:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{running.base}/images/leaving.bin") as response:
                assert response.status == 200
                head = await response.content.readexactly(MIB)
                running.proc.send_signal(signal.SIGTERM)
                # The signal is handled in another process: poll readiness, bounded.
                async with asyncio.timeout(10):
                    while True:
                        async with session.get(f"{running.base}/readyz") as ready:
                            if ready.status == 503:
                                break
                rest = await response.read()
            assert hashlib.sha256(head + rest).hexdigest() == hashlib.sha256(data).hexdigest()
        assert await asyncio.to_thread(running.proc.wait, 60) == 0


@pytest.mark.slow
async def test_slow_readers_keep_memory_bounded(
    azurite: AzuriteServer, container: ContainerClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """10 stalled and 10 fast readers of a 100 MiB blob: all byte-exact, peak RSS < 300 MiB."""
    size = 100 * MIB
    data = payload(size, seed=100)
    expected = hashlib.sha256(data).hexdigest()
    await container.upload_blob("wide.bin", io.BytesIO(data), length=size, max_concurrency=4)
    del data
    stalled = asyncio.Event()

    async def read(session: aiohttp.ClientSession, base: str, slow: bool) -> str:
        digest = hashlib.sha256()
        async with session.get(f"{base}/images/wide.bin") as response:
            digest.update(await response.content.readexactly(MIB))
            if slow:
                await stalled.wait()  # stop reading until the fast readers are done
            async for chunk in response.content.iter_chunked(MIB):
                digest.update(chunk)
        return digest.hexdigest()

    with start_server(azurite, container.container_name, IMGPROXY_SERVER_DRAIN_S="0") as running:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
            slow = [asyncio.create_task(read(session, running.base, True)) for _ in range(10)]
            fast = await asyncio.gather(*(read(session, running.base, False) for _ in range(10)))
            stalled.set()
            slow_digests = await asyncio.gather(*slow)
        peak = peak_rss_bytes(running.proc.pid)
    with capsys.disabled():
        print(f"\n[memory] 10 stalled + 10 fast readers of 100 MiB: server peak RSS {peak / MIB:.1f} MiB")
    assert fast == [expected] * 10
    assert slow_digests == [expected] * 10
    assert peak < 300 * MIB


@pytest.mark.slow
async def test_disk_fill_for_ten_clients_keeps_memory_bounded(
    container: ContainerClient,
    origin: OriginProxy,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With the disk tier, 10 clients of an uncached 100 MiB blob: one download, byte-exact, RSS bounded."""
    size = 100 * MIB
    data = payload(size, seed=101)
    expected = hashlib.sha256(data).hexdigest()
    await container.upload_blob("filled.bin", io.BytesIO(data), length=size, max_concurrency=4)
    del data
    disk = disk_env(tmp_path / "disk")
    with start_server(
        connection_string(origin.endpoint), container.container_name, IMGPROXY_SERVER_DRAIN_S="0", **disk
    ) as running:
        url = f"{running.base}/images/filled.bin"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
            answers = await asyncio.gather(*(stream_digest(session, url) for _ in range(10)))
        peak = peak_rss_bytes(running.proc.pid)
    moved = origin.body_bytes("filled.bin")
    with capsys.disabled():
        print(
            f"\n[memory] disk fill, 10 clients of 100 MiB: server peak RSS {peak / MIB:.1f} MiB, "
            f"origin body bytes {moved} ({moved / size:.3f} x the blob), "
            f"{origin.count('filled.bin')} requests"
        )
    assert answers == [(200, expected)] * 10
    assert peak < 300 * MIB
    # One download, and the bytes the first GET moved are kept for the fill, not read twice.
    assert moved == size


@pytest.mark.parametrize("disk", [False, True], ids=["memory-only", "shared-disk"])
async def test_workers_share_the_port_and_coalesce(
    disk: bool, container: ContainerClient, origin: OriginProxy, tmp_path: Path
) -> None:
    """With server.workers = 2 both serve one port. A cold burst costs one GET per worker at most,
    and exactly one when the workers share the disk tier (they coalesce through its lock files)."""
    data = payload(2 * MIB, seed=22)
    await container.upload_blob("burst.bin", io.BytesIO(data), length=len(data))
    with two_workers(origin, container, **(disk_env(tmp_path / "disk") if disk else {})) as running:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            url = f"{running.base}/images/burst.bin"
            bodies = await asyncio.gather(*(fetch_ok(session, url) for _ in range(40)))
        running.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(running.proc.wait, 60) == 0
    assert {hashlib.sha256(b).hexdigest() for b in bodies} == {hashlib.sha256(data).hexdigest()}
    assert origin.count("burst.bin") == 1 if disk else 1 <= origin.count("burst.bin") <= 2


async def test_a_purge_on_one_worker_reaches_every_worker(
    container: ContainerClient, origin: OriginProxy
) -> None:
    """Two workers both cache a blob; it is overwritten; one purge, which the kernel hands to one
    worker, is relayed to the other: every later request gets the new bytes."""
    old, new = payload(30_000, seed=23), payload(30_000, seed=24)
    await container.upload_blob("purged.png", io.BytesIO(old), length=len(old))
    auth = admin_headers(WORKER_TOKEN)
    with two_workers(origin, container) as running:
        # A new connection per request, so the kernel spreads them over both workers.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            url = f"{running.base}/images/purged.png"

            for _ in range(200):  # until both workers hold it (one origin GET each)
                assert await fetch_ok(session, url) == old
                if origin.count("purged.png") == 2:
                    break
            assert origin.count("purged.png") == 2
            await container.upload_blob("purged.png", io.BytesIO(new), length=len(new), overwrite=True)
            async with session.delete(f"{running.base}/admin/cache/purged.png", headers=auth) as response:
                status, answer = response.status, await response.json()
            after = [await fetch_ok(session, url) for _ in range(30)]
        running.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(running.proc.wait, 60) == 0
    assert [hashlib.sha256(body).hexdigest() for body in after] == [hashlib.sha256(new).hexdigest()] * 30
    assert (status, answer) == (
        200,
        {"path": "purged.png", "purged": True, "workers": 2, "workers_unreached": []},
    )
    assert origin.count("purged.png") == 4  # each worker downloaded the new version once


@pytest.mark.parametrize("disk", [False, True], ids=["memory-only", "shared-disk"])
async def test_metrics_and_stats_cover_every_worker(
    disk: bool, container: ContainerClient, origin: OriginProxy, tmp_path: Path
) -> None:
    """With two workers one scrape shows both (samples labelled `worker`, each family once) and
    /admin/cache sums them: the counts add up to the requests made, whichever worker answered; the
    shared disk directory's one file is counted once."""
    data = payload(10_000, seed=25)
    await container.upload_blob("counted.png", io.BytesIO(data), length=len(data))
    env = disk_env(tmp_path / "disk") if disk else {}
    requests = 60  # on new connections: both workers get some (all on one: odds 2 in 2**60)
    with two_workers(origin, container, **env) as running:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            for _ in range(requests):  # one at a time: each worker's first is its only miss
                async with session.get(f"{running.base}/images/counted.png") as response:
                    assert (response.status, await response.read()) == (200, data)
            async with session.get(f"{running.base}/metrics") as response:
                exposition = await response.text()
            stats = await cache_stats(session, running.base, WORKER_TOKEN)
        running.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(running.proc.wait, 60) == 0

    types = [line for line in exposition.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types)), "a metric family twice"
    wanted = {"imgproxy_cache_hits_total", "imgproxy_cache_misses_total", "imgproxy_workers_unreached"}
    samples = {
        (s.name, s.labels.get("worker")): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
        if s.name in wanted
    }
    assert samples[("imgproxy_workers_unreached", None)] == 0
    assert {w for n, w in samples if n == "imgproxy_cache_misses_total"} == {"0", "1"}
    assert {v for (n, _), v in samples.items() if n == "imgproxy_cache_misses_total"} == {1}
    hits = sum(v for (n, _), v in samples.items() if n == "imgproxy_cache_hits_total")
    assert hits == requests - 2
    assert (stats["hits"], stats["misses"], stats["workers"], stats["workers_unreached"]) == (
        requests - 2,
        2,
        2,
        [],
    )
    assert sorted(stats["per_worker"]) == ["0", "1"]
    assert sum(w["hits"] for w in stats["per_worker"].values()) == stats["hits"]
    # Memory-only, each worker downloads once; with the shared disk, one download and one file.
    assert origin.count("counted.png") == (1 if disk else 2)
    if disk:
        assert (stats["disk_size"], stats["disk_bytes"]) == (1, len(data))


async def test_with_a_metrics_token_two_workers_answer_one_authorised_scrape_together(
    container: ContainerClient, origin: OriginProxy
) -> None:
    """server.metrics_token with two workers: a scrape without the token (or marked as relayed)
    is a 401 whichever worker takes it; with it, the worker relays the scrape with the same token
    and the answer holds both workers' samples, none unreached."""
    token = "process-metrics-token"
    with two_workers(origin, container, IMGPROXY_SERVER_METRICS_TOKEN=token) as running:
        # A new connection per request, so the kernel spreads them over both workers.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            url = f"{running.base}/metrics"
            refused = []
            for headers in ({}, {"Authorization": "Bearer wrong"}, {RELAYED_HEADER: "1"}):
                for _ in range(10):
                    async with session.get(url, headers=headers) as response:
                        refused.append((response.status, "WWW-Authenticate" in response.headers))
            async with session.get(url, headers=admin_headers(token)) as response:
                status, exposition = response.status, await response.text()
        running.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(running.proc.wait, 60) == 0
    assert refused == [(401, True)] * 30
    assert status == 200
    samples = {
        (s.name, s.labels.get("worker")): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
        if s.name in ("imgproxy_workers_unreached", "imgproxy_cache_misses_total")
    }
    assert samples[("imgproxy_workers_unreached", None)] == 0
    assert {w for n, w in samples if n == "imgproxy_cache_misses_total"} == {"0", "1"}


@pytest.mark.slow
async def test_a_100_mib_upload_and_download_through_the_app_keep_rss_bounded(
    azurite: AzuriteServer,
    container: ContainerClient,
    upstream_app: UpstreamApp,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In front of the app: a 100 MiB upload and a 100 MiB download pass byte-exact while the
    proxy's peak RSS grows by well under the transfer's size (neither sits in its memory)."""
    size = 100 * MIB
    data = payload(size, seed=7)  # what the app's /big/{n} sends
    expected = hashlib.sha256(data).hexdigest()

    async def body() -> AsyncIterator[bytes]:
        view = memoryview(data)
        for start in range(0, size, MIB):
            yield bytes(view[start : start + MIB])

    with start_server(
        azurite, container.container_name, IMGPROXY_SERVER_DRAIN_S="0", IMGPROXY_UPSTREAM_URL=upstream_app.url
    ) as running:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
            async with session.get(f"{running.base}/echo/warm") as response:
                assert response.status == 200
            before = peak_rss_bytes(running.proc.pid)
            async with session.put(f"{running.base}/echo/upload", data=body()) as response:
                echoed = await response.json()
            digest = hashlib.sha256()
            async with session.get(f"{running.base}/big/{size}") as response:
                assert response.headers["Content-Length"] == str(size)
                async for chunk in response.content.iter_chunked(MIB):
                    digest.update(chunk)
        peak = peak_rss_bytes(running.proc.pid)
    with capsys.disabled():
        print(
            f"\n[memory] 100 MiB up + 100 MiB down via the app: "
            f"peak RSS {before / MIB:.1f} -> {peak / MIB:.1f} MiB"
        )
    assert (echoed["body_bytes"], echoed["body_sha256"]) == (size, expected)
    assert digest.hexdigest() == expected
    assert peak - before < 32 * MIB


async def test_a_purge_with_two_workers_removes_variants_in_memory_and_on_disk(
    container: ContainerClient, origin: OriginProxy, tmp_path: Path
) -> None:
    """Both workers hold a variant (in memory; one file in the shared disk's `.v/` directory); one
    purge of the path removes it from both and from disk; the next request makes it again. The
    transforms log nothing of libvips' own."""
    await container.upload_blob("photo.jpg", io.BytesIO(jpeg(400, 300)), overwrite=True)
    disk = tmp_path / "disk"
    env = {
        **disk_env(disk),
        "IMGPROXY_TRANSFORM_ENABLED": "true",
        "IMGPROXY_TRANSFORM_ALLOW_UNSIGNED": "true",
    }
    auth = admin_headers(WORKER_TOKEN)
    with two_workers(origin, container, **env) as running:
        url = f"{running.base}/images/photo.jpg?w=100"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:

            async def stats() -> dict[str, dict[str, int]]:
                per_worker: dict[str, dict[str, int]] = (
                    await cache_stats(session, running.base, WORKER_TOKEN)
                )["per_worker"]
                return per_worker

            for _ in range(200):  # new connections until both workers hold the variant (bounded)
                assert decode(await fetch_ok(session, url)).size == (100, 75)
                if all(w["cache_variants"] == 1 for w in (await stats()).values()):
                    break
            assert all(w["cache_variants"] == 1 for w in (await stats()).values())
            assert len([f for f in data_files(disk) if f.parent.name.endswith(".v")]) == 1

            async with session.delete(f"{running.base}/admin/cache/photo.jpg", headers=auth) as response:
                answer = await response.json()
                assert (response.status, answer["purged"], answer["workers_unreached"]) == (200, True, [])
            assert all(w["cache_variants"] == 0 and w["disk_variants"] == 0 for w in (await stats()).values())
            assert [f for f in data_files(disk) if f.parent.name.endswith(".v")] == []
            async with session.get(url) as response:
                assert (response.status, response.headers["X-Cache"]) == (200, "MISS")
        running.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(running.proc.wait, 60) == 0
    # libvips reports each operation's plan at INFO through pyvips: eight lines per transform.
    assert [line for line in running.log if " pyvips: " in line] == []
