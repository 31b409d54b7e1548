"""One download of a key through the tiers: tickets first, a sibling's copy if there is one, then
the producer, then every tier brought in line with the outcome.

The producer is Azure for an original (`read_original`: one GET of at most
`cache.max_item_bytes`, or a conditional request when revalidating) and a transform for a variant
(its maker). A fill ticket is taken from every tier before the first await, so a purge from then
on voids what the download would store. With the disk tier shared by worker processes, the
entry's lock file is taken first and what a sibling published under it is adopted instead of
asking again; with Redis, the shared tier's `claim` does the same across replicas (one of them
downloads and publishes, the others wait for its value). The memory tier is settled before the
download's waiters wake; the disk and Redis tiers are written in the background, off the request
path (their locks are released once the entry is published).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from imgproxy.cache.disk.files import DamagedEntry
from imgproxy.cache.disk.locks import EntryLock, release
from imgproxy.cache.disk.tier import DiskTier
from imgproxy.cache.tier import SharedTier, Tier
from imgproxy.config import CacheConfig
from imgproxy.core.background import Background
from imgproxy.core.blob import Entry
from imgproxy.core.errors import BlobNotFound
from imgproxy.core.lru import FillTicket
from imgproxy.core.stats import FetchStats
from imgproxy.origin import Blob, NotModified, Origin, TooLarge

# What makes the entry of a key: given the expired entry being revalidated (or None), the new or
# renewed entry. Raising leaves the tiers as they were (a stale entry may still serve).
Producer = Callable[[Entry | None], Awaitable[Entry]]


@dataclass(slots=True)
class DownloadResult:
    """How a download ended (returned by `Downloads.run`), for the callers that keep indexes of
    their own (large, missing) and for settling the tiers."""

    entry: Entry | None = None
    gone: bool = False  # the blob does not exist (any more)
    shared: bool = False  # the entry is another replica's, from the shared tier
    current: Entry | None = None  # what was revalidated (none: a download)

    @property
    def settled(self) -> bool:
        return self.gone or self.entry is not None

    @property
    def unchanged(self) -> bool:
        """A revalidation that found the version it had."""
        entry, current = self.entry, self.current
        return entry is not None and current is not None and entry.meta.etag == current.meta.etag

    @property
    def changed(self) -> bool:
        """A revalidation that found another version."""
        entry, current = self.entry, self.current
        return entry is not None and current is not None and entry.meta.etag != current.meta.etag


class Downloads:
    """Downloads and revalidations of keys into the tiers."""

    def __init__(
        self,
        origin: Origin,
        config: CacheConfig,
        stats: FetchStats,
        tiers: Sequence[Tier],
        disk: DiskTier | None,
        background: Background,
        shared: SharedTier | None = None,
    ) -> None:
        self._origin = origin
        self._config = config
        self._stats = stats
        self._tiers = tuple(tiers)
        self._disk = disk
        self._background = background
        self._shared = shared

    async def run(self, key: str, current: Entry | None, produce: Producer) -> DownloadResult:
        """The entry of `key` from `produce` (or a sibling), stored in every tier it fits, and how
        the download ended. Raises what `produce` raised (the tiers settled first)."""
        outcome = DownloadResult()
        # Tickets are taken before the first await, so a purge from here on voids them.
        tickets = [tier.begin_fill(key) for tier in self._tiers]
        shared_ticket = self._shared.begin_fill(key) if self._shared is not None else None
        lock: EntryLock | None = None
        try:
            if current is None and self._disk is not None and self._disk.shared:
                # Sibling processes share the disk: one of us makes the entry, the others wait and
                # adopt; but a sibling filling a large blob is not waited for: our first GET learns
                # the size, then our readers follow its file (`large`).
                lock = await self._disk.try_lock(key)
                if lock is None and not await self._disk.sibling_filling(key):
                    lock = await self._disk.lock(key)
                if lock is not None:
                    outcome.entry = await self._adopt(key, lock.held)
                    if outcome.entry is not None:
                        return outcome
            if current is None and self._shared is not None and shared_ticket is not None:
                # Other replicas: one downloads for all, the others wait for what it publishes.
                published = await self._shared.claim(key, shared_ticket)
                if published is not None and published.age(time.time()) < self._config.ttl_s:
                    outcome.entry, outcome.shared = published, True
                    return outcome
                current = published  # expired on its way: revalidate it rather than download it
            outcome.entry = await produce(current)
            return outcome
        except BlobNotFound:
            outcome.gone = True
            raise
        finally:
            outcome.current = current
            await self._settle(key, outcome, tickets, lock)
            if shared_ticket is not None:
                self._settle_shared(outcome, shared_ticket)

    async def read_original(self, path: str, current: Entry | None) -> Entry:
        """Download `path` from Azure, or revalidate `current` with a conditional request."""
        limit = self._config.max_item_bytes
        if current is not None and current.body is None:
            with self._stats.origin_call("revalidate"):
                meta = await self._origin.properties(path, if_none_match=current.meta.etag)
            if isinstance(meta, NotModified):
                return dataclasses.replace(current, fetched_at=time.time())
            if meta.size > limit:
                return Entry(path, meta, time.time())
            current = None  # it shrank enough to cache: read it whole
        kind = "whole" if current is None else "revalidate"
        etag = None if current is None else current.meta.etag
        with self._stats.origin_call(kind):
            outcome = await self._origin.fetch(path, limit, if_none_match=etag)
        if isinstance(outcome, NotModified):
            assert current is not None
            return dataclasses.replace(current, fetched_at=time.time())
        if isinstance(outcome, Blob):
            return Entry(path, outcome.meta, time.time(), outcome.body)
        assert isinstance(outcome, TooLarge)
        return Entry(path, outcome.meta, time.time(), head=outcome.head)

    async def _settle(
        self, key: str, outcome: DownloadResult, tickets: list[FillTicket], lock: EntryLock | None
    ) -> None:
        """Store the outcome where it belongs and drop the key elsewhere; after a failure keep
        what there was (a stale entry may still serve), unless the blob is gone."""
        result = outcome.entry
        body = result if result is not None and result.body is not None else None
        for tier, ticket in zip(self._tiers, tickets, strict=True):
            if tier is self._disk:
                await self._settle_disk(key, outcome, ticket, lock)
            elif outcome.settled:
                await tier.store(ticket, body if body is not None and tier.fits(body) else None)
            else:
                tier.release(ticket)

    async def _settle_disk(
        self, key: str, outcome: DownloadResult, ticket: FillTicket, lock: EntryLock | None
    ) -> None:
        """Bring the disk tier in line with a download or revalidation that just ended.

        The entry's lock (shared disk only) is released once the entry is published, so a sibling
        waiting for it finds the entry; at once when nothing will be written.
        """
        disk, result, current, unchanged = self._disk, outcome.entry, outcome.current, outcome.unchanged
        assert disk is not None
        if result is not None and unchanged and current is not None and current.file is not None:
            release(lock)
            disk.release(ticket)
            await disk.renew(result)
        elif result is not None and result.body is not None and result.file is None and not unchanged:
            if disk.fits(result):
                self._background.spawn(self._write_through(disk, ticket, result, lock))  # off the path
            else:
                release(lock)
                await disk.store(ticket, None)
        else:
            release(lock)
            disk.release(ticket)
            if outcome.gone or (result is not None and current is not None and current.file is not None):
                await disk.remove(key)  # deleted, or changed: the file on disk is stale

    def _settle_shared(self, outcome: DownloadResult, ticket: FillTicket) -> None:
        """Bring the shared tier in line, in the background: publish a new entry (which wakes the
        replicas waiting for it), renew an unchanged one, forget a changed or deleted one."""
        shared, result = self._shared, outcome.entry
        assert shared is not None
        if outcome.shared or (result is None and not outcome.gone):
            shared.release(ticket)
        elif result is not None and outcome.unchanged:
            shared.release(ticket)
            self._background.spawn(shared.renew(result))
        elif result is not None and result.body is not None and shared.fits(result):
            self._background.spawn(shared.store(ticket, result))
        elif outcome.gone or outcome.changed:
            self._background.spawn(shared.store(ticket, None))  # deleted or changed: drop the copy
        else:
            shared.release(ticket)

    async def _write_through(
        self, tier: Tier, ticket: FillTicket, entry: Entry, lock: EntryLock | None
    ) -> None:
        try:
            await tier.store(ticket, entry)
        finally:
            release(lock)

    async def _adopt(self, key: str, locked: bool) -> Entry | None:
        """A fresh entry a sibling process published on the shared disk, if there is one."""
        assert self._disk is not None
        found = await self._disk.discover(key, locked)
        if found is None:
            return None
        if time.time() - found.fetched_at >= self._config.ttl_s:
            return None  # expired: make it again rather than serve it unchecked
        entry = found.as_entry()
        if found.meta.size > self._config.max_item_bytes:
            return entry  # large: sent from the file
        try:
            body = await self._disk.read(found)
        except (FileNotFoundError, DamagedEntry):
            return None  # evicted by a sibling meanwhile, or damaged (and dropped): make it again
        return dataclasses.replace(entry, body=body)
