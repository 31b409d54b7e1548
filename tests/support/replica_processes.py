"""Replicas as real processes for tests: `python -m imgproxy` on loopback ports sharing one Redis.

Each `ReplicaProcess` is the CLI with the repository's `config.toml` and environment overrides
(its own port, the same origin, Redis URL and key prefix as its siblings). Its stderr is read by
a thread that flags the "serving on" line for the event loop (an event, not a poll of the
output). `Replicas` starts several at once and stops every one it started (SIGTERM, then SIGKILL
after a bound), also when the test fails.

Other processes have no events to wait on, so tests `poll` (tests/helpers.py) one over HTTP until
a condition holds: a few milliseconds apart, and bounded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import aiohttp

from devtools.azurite import connection_string, free_port
from tests.helpers import admin_headers, cache_stats, poll
from tests.support.processes import CONFIG

TOKEN: Final = "replica-admin-token"
START_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 30.0
SERVING: Final = "serving on"


class ReplicaProcess:
    """One replica process (started by `start`, restartable on the same settings and port)."""

    def __init__(self, name: str, env: Mapping[str, str]) -> None:
        self.name = name
        self.port = int(env["IMGPROXY_SERVER_PORT"])
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = dict(env)
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []  # stderr of every run, for the failure message
        self._reader: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def start(self) -> None:
        """Start the process and return once it serves (so after its purge-log catch-up)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        # Popen returns once the child is forked; the wait for it to serve is the event below.
        proc = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "imgproxy", "--config", str(CONFIG)],
            env={**os.environ, **self.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.proc = proc

        def read() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                self.output.append(line)
                if SERVING in line:
                    loop.call_soon_threadsafe(ready.set)
            loop.call_soon_threadsafe(ready.set)  # EOF: it ended (checked below)

        self._reader = threading.Thread(target=read, daemon=True, name=f"{self.name}-stderr")
        self._reader.start()
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await ready.wait()
        except TimeoutError:
            raise AssertionError(f"{self.name} did not start:\n{self.tail()}") from None
        if proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {proc.returncode}:\n{self.tail()}")

    def signal(self, signum: signal.Signals) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signum)

    async def wait(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """The exit status, once the process has ended (SIGKILL after `timeout_s`)."""
        proc = self.proc
        if proc is None:
            return 0
        try:
            code = await asyncio.to_thread(proc.wait, timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = await asyncio.to_thread(proc.wait, 10)
        if self._reader is not None:
            await asyncio.to_thread(self._reader.join, 10)
        assert proc.stderr is not None
        proc.stderr.close()
        return code

    async def stop(self) -> int:
        """SIGTERM and wait (graceful: 0 expected)."""
        self.signal(signal.SIGTERM)
        return await self.wait()

    def tail(self, lines: int = 30) -> str:
        return "".join(self.output[-lines:])


class Replicas:
    """Replicas of one deployment (same origin, container, Redis and prefix); stops all it started."""

    def __init__(self, origin_endpoint: str, container: str, **env: str) -> None:
        self._common = {
            "IMGPROXY_ORIGIN_CONNECTION_STRING": connection_string(origin_endpoint),
            "IMGPROXY_ORIGIN_CONTAINER": container,
            "IMGPROXY_ORIGIN_RETRY_BACKOFF_S": "0.01",
            "IMGPROXY_SERVER_DRAIN_S": "0",
            "IMGPROXY_ADMIN_TOKEN": TOKEN,
            **env,
        }
        self.started: list[ReplicaProcess] = []

    def define(self, name: str, **env: str) -> ReplicaProcess:
        """A replica with these settings on a free port, not started yet."""
        replica = ReplicaProcess(name, {**self._common, "IMGPROXY_SERVER_PORT": str(free_port()), **env})
        self.started.append(replica)
        return replica

    async def start(self, count: int, **env: str) -> list[ReplicaProcess]:
        """`count` replicas with the same settings, started at once."""
        first = len(self.started)
        group = [self.define(f"replica-{first + i}", **env) for i in range(count)]
        await asyncio.gather(*(replica.start() for replica in group))
        return group

    async def close(self) -> None:
        """Stop every replica still running: SIGTERM, then SIGKILL past the bound."""
        running = [replica for replica in self.started if replica.proc is not None]
        for replica in running:
            replica.signal(signal.SIGTERM)
        await asyncio.gather(*(replica.wait() for replica in running))


# --- HTTP helpers ----------------------------------------------------------------------------


async def purge(session: aiohttp.ClientSession, base: str, path: str | None) -> tuple[int, dict[str, Any]]:
    """DELETE /admin/cache/`path` (None: everything): status and answer."""
    url = f"{base}/admin/cache" + ("" if path is None else f"/{path}")
    async with asyncio.timeout(10), session.delete(url, headers=admin_headers(TOKEN)) as response:
        answer: dict[str, Any] = await response.json()
        return response.status, answer


async def wait_following(session: aiohttp.ClientSession, replicas: list[ReplicaProcess]) -> None:
    """Until every replica's purge-log follower reads the stream (and it has announced itself)."""

    def following(replica: ReplicaProcess) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            body = await cache_stats(session, replica.base, TOKEN)
            return bool(body["purge_log"]["following"]) and bool(body["redis_up"])

        return check

    for replica in replicas:
        await poll(following(replica), 20, f"{replica.name} following the purge log")
