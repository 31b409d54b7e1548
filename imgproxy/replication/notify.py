"""Wake-ups for replicas waiting on another replica's download: one Pub/Sub channel per deployment.

The tier's scripts `PUBLISH {base}notify "<kind> <path's key set>"` when an entry is stored, a
download lock is released without a value, or a path is purged. `Notifier` keeps one subscribed
connection per process (a task it owns) and wakes the local waiters of that path; they then look
for the value themselves. One channel, not one per key: waiting needs no SUBSCRIBE round trip,
and a message is a few dozen bytes per download. In a cluster, PUBLISH reaches every node over the
cluster bus, so one subscription on any node hears all. While the subscription is down, waiters
fall back to a slow poll (see `ReplicaFlight.wait_for_value`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from types import TracebackType
from typing import Final

from redis.exceptions import RedisClusterException

from imgproxy.core.background import stop_task
from imgproxy.replication.link import CONNECTION_LOST, RedisLink, retry_pause_s

log = logging.getLogger(__name__)

LISTEN_TIMEOUT_S: Final = 1.0  # one get_message wait; bounds how late a stop is noticed


def notify_channel(base: str) -> str:
    return f"{base}notify"


class Wakeup:
    """Set when a message about the watched path arrives (or the subscription is lost)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout_s: float) -> bool:
        """Wait for a message, at most `timeout_s`; True if one came. Re-arms itself."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._event.wait()
        except TimeoutError:
            return False
        self._event.clear()
        return True


class Notifier:
    """One subscription to the deployment's channel, dispatching wake-ups to local waiters."""

    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self.channel = notify_channel(link.base)
        self._watchers: dict[bytes, set[Wakeup]] = {}
        self._ready = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Notifier:
        self._task = asyncio.create_task(self._listen(), name="redis-notifier")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopping = True
        await stop_task(self._task)

    @property
    def ready(self) -> bool:
        """Whether the subscription is live (messages published from now on will arrive)."""
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    @contextlib.contextmanager
    def watch(self, members_key: str) -> Iterator[Wakeup]:
        """Register for messages about one path (by its key set) for the duration of the block."""
        key = members_key.encode()
        wakeup = Wakeup()
        self._watchers.setdefault(key, set()).add(wakeup)
        try:
            yield wakeup
        finally:
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.discard(wakeup)
                if not watchers:
                    del self._watchers[key]

    def _dispatch(self, data: object) -> None:
        if not isinstance(data, bytes):
            return
        _, _, key = data.partition(b" ")
        for wakeup in self._watchers.get(key, ()):
            wakeup.set()

    async def _listen(self) -> None:
        failures = 0
        while not self._stopping:
            await self._link.wait_up()
            try:
                # A client of its own, so the subscription holds no connection of the request
                # path's pool; a fresh one per subscription, so a cluster's knows today's nodes.
                async with self._link.blocking_client(LISTEN_TIMEOUT_S) as client:
                    pubsub = client.pubsub()
                    try:
                        async with asyncio.timeout(self._link.config.timeout_s):
                            await client.initialize()  # a cluster's PubSub finds its node in the slot map
                            await pubsub.subscribe(self.channel)
                            while await pubsub.get_message(timeout=self._link.config.timeout_s) is None:
                                pass  # the subscribe confirmation: from here on nothing is missed
                        self._ready.set()
                        failures = 0
                        while not self._stopping:
                            message = await pubsub.get_message(
                                ignore_subscribe_messages=True, timeout=LISTEN_TIMEOUT_S
                            )
                            if message is not None and message.get("type") == "message":
                                self._dispatch(message.get("data"))
                    finally:
                        self._ready.clear()
                        for watchers in self._watchers.values():  # let waiters look for themselves
                            for wakeup in watchers:
                                wakeup.set()
                        with contextlib.suppress(Exception):
                            await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py 8.1
            # The task must outlive any outage (a cluster none of whose nodes answers raises
            # RedisClusterException, which is not a RedisError).
            except (*CONNECTION_LOST, RedisClusterException, TimeoutError) as exc:
                failures += 1
                if failures == 1:
                    log.warning("Redis notifications lost (%s); waiters poll until they are back", exc)
            if not self._stopping:
                await asyncio.sleep(retry_pause_s(self._link.config, failures))
