"""The Redis tier behind the `Tier` interface: entries every replica shares, and one download for all.

`store.RedisStore` does the Redis side (verified entries, tickets that purges on any replica
void, download locks); this adapter speaks the fetcher's keys (`path` NUL `variant`) and adds
what only a shared tier does: `claim`, taken by a miss before it asks Azure, which either makes
this replica the one that downloads (and later publishes, waking the others) or waits, bounded by
`redis.lock_wait_s`, for the value another replica publishes.

Redis is optional: nothing here raises for Redis failing (a failure is a miss or a skipped
store) except `purge`, whose caller must know whether the shared copies are gone.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from imgproxy.core.background import Background
from imgproxy.core.blob import Entry, split_key
from imgproxy.core.lru import FillTicket
from imgproxy.core.stats import SharedFigures
from imgproxy.replication.codec import SharedEntry
from imgproxy.replication.flight import ReplicaFlight
from imgproxy.replication.link import RedisLink
from imgproxy.replication.store import Claim, RedisStore, StoreTicket

NAME: Final = "redis"


class RedisFill(FillTicket):
    """A fill ticket of the Redis tier: a store ticket from before the download, or a held claim
    (this replica downloads for all, its lock renewed until the entry is published or dropped)."""

    __slots__ = ("claim", "renewer", "store_ticket")

    def __init__(self, key: str, store_ticket: StoreTicket) -> None:
        super().__init__(key)
        self.store_ticket = store_ticket
        self.claim: Claim | None = None
        self.renewer: asyncio.Task[Any] | None = None


class ReplicatedTier:
    """The Redis tier of one replica."""

    name = NAME

    def __init__(
        self, link: RedisLink, tier: RedisStore, downloads: ReplicaFlight, background: Background
    ) -> None:
        self._link = link
        self._tier = tier
        self._downloads = downloads
        self._background = background  # lock renewals and releases, which outlive their request

    def fits(self, entry: Entry) -> bool:
        return entry.body is not None and self._tier.fits(len(entry.body))

    def begin_fill(self, key: str) -> RedisFill:
        return RedisFill(key, self._tier.ticket(*split_key(key)))

    def release(self, ticket: FillTicket) -> None:
        """Stop renewing a held claim and give it back (in the background: it is best effort)."""
        assert isinstance(ticket, RedisFill)
        ticket.valid = False
        if ticket.renewer is not None:
            ticket.renewer.cancel()
        if ticket.claim is not None:
            claim, ticket.claim = ticket.claim, None
            self._background.spawn(self._tier.release(claim))

    async def lookup(self, key: str) -> Entry | None:
        shared = await self._tier.lookup(*split_key(key))
        return None if shared is None else _entry(key, shared)

    async def claim(self, key: str, ticket: FillTicket) -> Entry | None:
        """Before asking Azure for `key`: None when this replica should go ahead (it holds the
        download lock, or Redis is unavailable, or the holder gave up or took too long), or the
        entry another replica published meanwhile."""
        assert isinstance(ticket, RedisFill)
        outcome = await self._downloads.start(*split_key(key), spawn=self._background.spawn)
        if outcome.claim.held:
            ticket.claim, ticket.renewer = outcome.claim, outcome.renewer
        return None if outcome.entry is None else _entry(key, outcome.entry)

    async def store(self, ticket: FillTicket, entry: Entry | None) -> bool:
        """Publish `entry` (which wakes the replicas waiting for it); None: forget the key."""
        assert isinstance(ticket, RedisFill)
        try:
            if entry is None or entry.body is None or not self.fits(entry):
                if entry is None:
                    await self._tier.remove(*split_key(ticket.key))
                return False
            return await self._tier.store(
                ticket.claim or ticket.store_ticket,
                entry.meta,
                entry.body,
                entry.fetched_at,
                entry.source_etag,
            )
        finally:
            self.release(ticket)

    async def renew(self, entry: Entry) -> None:
        path, variant = split_key(entry.key)
        await self._tier.renew(path, variant, entry.meta.etag, entry.fetched_at)

    async def remove(self, key: str) -> bool:
        return await self._tier.remove(*split_key(key))

    async def purge(self, path: str, variants_only: bool = False) -> bool:
        """Delete the shared copies of `path` (and its variants); raises `RedisFailure`."""
        return await self._tier.purge(path, variants_only) > 0

    async def purge_all(self) -> int:
        """Make every shared entry unservable; raises `RedisFailure`. Counts nothing (0)."""
        await self._tier.purge_all()
        return 0

    def stats(self) -> SharedFigures:
        tier, link, waits = self._tier.stats(), self._link.stats(), self._downloads.stats()
        return SharedFigures(
            self._link.up, tier.hits, tier.misses, tier.stores, tier.stores_refused, tier.garbage,
            link.failures, waits.waits, waits.waits_served,
        )  # fmt: skip


def _entry(key: str, shared: SharedEntry) -> Entry:
    return Entry(key, shared.meta, shared.fetched_at, shared.body, source_etag=shared.source_etag)
