"""Transform capacity is the machine's, not the worker's: with `server.workers = 2`, transforms that
all land on one worker (as SO_REUSEPORT may place every busy connection) still run side by side on
every core, at a lower priority than the event loops."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from azure.storage.blob.aio import ContainerClient
from prometheus_client.parser import text_string_to_metric_families

from devtools.azurite import AzuriteServer
from devtools.processes import descendants
from imgproxy.transform.pool import TRANSFORM_NICE
from imgproxy.web.siblings import RELAYED_HEADER
from tests.helpers import upload
from tests.support.images import jpeg
from tests.support.processes import start_server

TRANSFORMS = {
    "IMGPROXY_SERVER_WORKERS": "2",
    "IMGPROXY_SERVER_DRAIN_S": "0",
    "IMGPROXY_TRANSFORM_ENABLED": "true",
    "IMGPROXY_TRANSFORM_ALLOW_UNSIGNED": "true",
    "IMGPROXY_TRANSFORM_TIMEOUT_S": "60",
    "IMGPROXY_CACHE_MAX_ITEM_BYTES": str(32 * 1024 * 1024),
    "IMGPROXY_CACHE_MAX_BYTES": str(256 * 1024 * 1024),
}


def worker_socket(supervisor: int, index: int) -> Path:
    """Worker `index`'s relay socket, read from its command line (`--siblings DIR --worker N`)."""
    for pid in descendants(supervisor):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"--siblings" in argv and argv[argv.index(b"--worker") + 1] == str(index).encode():
            return Path(argv[argv.index(b"--siblings") + 1].decode()) / f"{index}.sock"
    raise AssertionError("no such worker")


def running(metrics: str) -> float:
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "imgproxy_transform_running":
                return sample.value
    raise AssertionError("no imgproxy_transform_running")


async def test_two_transforms_on_one_worker_run_at_once(
    azurite: AzuriteServer, container: ContainerClient
) -> None:
    """Two cold transforms sent to the same worker of two both run at once (the pool's running
    count reaches 2 on that worker), not one after the other; libvips' threads run at nice 10."""
    await upload(container, "big.jpg", jpeg(4000, 3000), "image/jpeg")
    with start_server(azurite, container.container_name, **TRANSFORMS) as server:
        socket = worker_socket(server.proc.pid, 0)
        connector = aiohttp.UnixConnector(path=str(socket))
        async with aiohttp.ClientSession(connector=connector) as worker:

            async def transform(width: int) -> int:
                # A full-size PNG: long enough (about a second) to be seen running.
                url = f"http://worker/images/big.jpg?w={width}&fm=png"
                async with worker.get(url, timeout=aiohttp.ClientTimeout(total=120)) as response:
                    await response.read()
                    return response.status

            async def most_running() -> float:
                seen = 0.0
                async with asyncio.timeout(60):
                    while seen < 2:
                        async with worker.get(
                            "http://worker/metrics", headers={RELAYED_HEADER: "1"}
                        ) as answer:
                            seen = max(seen, running(await answer.text()))
                        # libvips' threads, started by the transform threads, run at their nice too.
                        nice = thread_nice(server.proc.pid, "libvips worker")
                        assert all(value == TRANSFORM_NICE for value in nice), nice
                        await asyncio.sleep(0.01)  # a poll of another process's figures: no event to wait on
                return seen

            jobs = asyncio.gather(transform(3999), transform(3998))
            assert await most_running() == 2
            assert list(await jobs) == [200, 200]


def thread_nice(supervisor: int, prefix: str) -> list[int]:
    """The nice values of the threads named `prefix...` in the supervisor's workers."""
    values = []
    for pid in descendants(supervisor):
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                if (task / "comm").read_text().startswith(prefix):
                    values.append(int((task / "stat").read_text().rsplit(")", 1)[1].split()[16]))
            except OSError:
                continue  # ended meanwhile
    return values
