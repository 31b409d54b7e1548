"""Purge propagation through the Redis purge log: append on one replica, applied on three others.

    .venv/bin/python -m bench.replicas.purge_propagation [--purges 1000] [--interval-ms 5]
                                                         [--restart-at 500] [--cluster]

Starts a private redis-server, three follower processes (each its own RedisLink and PurgeLog,
as a replica runs them) and appends `--purges` purges from this process, one every
`--interval-ms`. Halfway (`--restart-at`) Redis is killed and restarted empty: appends fail
until the appender's breaker lets one through (each is retried every 10 ms, as the app retries a
502 `logged: false`), and every follower empties itself once. A purge's delay is from its first
append attempt until each follower applied it (or emptied itself after it was logged, which
covers it). Clocks: CLOCK_MONOTONIC, shared by the processes of one machine. `--cluster` runs it
against a three-master cluster instead, without the restart (a node restarted empty leaves it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from devtools.redis_server import run_redis, run_redis_cluster
from imgproxy.config import RedisConfig
from imgproxy.replication.link import RedisLink
from imgproxy.replication.purge_log import PurgeLog
from imgproxy.replication.purge_records import Purge

CONTAINER = "bench"


def redis_settings(url: str, prefix: str) -> RedisConfig:
    """The defaults but a shorter cool-down; `cluster+` in front of the URL means a cluster."""
    cluster = url.startswith("cluster+")
    return RedisConfig(
        url=url.removeprefix("cluster+"),
        cluster=cluster,
        prefix=prefix,
        timeout_s=0.1,
        breaker_cooldown_s=0.2,
    )


async def follow(url: str, prefix: str, name: str) -> None:
    """A follower process: print one JSON line per applied purge or emptying, until stdin closes."""

    def emit(event: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    async def on_purge(purge: Purge) -> None:
        emit({"kind": "purge", "path": purge.path, "t": time.monotonic()})

    async def on_lost() -> None:
        emit({"kind": "lost", "t": time.monotonic()})

    async with (
        RedisLink(redis_settings(url, prefix), CONTAINER) as link,
        PurgeLog(link, name, on_purge, on_lost) as log,
    ):
        await log.wait_following()
        emit({"kind": "ready"})
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # EOF: stop


@dataclass
class Follower:
    proc: subprocess.Popen[str]
    applied: dict[str, float] = field(default_factory=dict)
    lost: list[float] = field(default_factory=list)


def read_events(follower: Follower) -> None:
    assert follower.proc.stdout is not None
    for line in follower.proc.stdout:
        event = json.loads(line)
        if event["kind"] == "purge":
            follower.applied[event["path"]] = event["t"]
        elif event["kind"] == "lost":
            follower.lost.append(event["t"])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def append_all(
    url: str, prefix: str, count: int, interval_s: float, restart_at: int, restart: Any
) -> list[tuple[str, float, float]]:
    """(path, first attempt, logged) for each purge, killing and restarting Redis at `restart_at`."""
    out: list[tuple[str, float, float]] = []
    async with RedisLink(redis_settings(url, prefix), CONTAINER) as link:
        log = PurgeLog(link, "appender", _ignore_purge, _ignore_lost)  # appends only: not entered
        await link.wait_up()
        for i in range(count):
            if i == restart_at:
                restart()
            path = f"img/{i}.png"
            first = time.monotonic()
            while not await log.append(path):  # noqa: ASYNC110 - the app's retry of a 502, paced
                await asyncio.sleep(0.01)
            out.append((path, first, time.monotonic()))
            await asyncio.sleep(interval_s)
    return out


async def _ignore_purge(purge: Purge) -> None:
    return None


async def _ignore_lost() -> None:
    return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--purges", type=int, default=1000)
    parser.add_argument("--interval-ms", type=float, default=5.0)
    parser.add_argument("--restart-at", type=int, default=500, help="-1: no restart")
    parser.add_argument("--cluster", action="store_true", help="three masters, no restart")
    parser.add_argument("--follow", nargs=3, metavar=("URL", "PREFIX", "NAME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.follow:
        asyncio.run(follow(*args.follow))
        return
    import threading

    with contextlib.ExitStack() as stack:
        server: Any = stack.enter_context(run_redis_cluster() if args.cluster else run_redis())
        url = ("cluster+" + server.url) if args.cluster else server.url
        restart = (lambda: None) if args.cluster else server.restart
        restart_at = -1 if args.cluster else args.restart_at
        prefix = "bench:"
        followers = [
            Follower(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bench.replicas.purge_propagation",
                        "--follow",
                        url,
                        prefix,
                        f"f{i}",
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
            for i in range(3)
        ]
        for follower in followers:
            assert follower.proc.stdout is not None
            assert json.loads(follower.proc.stdout.readline())["kind"] == "ready"
        readers = [threading.Thread(target=read_events, args=(f,), daemon=True) for f in followers]
        for reader in readers:
            reader.start()
        appended = asyncio.run(
            append_all(url, prefix, args.purges, args.interval_ms / 1000, restart_at, restart)
        )
        time.sleep(2.0)  # let the last purges arrive before the followers stop
        for follower in followers:
            assert follower.proc.stdin is not None
            follower.proc.stdin.close()
            follower.proc.wait(timeout=10)
        for reader in readers:
            reader.join(timeout=10)
    report(appended, followers, restart_at)


def report(appended: list[tuple[str, float, float]], followers: list[Follower], restart_at: int) -> None:
    delays: list[float] = []
    around_restart: list[float] = []
    missing = 0
    for index, (path, first, logged) in enumerate(appended):
        for follower in followers:
            at = follower.applied.get(path)
            covered = [t for t in follower.lost if t >= logged]
            if at is None and covered:
                at = covered[0]
            if at is None:
                missing += 1
                continue
            delays.append(at - first)
            if restart_at >= 0 and restart_at <= index < restart_at + 20:
                around_restart.append(at - first)
    ms = 1000.0
    print(
        f"purges: {len(appended)}, followers: {len(followers)}, deliveries: {len(delays)}, missing: {missing}"
    )
    print(f"emptyings per follower: {[len(f.lost) for f in followers]}")
    print(
        f"delay p50 {percentile(delays, 0.5) * ms:.2f} ms, p99 {percentile(delays, 0.99) * ms:.2f} ms, "
        f"max {max(delays) * ms:.1f} ms, mean {statistics.fmean(delays) * ms:.2f} ms"
    )
    if around_restart:
        print(
            f"the 20 purges from the restart on: p50 {percentile(around_restart, 0.5) * ms:.1f} ms, "
            f"max {max(around_restart) * ms:.1f} ms"
        )


if __name__ == "__main__":
    main()
