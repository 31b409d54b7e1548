"""Cache-or-origin orchestration: the tiers in order, freshness, revalidation, coalesced downloads.

Lookup order: the memory tier, the disk tier, the index of large blobs (`large`), then Azure. A
blob small enough (`cache.max_item_bytes`) is read whole by a download that a `SingleFlight`
owns, stored in every tier it fits and handed to every waiter. A larger blob is never held whole:
the download stops after the first GET, its metadata goes into the large index, and every waiter
streams the bytes it needs (`large`). The fetcher knows the tiers through `tiers.Tier` only, plus
what only the disk tier does: files to send, and sibling processes to coalesce with.

Freshness (`cache.ttl_s`): a fresh entry is a HIT. An expired one is revalidated with a
conditional request (ETag, If-None-Match), coalesced per blob like a download. Within
`cache.stale_while_revalidate_s` of expiry the stale entry is served at once and the revalidation
runs in the background; when Azure fails, a stale entry younger than `cache.stale_if_error_s`
past expiry is served instead of the error. A 404 is remembered for `cache.negative_ttl_s`.
Purges void downloads already under way (see `cache.FillTicket`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Final

from .background import Background
from .cache import FillTicket, MemoryCache
from .config import CacheConfig
from .errors import BlobChanged, BlobNotFound, DiskTierFailed, ImgproxyError, OriginError
from .large import INDEX_MAX_ITEMS, LargeBlobs
from .metrics import Metrics
from .origin import Blob, BlobMeta, NotModified, Origin, TooLarge
from .resolved import CacheStatus, Resolved, Span
from .singleflight import SingleFlight
from .tiers import Entry, Tier
from .tiers.disk import DiskTier
from .tiers.disk_files import DamagedEntry
from .tiers.disk_locks import EntryLock, release
from .tiers.memory import MemoryTier

__all__ = ["CacheStatus", "Fetcher", "Resolved", "Span"]

log = logging.getLogger(__name__)

# Lookups of one request: a disk file that vanished or was damaged, or a blob overwritten since
# its metadata was read, makes the request look again (and each time that entry is gone).
ATTEMPTS: Final = 3


class _LookAgain(Exception):
    """The disk entry a request found was replaced or vanished: look the blob up again."""


class Fetcher:
    """Answers `resolve(path, choose)` from the tiers or from Azure, one download per blob."""

    def __init__(
        self, origin: Origin, config: CacheConfig, metrics: Metrics, disk: DiskTier | None = None
    ) -> None:
        self._origin = origin
        self._config = config
        self._metrics = metrics
        self._counters = metrics.counters
        self._background = Background()  # write-throughs and disk fills
        self._memory = MemoryTier(config)
        self._disk = disk
        self._tiers: tuple[Tier, ...] = (self._memory,) if disk is None else (self._memory, disk)
        self._large = LargeBlobs(origin, disk, metrics, self._background)
        self._missing: MemoryCache[float] = MemoryCache(INDEX_MAX_ITEMS, 1, lambda _: 0)
        self._flights: SingleFlight[Entry] = SingleFlight()
        metrics.watch_cache(self._memory.cache_stats)
        if disk is not None:
            metrics.watch_disk(disk.disk_stats)

    async def resolve(self, path: str, choose: Callable[[BlobMeta], Span | None]) -> Resolved:
        """Metadata of `path`, and the body span `choose(meta)` asks for (streamed if large)."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                resolved = await self._lookup(path)
            except ImgproxyError as exc:
                if not (isinstance(exc, BlobNotFound) and exc.cached):
                    self._counters.misses += 1
                raise
            span = choose(resolved.meta)
            if span is None or resolved.body is not None:
                self._count(resolved.status)
                return resolved
            try:
                if resolved.file is not None:
                    answer = await self._from_disk(path, resolved)
                else:
                    answer = await self._large.serve(path, resolved, span)
            except BlobChanged:
                if attempt == ATTEMPTS:
                    raise
                # Overwritten since we learnt its metadata: forget it and look again.
                await self._large.forget(path)
                continue
            except (FileNotFoundError, DamagedEntry, _LookAgain) as exc:
                if attempt == ATTEMPTS:
                    raise DiskTierFailed(path) from exc
                # Evicted or removed under us, damaged (the entry is dropped), or replaced by a
                # newer entry: look again, which asks Azure unless a good copy is there.
                if isinstance(exc, FileNotFoundError) and self._disk is not None:
                    self._disk.forget(path)
                continue
            self._count(answer.status)
            return answer
        raise AssertionError("unreachable")

    def fresh_hit(self, path: str) -> Resolved | None:
        """A fresh in-memory body, found without awaiting (the hot path, counted as a hit), or
        None: then `resolve` does the full lookup."""
        entry = self._memory.peek(path)
        if entry is None or time.time() - entry.fetched_at >= self._config.ttl_s:
            return None
        self._counters.hits += 1
        return Resolved(entry.meta, CacheStatus.HIT, entry.body)

    def _count(self, status: CacheStatus) -> None:
        if status is CacheStatus.HIT:
            self._counters.hits += 1
        elif status is CacheStatus.MISS:
            self._counters.misses += 1
        else:
            self._counters.stale += 1

    async def purge(self, path: str) -> bool:
        """Drop `path` and its variants from every tier; a download of it under way will not be stored."""
        self._flights.forget(path)
        removed = [await self._large.purge(path), await self._missing.pop(path)]
        removed += [await tier.purge(path) for tier in self._tiers]
        return any(removed)

    async def purge_all(self) -> int:
        """Drop everything; downloads under way will not be stored."""
        self._flights.forget_all()
        await self._large.purge_all()
        await self._missing.clear()
        return max([await tier.purge_all() for tier in self._tiers])

    def stats(self) -> dict[str, int | bool]:
        """Sizes, limits and counters of every tier for the admin API (`disk_enabled` false without one)."""
        body: dict[str, int | bool] = {**self._memory.stats(), "in_flight": self.in_flight()}
        body.update(self._counters.as_dict())
        if self._disk is None:
            body["disk_enabled"] = False
        else:
            body.update(self._disk.stats())
            body["disk_fills"] = self._large.fills
        return body

    def counters(self) -> dict[str, int]:
        """Hits, misses, coalesced waiters, origin requests and the like, so far."""
        return self._counters.as_dict()

    def disk_stats(self) -> dict[str, int | bool]:
        """The disk tier's part of `stats`."""
        return {k: v for k, v in self.stats().items() if k.startswith("disk_")}

    def waiting(self, path: str) -> int:
        """Requests currently waiting on the download or revalidation of `path`."""
        return self._flights.waiting(path)

    def in_flight(self) -> int:
        """Downloads and revalidations currently running."""
        return len(self._flights)

    async def close(self) -> None:
        await self._flights.close()
        await self._background.close()

    # --- lookups --------------------------------------------------------------------------
    async def _lookup(self, path: str) -> Resolved:
        now = time.time()
        entry = await self._memory.lookup(path) or self._on_disk(path) or await self._large.lookup(path)
        if entry is not None:
            overdue = entry.age(now) - self._config.ttl_s
            if overdue < 0:
                return Resolved(entry.meta, CacheStatus.HIT, entry.body, file=entry.file)
            return await self._revalidate(path, entry, overdue)
        missing_since = await self._missing.get(path)
        if missing_since is not None and now - missing_since < self._config.negative_ttl_s:
            self._counters.negative_hits += 1
            raise BlobNotFound(path, cached=True)
        entry = await self._flight(path, None)
        return Resolved(entry.meta, CacheStatus.MISS, entry.body, file=entry.file, head=entry.head)

    def _on_disk(self, path: str) -> Entry | None:
        found = self._disk.get(path) if self._disk is not None else None
        return None if found is None else found.as_entry()

    async def _revalidate(self, path: str, stale: Entry, overdue: float) -> Resolved:
        if overdue < self._config.stale_while_revalidate_s:
            self._flights.launch(path, lambda: self._refresh_quietly(path, stale))
            return Resolved(stale.meta, CacheStatus.STALE, stale.body, file=stale.file)
        try:
            entry = await self._flight(path, stale)
        except OriginError as exc:
            if overdue < self._config.stale_if_error_s:
                log.warning("serving stale %s: %s", path, exc)
                return Resolved(stale.meta, CacheStatus.STALE, stale.body, file=stale.file)
            raise
        unchanged = entry.meta.etag == stale.meta.etag
        status = CacheStatus.HIT if unchanged else CacheStatus.MISS
        return Resolved(entry.meta, status, entry.body, file=entry.file, head=entry.head)

    async def _flight(self, path: str, current: Entry | None) -> Entry:
        outcome = await self._flights.do(path, lambda: self._fetch(path, current))
        if outcome.shared:
            self._counters.coalesced += 1
        return outcome.value

    async def _refresh_quietly(self, path: str, current: Entry) -> Entry:
        try:
            return await self._fetch(path, current)
        except ImgproxyError as exc:  # a background refresh has no client to tell
            log.warning("background revalidation of %s failed: %s", path, exc)
            return current

    # --- downloads ------------------------------------------------------------------------
    async def _fetch(self, path: str, current: Entry | None) -> Entry:
        """Download `path`, or revalidate `current`; store the outcome in the right tiers."""
        # Tickets are taken before the first await, so a purge from here on voids them.
        tickets = [tier.begin_fill(path) for tier in self._tiers]
        large_ticket, missing_ticket = self._large.begin_fill(path), self._missing.begin_fill(path)
        result: Entry | None = None
        gone = False
        lock: EntryLock | None = None
        try:
            if current is None and self._disk is not None and self._disk.shared:
                # Sibling processes share the disk: one of us downloads, the others wait and adopt;
                # but a sibling filling a large blob is not waited for: our first GET learns the
                # size, then our readers follow its file (`large`).
                lock = await self._disk.try_lock(path)
                if lock is None and not await self._disk.sibling_filling(path):
                    lock = await self._disk.lock(path)
                if lock is not None:
                    result = await self._adopt(path, lock.held)
                    if result is not None:
                        return result
            result = await self._read(path, current)
            return result
        except BlobNotFound:
            gone = True
            raise
        finally:
            # Store the outcome where it belongs and drop it elsewhere; after a failure keep
            # what there was (a stale entry may still serve), unless the blob is gone.
            settled = gone or result is not None
            body = result if result is not None and result.body is not None else None
            large = result if result is not None and result.body is None else None
            for tier, ticket in zip(self._tiers, tickets, strict=True):
                if tier is self._disk:
                    await self._settle_disk(path, current, result, gone, ticket, lock)
                elif settled:
                    await tier.store(ticket, body if body is not None and tier.fits(body) else None)
                else:
                    tier.release(ticket)
            await self._large.settle(large_ticket, large, drop=settled)
            await self._missing.finish_fill(missing_ticket, time.time() if gone else None, drop=settled)

    async def _settle_disk(
        self,
        path: str,
        current: Entry | None,
        result: Entry | None,
        gone: bool,
        ticket: FillTicket,
        lock: EntryLock | None,
    ) -> None:
        """Bring the disk tier in line with a download or revalidation that just ended.

        The entry's lock (shared disk only) is released once the entry is published, so a sibling
        waiting for it finds the entry; at once when nothing will be written.
        """
        disk = self._disk
        assert disk is not None
        unchanged = result is not None and current is not None and result.meta.etag == current.meta.etag
        if result is not None and unchanged and current is not None and current.file is not None:
            release(lock)
            disk.release(ticket)
            await disk.renew(path, result.fetched_at)
        elif result is not None and result.body is not None and result.file is None and not unchanged:
            if disk.fits(result):
                self._background.spawn(self._write_through(disk, ticket, result, lock))  # off the path
            else:
                release(lock)
                await disk.store(ticket, None)
        else:
            release(lock)
            disk.release(ticket)
            if gone or (result is not None and current is not None and current.file is not None):
                await disk.remove(path)  # deleted, or changed: the file on disk is stale

    async def _write_through(
        self, tier: Tier, ticket: FillTicket, entry: Entry, lock: EntryLock | None
    ) -> None:
        try:
            await tier.store(ticket, entry)
        finally:
            release(lock)

    async def _adopt(self, path: str, locked: bool) -> Entry | None:
        """A fresh entry a sibling process published on the shared disk, if there is one."""
        assert self._disk is not None
        found = await self._disk.discover(path, locked)
        if found is None:
            return None
        if time.time() - found.fetched_at >= self._config.ttl_s:
            return None  # expired: download it again rather than serve it unchecked
        entry = found.as_entry()
        if found.meta.size > self._config.max_item_bytes:
            return entry
        try:
            body = await self._disk.read(found)
        except (FileNotFoundError, DamagedEntry):
            return None  # evicted by a sibling meanwhile, or damaged (and dropped): download it
        return dataclasses.replace(entry, body=body)

    async def _read(self, path: str, current: Entry | None) -> Entry:
        limit = self._config.max_item_bytes
        if current is not None and current.body is None:
            with self._metrics.origin_call("revalidate"):
                meta = await self._origin.properties(path, if_none_match=current.meta.etag)
            if isinstance(meta, NotModified):
                return dataclasses.replace(current, fetched_at=time.time())
            if meta.size > limit:
                return Entry(path, meta, time.time())
            current = None  # it shrank enough to cache: read it whole
        kind = "whole" if current is None else "revalidate"
        etag = None if current is None else current.meta.etag
        with self._metrics.origin_call(kind):
            outcome = await self._origin.fetch(path, limit, if_none_match=etag)
        if isinstance(outcome, NotModified):
            assert current is not None
            return dataclasses.replace(current, fetched_at=time.time())
        if isinstance(outcome, Blob):
            return Entry(path, outcome.meta, time.time(), outcome.body)
        assert isinstance(outcome, TooLarge)
        return Entry(path, outcome.meta, time.time(), head=outcome.head)

    async def _from_disk(self, path: str, resolved: Resolved) -> Resolved:
        """A disk hit: promoted to memory when it fits there (bytes verified), else opened and
        checked for sendfile. Raises `DamagedEntry` or `_LookAgain` when it is not there."""
        assert self._disk is not None and resolved.file is not None
        found = self._disk.get(path)
        if found is None or found.data != resolved.file:
            raise FileNotFoundError(resolved.file)
        try:
            if resolved.meta.size > self._config.max_item_bytes:
                opened = await self._disk.open_entry(found)
                self._counters.disk_hits += 1
                return dataclasses.replace(resolved, file=None, opened=opened)
            body = await self._disk.read(found)
        except FileNotFoundError:
            self._disk.forget(path, found)  # that entry only: a newer one may be indexed now
            raise _LookAgain(path) from None
        self._counters.disk_hits += 1
        promoted = dataclasses.replace(found.as_entry(), body=body, file=None)
        await self._memory.store(self._memory.begin_fill(path), promoted)
        return Resolved(resolved.meta, resolved.status, body)
