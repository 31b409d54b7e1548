"""Replicas announce themselves in Redis so `/admin/cache` can list who follows the purge log.

Each replica keeps a key `{base}{purge-log}:replica:<id>` (JSON: id, host, port, pid, started-at,
last-seen) alive with a TTL of `redis.announce_ttl_s`, refreshed every third of it by a task the
`ReplicaRegistry` owns, and its id in a sorted set scored by last-seen time. Listing reads the
set's recent ids and their keys (one slot, the purge log's hash tag, so MGET works in a cluster),
and prunes ids not seen for a TTL. A replica that stops deletes its own key; one that dies ages out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Final

from imgproxy.core.background import stop_task
from imgproxy.core.errors import RedisFailure
from imgproxy.replication.link import Client, RedisLink

MAX_LISTED: Final = 1000  # replicas listed at most (a bound on one answer)


@dataclass(frozen=True, slots=True)
class Replica:
    """What identifies a replica, and when it was last heard of (wall clock)."""

    id: str
    host: str
    port: int
    pid: int
    started_at: float
    last_seen: float = 0.0


def make_replica_id(port: int) -> str:
    """A replica id unique to this process: host name, port, pid and a random suffix."""
    return f"{socket.gethostname()}:{port}:{os.getpid()}:{secrets.token_hex(3)}"


def registry_keys(base: str) -> tuple[str, str]:
    """The sorted set of ids, and the prefix of each replica's key."""
    return f"{base}{{purge-log}}:replicas", f"{base}{{purge-log}}:replica:"


class ReplicaRegistry:
    """Announces this replica while the block runs; lists every replica recently seen."""

    def __init__(self, link: RedisLink, me: Replica, clock: Callable[[], float] = time.time) -> None:
        self._link = link
        self.me = me
        self._clock = clock
        self._ttl_s = link.config.announce_ttl_s
        self._index, self._key_prefix = registry_keys(link.base)
        self._task: asyncio.Task[None] | None = None
        self.announced = asyncio.Event()

    async def __aenter__(self) -> ReplicaRegistry:
        self._task = asyncio.create_task(self._keep_announcing(), name="replica-announce")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await stop_task(self._task)
        with contextlib.suppress(RedisFailure):  # best effort: otherwise it ages out
            await self._link.call(self._withdraw)

    async def announce(self) -> bool:
        """Refresh this replica's key and its place in the index; False if Redis did not take it."""
        now = self._clock()
        record = json.dumps(asdict(self.me) | {"last_seen": now})

        async def write(client: Client) -> None:
            pipe = client.pipeline(transaction=False)
            pipe.set(self._key_prefix + self.me.id, record, px=int(self._ttl_s * 1000))
            pipe.zadd(self._index, {self.me.id: now})
            pipe.zremrangebyscore(self._index, "-inf", now - self._ttl_s)
            await pipe.execute()

        try:
            await self._link.call(write)
        except RedisFailure:
            return False
        self.announced.set()
        return True

    async def replicas(self) -> list[Replica]:
        """Every replica seen within the TTL, by id (raises RedisFailure)."""
        since = self._clock() - self._ttl_s

        async def read(client: Client) -> list[object]:
            reply: object = await client.zrangebyscore(self._index, since, "+inf", start=0, num=MAX_LISTED)
            ids = (
                [i.decode("utf-8", "replace") for i in reply if isinstance(i, bytes)]
                if isinstance(reply, list)
                else []
            )
            if not ids:
                return []
            values: object = await client.mget([self._key_prefix + i for i in ids])
            return list(values) if isinstance(values, list) else []

        found: list[Replica] = []
        for raw in await self._link.call(read):
            replica = _parse(raw)
            if replica is not None and replica.last_seen >= since:
                found.append(replica)
        return sorted(found, key=lambda r: r.id)

    async def _keep_announcing(self) -> None:
        while True:
            await self.announce()  # a failure is retried at the next period
            await asyncio.sleep(self._ttl_s / 3)

    async def _withdraw(self, client: Client) -> None:
        pipe = client.pipeline(transaction=False)
        pipe.delete(self._key_prefix + self.me.id)
        pipe.zrem(self._index, self.me.id)
        await pipe.execute()


def _parse(raw: object) -> Replica | None:
    """A replica record, or None for an expired key or anything that is not one."""
    if not isinstance(raw, bytes):
        return None
    try:
        data = json.loads(raw)
        replica = Replica(**data)
    except (ValueError, TypeError):
        return None
    numbers = (replica.port, replica.pid, replica.started_at, replica.last_seen)
    if not isinstance(replica.id, str) or not isinstance(replica.host, str):
        return None
    if not all(isinstance(n, int | float) and not isinstance(n, bool) for n in numbers):
        return None
    return replica
