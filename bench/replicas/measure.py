"""The replicas part of `make bench` (`BENCH_REPLICAS=1` or `only`): three imgproxy replicas on
loopback behind nginx, in three setups, each from cold, each sent the same request list.

- (a) round-robin, no Redis: every replica downloads and keeps its own copy of what it is asked;
- (b) round-robin with Redis (`redis.url`: the shared tier, one download across replicas, the
  purge log), a fresh `redis-server` configured as `deploy/README.md` says;
- (c) consistent hashing by URL (`hash $request_uri consistent`), no Redis.

For each: origin GETs (the counting proxy in front of Azurite), hit ratio (X-Cache as wrk saw
it), req/s and latency of exactly `BENCH_REPLICA_REQUESTS` requests of a Zipf mix over the 1,000
images (`wrk.run_wrk_counted`), each replica's share. Then cold bursts (100 concurrent GETs of a
fresh 200 KiB blob, spread over the replicas directly) in (a) and (b), and in (b) the purge
propagation: one purge at a time on one replica, timed until each other replica's `/admin/cache`
shows the entry gone. nginx's configuration is rendered from `deploy/nginx-replicas.conf`
(`bench.lb`).
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import BlobServiceClient

from devtools.azurite import connection_string
from devtools.redis_server import run_redis

from .. import client
from ..context import Run, log
from ..dataset import CONTAINER, ZIPF_EXPONENT, zipf_mix
from ..lb import HEALTH_PATH, Balance, run_lb
from ..targets import Target, run_imgproxy
from ..wrk import counted_script, run_wrk_counted
from .figures import (
    BurstFigure,
    Propagation,
    ReplicaCounters,
    ReplicaReport,
    SetupFigures,
    origin_gets,
)

REPLICAS: Final = 3
TOKEN: Final = "bench-admin-token"
AUTH: Final = {"Authorization": f"Bearer {TOKEN}"}
BURSTS: Final = 3
BURST_CLIENTS: Final = 100
BURST_BYTES: Final = 200 * 1024
PURGE_BOUND_S: Final = 1.0  # the report counts the deliveries within it
PURGE_WAIT_S: Final = 5.0  # a delivery not seen within this is counted as missed
# What deploy/README.md asks of Redis for the shared tier: a memory bound with LRU eviction, and
# no persistence (devtools.redis_server already starts it with --save '' --appendonly no).
REDIS_ARGS: Final = ("--maxmemory", "1gb", "--maxmemory-policy", "allkeys-lru")


@dataclass(frozen=True, slots=True)
class Setup:
    key: str
    label: str
    balance: Balance
    redis: bool
    bursts: bool  # cold bursts are measured (the LB plays no part in them: (c) would repeat (a))


SETUPS: Final = (
    Setup("a", "round-robin, no Redis", Balance.ROUND_ROBIN, redis=False, bursts=True),
    Setup("b", "round-robin, Redis", Balance.ROUND_ROBIN, redis=True, bursts=True),
    Setup("c", "consistent hash by URL, no Redis", Balance.CONSISTENT_HASH, redis=False, bursts=False),
)


@dataclass(frozen=True, slots=True)
class ReplicaSettings:
    requests: int  # BENCH_REPLICA_REQUESTS
    connections: int  # BENCH_CONNECTIONS
    purges: int  # BENCH_REPLICA_PURGES


def burst_blob(setup: str, index: int) -> str:
    return f"burst/replicas-{setup}-{index}.bin"


async def upload_bursts(connection_string: str) -> None:
    """One fresh 200 KiB blob per burst of every setup (deterministic bytes)."""
    settings = ContentSettings(content_type="application/octet-stream")
    async with BlobServiceClient.from_connection_string(connection_string) as service:
        container = service.get_container_client(CONTAINER)
        for setup in SETUPS:
            for index in range(BURSTS):
                data = bytes((i * 31 + index + ord(setup.key)) % 251 for i in range(BURST_BYTES))
                await container.upload_blob(
                    burst_blob(setup.key, index),
                    io.BytesIO(data),
                    length=len(data),
                    overwrite=True,
                    content_settings=settings,
                )


async def admin_stats(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with session.get(f"{base}/admin/cache", headers=AUTH) as response:
        response.raise_for_status()
        body: dict[str, Any] = await response.json()
        return body


async def wait_following(bases: list[str], bound_s: float = 30.0) -> None:
    """Until every replica's purge-log follower reads the stream (another process: polled, bounded)."""
    async with aiohttp.ClientSession() as session, asyncio.timeout(bound_s):
        for base in bases:
            # Another process: no event to wait on, so ask (bounded above).
            while not (await admin_stats(session, base))["purge_log"]["following"]:  # noqa: ASYNC110
                await asyncio.sleep(0.01)


async def counters(bases: list[str]) -> list[ReplicaCounters]:
    async with aiohttp.ClientSession() as session:
        return [ReplicaCounters.of(await admin_stats(session, base)) for base in bases]


async def propagation(bases: list[str], paths: list[str]) -> Propagation:
    """Purge each of `paths` on replica i mod N and time until every other replica dropped it."""
    result = Propagation()
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for index, path in enumerate(paths):
            for base in bases:  # every replica holds it now (a HIT, or a MISS that stored it)
                async with session.get(f"{base}/images/{path}") as response:
                    await response.read()
            source = bases[index % len(bases)]
            others = [base for base in bases if base != source]
            held = {base: (await admin_stats(session, base))["cache_size"] for base in others}
            started = time.perf_counter()
            async with session.delete(f"{source}/admin/cache/{path}", headers=AUTH) as response:
                answer = await response.json()
                if response.status != 200 or answer.get("logged") is not True:
                    result.not_logged += 1

            waits = (dropped(session, base, held[base], started) for base in others)
            for delay in await asyncio.gather(*waits):
                if delay is None:
                    result.missed += 1
                else:
                    result.delays_s.append(delay)
            result.purges += 1
    return result


async def dropped(session: aiohttp.ClientSession, base: str, held: int, started: float) -> float | None:
    """Seconds from `started` until `base` holds fewer than `held` entries; None past PURGE_WAIT_S.

    Asked back to back: the replica is another process, with no event to wait on.
    """
    while time.perf_counter() < started + PURGE_WAIT_S:
        if (await admin_stats(session, base))["cache_size"] < held:
            return time.perf_counter() - started
    return None


class ReplicaBench:
    """Runs the three setups in turn; `log` reports progress."""

    def __init__(
        self,
        settings: ReplicaSettings,
        images: list[str],
        origin_connection_string: str,
        counter_url: str,
        workdir: Path,
        log: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.images = images
        self.origin = origin_connection_string  # through the counting proxy
        self.counter_url = counter_url
        self.workdir = workdir
        self.log = log
        self.paths = zipf_mix(images, settings.requests, ZIPF_EXPONENT)

    def run(self) -> ReplicaReport:
        report = ReplicaReport(REPLICAS, self.settings.connections, PURGE_BOUND_S)
        for setup in SETUPS:
            figures = SetupFigures(setup.key, setup.label, setup.redis, len(self.paths), len(set(self.paths)))
            report.setups.append(figures)
            try:
                self.run_setup(setup, figures)
            except Exception as exc:  # one failed setup must not cost the others
                self.log(f"replicas ({setup.key}) failed: {type(exc).__name__}: {exc}")
                figures.notes.append(f"failed: {type(exc).__name__}: {str(exc)[:300]}")
        return report

    def run_setup(self, setup: Setup, figures: SetupFigures) -> None:
        workdir = self.workdir / f"setup-{setup.key}"
        workdir.mkdir()
        figures.loadavg = " ".join(f"{x:.2f}" for x in os.getloadavg())
        with ExitStack() as stack:
            env = {"IMGPROXY_ADMIN_TOKEN": TOKEN}
            if setup.redis:
                redis = stack.enter_context(run_redis(extra_args=REDIS_ARGS))
                env["IMGPROXY_REDIS_URL"] = redis.url
            replicas: list[Target] = []
            for index in range(REPLICAS):
                replica_dir = workdir / f"replica-{index}"
                replica_dir.mkdir()
                name = f"replica-{setup.key}{index}"
                replicas.append(stack.enter_context(run_imgproxy(self.origin, replica_dir, name, env)))
            bases = [replica.base for replica in replicas]
            if setup.redis:
                client.run(wait_following(bases))
            lb = stack.enter_context(
                run_lb([base.removeprefix("http://") for base in bases], setup.balance, workdir)
            )
            self.log(f"replicas ({setup.key}) {setup.label}: {len(self.paths):,} requests through nginx")
            script = counted_script(
                workdir / "counted.lua", [f"/images/{path}" for path in self.paths], HEALTH_PATH
            )
            before = client.run(client.origin_stats(self.counter_url))
            max_s = max(120, len(self.paths) // 200)
            figures.load = run_wrk_counted(lb + "/", script, self.settings.connections, max_s)
            after = client.run(client.origin_stats(self.counter_url))
            figures.origin_gets = origin_gets(before, after, "img/")
            figures.replicas = client.run(counters(bases))
            if setup.bursts:
                for index in range(BURSTS):
                    figures.bursts.append(self.burst(bases, burst_blob(setup.key, index)))
            if setup.redis and self.settings.purges:
                self.log(f"replicas ({setup.key}): {self.settings.purges} purges, propagation")
                paths = list(dict.fromkeys(self.paths))[: self.settings.purges]
                figures.propagation = client.run(propagation(bases, paths))

    def burst(self, bases: list[str], blob: str) -> BurstFigure:
        before, counted = client.run(client.origin_stats(self.counter_url)), client.run(counters(bases))
        urls = [f"{base}/images/{blob}" for base in bases]
        result = client.run(client.burst(urls, BURST_CLIENTS, BURST_BYTES))
        after, changed = client.run(client.origin_stats(self.counter_url)), client.run(counters(bases))
        deltas = tuple(now.minus(then) for now, then in zip(changed, counted, strict=True))
        gets = origin_gets(before, after, blob)
        return BurstFigure(result.clients, result.ok, gets, result.last_s, deltas)


def run_replicas(run: Run, counter: tuple[str, int], workdir: Path) -> None:
    """The three setups in front of the counting proxy; a failure becomes a note."""
    settings = run.settings
    replica_dir = workdir / "replicas"
    replica_dir.mkdir()
    replica_settings = ReplicaSettings(
        settings.replica_requests, settings.connections, settings.replica_purges
    )
    origin = connection_string(f"http://{counter[0]}:{counter[1]}")
    try:
        bench = ReplicaBench(replica_settings, run.dataset.images, origin, run.counter_url, replica_dir, log)
        run.report.replicas = bench.run()
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        run.failed("replicas: skipped or incomplete", exc)
