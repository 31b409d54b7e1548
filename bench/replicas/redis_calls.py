"""Per-call latency of the Redis tier on loopback (one client, sequential calls).

    .venv/bin/python -m bench.replicas.redis_calls [--calls 2000]

Times lookup hits of 20 KiB, 200 KiB and 1 MiB entries (pipeline + decode + hash check), a miss,
claim + store + release of a 200 KiB entry, a purge of a path and one purge-log append, against a
private redis-server. It says which RESP parser redis-py picked: run it with and without the
`hiredis` package installed to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from redis.utils import HIREDIS_AVAILABLE

from devtools.redis_server import run_redis
from imgproxy.config import RedisConfig
from imgproxy.core.blob import BlobMeta
from imgproxy.replication.link import RedisLink
from imgproxy.replication.purge_log import PurgeLog
from imgproxy.replication.purge_records import Purge
from imgproxy.replication.store import RedisStore


def meta(size: int) -> BlobMeta:
    return BlobMeta(size, '"e"', datetime(2026, 1, 1, tzinfo=UTC), "image/png", None)


async def timed(label: str, calls: int, op: Callable[[], Awaitable[object]]) -> None:
    for _ in range(min(100, calls)):
        await op()  # warm up: connections, scripts loaded
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        await op()
        samples.append(time.perf_counter() - started)
    samples.sort()
    p50, p99 = samples[len(samples) // 2], samples[int(len(samples) * 0.99)]
    print(f"| {label} | {p50 * 1e6:.0f} | {p99 * 1e6:.0f} |")


async def run(url: str, calls: int) -> None:
    config = RedisConfig(url=url, prefix="bench:", timeout_s=1.0)
    async with RedisLink(config, "calls") as link:
        await link.wait_up()
        tier = RedisStore(link)
        for size in (20 * 1024, 200 * 1024, 1024 * 1024):
            claim = await tier.claim(f"hit{size}")
            assert await tier.store(claim, meta(size), b"x" * size)
        print(f"hiredis: {'yes' if HIREDIS_AVAILABLE else 'no'}, {calls} calls each\n")
        print("| call | p50 us | p99 us |\n| --- | --- | --- |")
        for size in (20 * 1024, 200 * 1024, 1024 * 1024):

            async def hit(path: str = f"hit{size}") -> object:
                return await tier.lookup(path)

            await timed(f"lookup hit {size // 1024} KiB", calls, hit)
        await timed("lookup miss", calls, lambda: tier.lookup("absent"))
        body = b"y" * 200 * 1024

        async def publish() -> None:
            claim = await tier.claim("stored")
            await tier.store(claim, meta(len(body)), body)
            await tier.release(claim)

        await timed("claim + store 200 KiB", calls, publish)
        await timed("purge(path)", calls, lambda: tier.purge("stored"))

        async def ignore(purge: Purge) -> None:
            return None

        async def lost() -> None:
            return None

        log = PurgeLog(link, "bench", ignore, lost)
        await timed("purge log append", calls, lambda: log.append("a/b.png"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    with run_redis() as server:
        asyncio.run(run(server.url, args.calls))


if __name__ == "__main__":
    main()
