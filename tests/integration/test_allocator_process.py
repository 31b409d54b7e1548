"""The allocator's settings reach the serving processes as started by the CLI: the supervisor's
workers have them in their environment (read by the C library at start, seen in /proc), a single
process limits its arenas itself, and where jemalloc is preloaded it starts once more with
`MALLOC_CONF` (same pid)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from azure.storage.blob.aio import ContainerClient

from devtools.azurite import AzuriteServer
from devtools.processes import descendants
from imgproxy.core.allocator import JEMALLOC_CONF
from tests.helpers import payload
from tests.support.processes import Server, start_server

JEMALLOC = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")


def allocator_vars(pid: int) -> dict[str, str]:
    """MALLOC_* and LD_PRELOAD as the process started with them (the kernel's copy)."""
    found: dict[str, str] = {}
    for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        key, _, value = item.decode().partition("=")
        if key.startswith("MALLOC_") or key == "LD_PRELOAD":
            found[key] = value
    return found


@pytest.fixture(autouse=True)
def no_inherited_allocator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the test runner's own environment says must not decide these tests."""
    for name in ("MALLOC_ARENA_MAX", "MALLOC_CONF", "LD_PRELOAD"):
        monkeypatch.delenv(name, raising=False)


async def serves(running: Server, container: ContainerClient) -> None:
    data = payload(3000)
    await container.upload_blob("alloc.png", data, overwrite=True)
    url = f"{running.base}/images/alloc.png"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        assert await response.read() == data


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, {"MALLOC_ARENA_MAX": "2"}),
        ({"IMGPROXY_SERVER_MALLOC_ARENA_MAX": "3"}, {"MALLOC_ARENA_MAX": "3"}),
        ({"MALLOC_ARENA_MAX": "5"}, {"MALLOC_ARENA_MAX": "5"}),  # the operator's own wins
        ({"IMGPROXY_SERVER_MALLOC_ARENA_MAX": "0"}, {}),
    ],
    ids=["default", "configured", "operator-env", "off"],
)
async def test_supervised_workers_start_with_the_arena_limit(
    azurite: AzuriteServer, container: ContainerClient, env: dict[str, str], expected: dict[str, str]
) -> None:
    with start_server(
        azurite, container.container_name, IMGPROXY_SERVER_WORKERS="2", IMGPROXY_SERVER_DRAIN_S="0", **env
    ) as running:
        workers = descendants(running.proc.pid)
        assert len(workers) == 2
        assert [allocator_vars(pid) for pid in workers] == [expected, expected]
        await serves(running, container)


async def test_a_single_process_limits_its_own_arenas(
    azurite: AzuriteServer, container: ContainerClient
) -> None:
    with start_server(azurite, container.container_name, IMGPROXY_SERVER_DRAIN_S="0") as running:
        assert descendants(running.proc.pid) == []
        assert allocator_vars(running.proc.pid) == {}  # set in process: mallopt, not the environment
        assert any("malloc: at most 2 arenas" in line for line in running.log)
        await serves(running, container)


@pytest.mark.skipif(not JEMALLOC.exists(), reason="Debian's libjemalloc2 is not installed")
async def test_a_single_process_under_jemalloc_restarts_once_with_its_decay(
    azurite: AzuriteServer, container: ContainerClient
) -> None:
    with start_server(
        azurite, container.container_name, IMGPROXY_SERVER_DRAIN_S="0", LD_PRELOAD=str(JEMALLOC)
    ) as running:
        assert descendants(running.proc.pid) == []  # exec'd in place: the pid the caller knows
        assert allocator_vars(running.proc.pid) == {"LD_PRELOAD": str(JEMALLOC), "MALLOC_CONF": JEMALLOC_CONF}
        assert not any("arenas" in line for line in running.log)
        await serves(running, container)
