"""One download across replicas: a short lock in Redis, and waiting for the holder's value.

A miss calls `start(path, variant)` (the shared tier's `claim`; `download_lock` wraps it in a
block). The first replica to `SET <lock> <token> NX PX redis.lock_ttl_s` holds it
(`outcome.claim.held`): it downloads and `tier.store(outcome.claim, ...)`s, which also frees the
lock and publishes a wake-up; the lock is renewed every third of its TTL (`outcome.renewer`) until
then, and released (token compared, in a script) if the download ends without a store. Any
other replica waits for the value (`outcome.entry`), woken by `Notifier` (one Pub/Sub channel),
with a poll every `redis.lock_wait_s / 10` as a safety net, at most `redis.lock_wait_s`;
`outcome.entry` None means: go to Azure on your own (the wait timed out, or the holder gave up).
When Redis fails the claim is UNAVAILABLE: go alone at once and store nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final

from imgproxy.core.background import stop_task
from imgproxy.replication.codec import SharedEntry, members_key
from imgproxy.replication.notify import Notifier
from imgproxy.replication.store import Claim, ClaimState, RedisStore

POLL_FRACTION: Final = 10  # the safety-net poll runs lock_wait_s / 10 apart (at least POLL_MIN_S)
POLL_MIN_S: Final = 0.05

# Starts a held lock's renewer: `asyncio.create_task`, or an owner's `Background.spawn`.
Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[Any]"]


@dataclass(slots=True)
class Claimed:
    """What `start` found: ours to download (`claim.held`), another's value, or neither."""

    claim: Claim
    entry: SharedEntry | None = None  # the value another replica published while we waited
    renewer: asyncio.Task[Any] | None = None  # a held lock's: cancel it once stored or given up


@dataclass(frozen=True, slots=True)
class DownloadStats:
    waits: int
    waits_served: int  # waits that ended with another replica's value


class ReplicaFlight:
    """Claims, waits and renewals for one tier; `notifier` (entered) wakes the waits."""

    def __init__(self, tier: RedisStore, notifier: Notifier | None = None) -> None:
        self.tier = tier
        self._notifier = notifier
        self._config = tier.config
        self._waits = self._served = 0

    def stats(self) -> DownloadStats:
        return DownloadStats(self._waits, self._served)

    async def start(
        self, path: str, variant: str | None = None, spawn: Spawn = asyncio.create_task
    ) -> Claimed:
        """Claim the entry's download lock. Held: its renewer runs (started by `spawn`) until the
        caller cancels it. Another replica's: wait for its value (`outcome.entry`; None: go alone).
        Redis failed: neither."""
        claim = await self.tier.claim(path, variant)
        if claim.held:
            return Claimed(claim, renewer=spawn(self.keep(claim)))
        if claim.state is ClaimState.BUSY:
            return Claimed(claim, await self.wait_for_value(path, variant))
        return Claimed(claim)

    @contextlib.asynccontextmanager
    async def download_lock(self, path: str, variant: str | None = None) -> AsyncIterator[Claimed]:
        """`start` for the block: a held lock is kept renewed while the block downloads (and
        stores), and released after."""
        outcome = await self.start(path, variant)
        try:
            yield outcome
        finally:
            if outcome.claim.held:
                await stop_task(outcome.renewer)
                await self.tier.release(outcome.claim)

    async def wait_for_value(
        self, path: str, variant: str | None = None, timeout_s: float | None = None
    ) -> SharedEntry | None:
        """Another replica's value once it is stored; None when its lock is gone without one or at
        `timeout_s` (default `redis.lock_wait_s`): then go to Azure on your own."""
        self._waits += 1
        wait_s = self._config.lock_wait_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + wait_s
        poll_s = max(POLL_MIN_S, wait_s / POLL_FRACTION)
        watching = (
            self._notifier.watch(members_key(self.tier.base, path))
            if self._notifier is not None
            else contextlib.nullcontext()
        )
        with watching as wakeup:  # registered before the first look: no wake-up is missed
            while True:
                entry, locked = await self.tier.probe(path, variant, with_lock=True)
                if entry is not None:
                    self._served += 1
                    return entry
                remaining = deadline - time.monotonic()
                if not locked or remaining <= 0:
                    return None
                if wakeup is None:
                    await asyncio.sleep(min(remaining, poll_s))
                else:
                    await wakeup.wait(min(remaining, poll_s))

    async def keep(self, claim: Claim) -> None:
        """Renew a held lock every third of its TTL until cancelled or no longer ours."""
        while True:
            await asyncio.sleep(self._config.lock_ttl_s / 3)
            if not await self.tier.renew_lock(claim):
                return  # purged or expired: the store will be refused
