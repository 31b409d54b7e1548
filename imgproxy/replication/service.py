"""Several replicas sharing one Redis (`redis.url`): the shared tier, the purge log every replica
follows, and the list of replicas. Without `redis.url` none of this exists and nothing changes.

`open_redis` enters the link (timeouts, breaker, background probe) and the Pub/Sub notifier and
builds the shared tier; `follow_purges` then runs, for one fetcher, the purge log's follower and
this replica's announcement. A purge received by the admin API is applied locally by the handler,
then `Replication.purge` deletes the shared copies and appends the purge to the log; every other
replica's follower applies it to its memory, disk and variants. A replica that cannot know what
it missed (the log was trimmed past it, or Redis lost it) empties its caches.

With the disk tier on, the follower's position is saved in `<disk.path>/purge-log.cursor` after
each purge it applies, so a replica that was stopped meanwhile applies, when it starts again,
the purges it missed to the entries its disk kept (or empties itself if the log no longer
reaches back that far).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from imgproxy.cache.disk.files import write_atomically
from imgproxy.cache.fetcher import Fetcher
from imgproxy.config import Config
from imgproxy.core.background import Background, stop_task
from imgproxy.core.errors import RedisFailure
from imgproxy.core.tracing import Tracer
from imgproxy.replication.flight import ReplicaFlight
from imgproxy.replication.link import RedisLink
from imgproxy.replication.notify import Notifier
from imgproxy.replication.purge_log import LogCursor, PurgeLog
from imgproxy.replication.purge_records import Purge
from imgproxy.replication.registry import Replica, ReplicaRegistry, make_replica_id
from imgproxy.replication.shared_tier import ReplicatedTier
from imgproxy.replication.store import RedisStore

log = logging.getLogger(__name__)

CURSOR_FILE: Final = "purge-log.cursor"


@dataclass(frozen=True, slots=True)
class RedisParts:
    """What `open_redis` opened: the link and the pieces the shared tier is made of."""

    link: RedisLink
    tier: RedisStore
    downloads: ReplicaFlight

    def shared_tier(self, background: Background) -> ReplicatedTier:
        return ReplicatedTier(self.link, self.tier, self.downloads, background)


@contextlib.asynccontextmanager
async def open_redis(config: Config, tracer: Tracer | None = None) -> AsyncIterator[RedisParts | None]:
    """The Redis link and shared tier, or None when `redis.url` is empty. Never fails for Redis
    being down: the link connects lazily and probes in the background."""
    if not config.redis.url:
        yield None
        return
    link = RedisLink(config.redis, config.origin.container, tracer=tracer)
    async with link, Notifier(link) as notifier:
        tier = RedisStore(link)
        yield RedisParts(link, tier, ReplicaFlight(tier, notifier))


class Replication:
    """This replica's purge log and announcement (see the module docstring)."""

    def __init__(self, parts: RedisParts, fetcher: Fetcher, me: Replica, cursor_file: Path | None) -> None:
        self.me = me
        self._link = parts.link
        self._fetcher = fetcher
        self._cursor_file = cursor_file
        resume = _read_cursor(cursor_file) if cursor_file is not None else None
        self.resumed = resume is not None
        self.log = PurgeLog(parts.link, me.id, self._apply, self._lost, resume)
        self.registry = ReplicaRegistry(parts.link, me)

    @property
    def base(self) -> str:
        """What every Redis key of this deployment starts with."""
        return self._link.base

    async def purge(self, path: str | None) -> bool:
        """Delete the shared copies of `path` (None: everything) and log the purge for the other
        replicas. False if either did not happen: the caller answers 502 and the client retries."""
        try:
            await self._fetcher.purge_shared(path)
        except RedisFailure as exc:
            log.warning("shared copies of %s not purged: %s", path if path is not None else "everything", exc)
            shared = False
        else:
            shared = True
        logged = await self.log.append(path)
        return shared and logged

    async def stats(self) -> dict[str, Any]:
        """`redis_up`, this replica, the replicas recently seen, and the log's figures."""
        try:
            replicas = [asdict(replica) for replica in await self.registry.replicas()]
        except RedisFailure:
            replicas = []
        return {
            "redis_up": self._link.up,
            "replica": self.me.id,
            "replicas": replicas,
            "purge_log": asdict(self.log.stats()),
        }

    async def _apply(self, purge: Purge) -> None:
        """Another replica's purge: forget it here (memory, disk, variants, downloads under way)."""
        if purge.path is None:
            await self._fetcher.purge_all()
        else:
            await self._fetcher.purge(purge.path)
        await self._save_cursor()

    async def _lost(self) -> None:
        """What was missed cannot be known: trust nothing kept here."""
        await self._fetcher.purge_all()
        await self._save_cursor()

    async def save_when_following(self) -> None:
        await self.log.wait_following()
        await self._save_cursor()

    async def _save_cursor(self) -> None:
        cursor = self.log.cursor
        if self._cursor_file is None or cursor is None:
            return
        text = json.dumps({"epoch": cursor.epoch, "last_id": cursor.last_id, "saved_at": time.time()})
        await asyncio.to_thread(write_atomically, self._cursor_file, text.encode())


@contextlib.asynccontextmanager
async def follow_purges(config: Config, parts: RedisParts, fetcher: Fetcher) -> AsyncIterator[Replication]:
    """Follow the purge log and announce this replica while the block runs."""
    server = config.server
    me = Replica(make_replica_id(server.port), server.host, server.port, os.getpid(), time.time())
    replication = Replication(parts, fetcher, me, cursor_path(config))
    async with replication.log, replication.registry:
        if replication.resumed:
            # The disk kept entries from before the stop: apply what was purged meanwhile before
            # serving them (bounded: with Redis down, serve and catch up once it is back).
            try:
                async with asyncio.timeout(config.redis.catch_up_s):
                    await replication.log.wait_caught_up()
            except TimeoutError:
                log.warning("purge log not caught up in %.1f s: serving meanwhile", config.redis.catch_up_s)
        # Where the follower starts is saved at once, so a stop before any purge still resumes there.
        saving = asyncio.create_task(replication.save_when_following(), name="purge-log-cursor")
        try:
            yield replication
        finally:
            await stop_task(saving)


def cursor_path(config: Config) -> Path | None:
    """Where the follower's position is kept: beside the disk tier it protects (none without one)."""
    return Path(config.disk.path).resolve() / CURSOR_FILE if config.disk.enabled else None


def _read_cursor(file: Path) -> LogCursor | None:
    try:
        raw = json.loads(file.read_text())
        return LogCursor(str(raw["epoch"]), str(raw["last_id"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("purge log cursor %s unreadable (%s): following from the end", file, exc)
        return None
