"""Cache-or-origin orchestration: the tiers in order, freshness, revalidation, coalesced downloads.

Lookup order: the memory tier, the disk tier, the index of large blobs (`large`), then Azure. A
blob small enough (`cache.max_item_bytes`) is read whole by a download that a `SingleFlight`
owns, stored in every tier it fits and handed to every waiter. A larger blob is never held whole:
the download stops after the first GET, its metadata goes into the large index, and every waiter
streams the bytes it needs (`large`). The fetcher knows the tiers through `cache.tier.Tier` only, plus
what only the disk tier does: files to send, and sibling processes to coalesce with.

Freshness (`cache.ttl_s`): a fresh entry is a HIT. An expired one is revalidated with a
conditional request (ETag, If-None-Match), coalesced per blob like a download. Within
`cache.stale_while_revalidate_s` of expiry the stale entry is served at once and the revalidation
runs in the background; when Azure fails, a stale entry younger than `cache.stale_if_error_s`
past expiry is served instead of the error. A 404 is remembered for `cache.negative_ttl_s`.
Purges void downloads already under way (see `core.lru.FillTicket`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Final

from imgproxy.cache.disk.files import DamagedEntry
from imgproxy.cache.disk.tier import DiskTier
from imgproxy.cache.downloads import Downloads, Producer
from imgproxy.cache.large import INDEX_MAX_ITEMS, LargeBlobs
from imgproxy.cache.memory import MemoryTier
from imgproxy.cache.representation import CacheStatus, Found, Opened, Span, Superseded
from imgproxy.cache.tier import SharedTier, Tier
from imgproxy.config import CacheConfig
from imgproxy.core.background import Background
from imgproxy.core.blob import BlobMeta, Entry, path_of
from imgproxy.core.errors import (
    BlobChanged,
    BlobNotFound,
    DiskTierFailed,
    ImgproxyError,
    NotAnImage,
    OriginError,
    SourceTooLarge,
)
from imgproxy.core.lru import AsyncLRU, CacheStats
from imgproxy.core.singleflight import SingleFlight
from imgproxy.core.stats import CacheFigures, FetchStats
from imgproxy.http.paths import index_key
from imgproxy.origin import NotModified, Origin

__all__ = ["CacheStatus", "Fetcher", "Found", "Opened", "Span", "Superseded"]

log = logging.getLogger(__name__)

# Lookups of one request: a disk file that vanished or was damaged, or a blob overwritten since
# its metadata was read, makes the request look again (and each time that entry is gone).
ATTEMPTS: Final = 3


class _LookAgain(Exception):
    """The disk entry a request found was replaced or vanished: look the blob up again."""


class Fetcher:
    """Finds blobs (and variants) in the tiers or in Azure, one download per blob, and opens
    their bytes for the span a request chose."""

    def __init__(
        self,
        origin: Origin,
        config: CacheConfig,
        stats: FetchStats,
        disk: DiskTier | None = None,
        shared: Callable[[Background], SharedTier] | None = None,
    ) -> None:
        self._origin = origin
        self._config = config
        self._stats = stats
        self._counters = stats.counters
        self._background = Background()  # write-throughs and disk fills
        self._memory = MemoryTier(config)
        self._disk = disk
        self._tiers: tuple[Tier, ...] = (self._memory,) if disk is None else (self._memory, disk)
        self._large = LargeBlobs(origin, disk, stats, self._background)
        self._shared = shared(self._background) if shared is not None else None
        self._downloads = Downloads(origin, config, stats, self._tiers, disk, self._background, self._shared)
        # Missing blobs by `index_key` (10,000 digests, about 2.5 MiB, whatever the paths' length).
        self._missing: AsyncLRU[float] = AsyncLRU(INDEX_MAX_ITEMS, 1, lambda _: 0)
        self._flights: SingleFlight[Entry] = SingleFlight()

    async def find(self, path: str) -> Found:
        """What `path` is now and where its bytes are (memory, a disk file, or Azure for a large
        blob): from the tiers while fresh, else revalidated or downloaded (one download per blob)."""
        return await self._find(path)

    async def find_variant(self, key: str, produce: Producer) -> Found:
        """The variant entry of `key` from the tiers, or made by `produce` (one per key at a time),
        revalidated through `produce` once expired: freshness as for originals."""
        return await self._find(key, produce)

    async def _find(self, key: str, produce: Producer | None = None) -> Found:
        try:
            return await self._lookup(key, produce)
        except ImgproxyError as exc:
            if not (isinstance(exc, BlobNotFound) and exc.cached):
                self._counters.misses += 1  # a request the cache could not answer
            raise

    async def open(self, found: Found, span: Span) -> Opened:
        """The bytes `span` of what `find` found: a slice of memory, the disk file opened and
        checked (or read into memory, when it fits there), or a stream (the disk fill of a large
        blob, or Azure). Raises `Superseded` when they went away or changed meanwhile."""
        start, end = span
        if found.body is not None:
            whole = start == 0 and end == len(found.body) - 1
            return Opened(found.status, body=found.body if whole else memoryview(found.body)[start : end + 1])
        key = found.key
        try:
            if found.file is not None:
                return await self._from_disk(found, span)
            return await self._large.open(found, span)
        except BlobChanged as exc:
            await self._large.forget(key)  # overwritten since we learnt its metadata
            raise Superseded(exc) from exc
        except (FileNotFoundError, DamagedEntry, _LookAgain) as exc:
            # Evicted or removed under us, damaged (the entry is dropped), or replaced by a newer
            # entry: finding again asks Azure unless a good copy is there.
            if isinstance(exc, FileNotFoundError) and self._disk is not None:
                self._disk.forget(key)
            raise Superseded(DiskTierFailed(path_of(key))) from exc

    async def source(self, path: str, max_bytes: int) -> tuple[Found, Opened]:
        """The whole blob at `path` for a transform (counted as a request): its bytes in memory,
        its disk file, or a stream from Azure. Raises `SourceTooLarge` past `max_bytes`, and
        `NotAnImage` for an empty blob."""
        for attempt in range(1, ATTEMPTS + 1):
            found = await self.find(path)
            size = found.meta.size
            if size > max_bytes:
                raise SourceTooLarge(
                    f"more bytes than transform.max_src_bytes ({max_bytes})", f"{size} bytes"
                )
            if size == 0:
                raise NotAnImage("empty blob")
            try:
                opened = await self.open(found, (0, size - 1))
            except Superseded as exc:
                if attempt == ATTEMPTS:
                    raise exc.failure from exc
                continue
            self.count(opened.status)
            return found, opened
        raise AssertionError("unreachable")

    def count(self, status: CacheStatus) -> None:
        """Count one answered request by how it was answered (HIT, MISS or STALE)."""
        if status is CacheStatus.HIT:
            self._counters.hits += 1
        elif status is CacheStatus.MISS:
            self._counters.misses += 1
        else:
            self._counters.stale += 1

    async def metadata(self, path: str) -> BlobMeta:
        """The metadata of `path` (downloaded if not known), not counted as a request."""
        return (await self._lookup(path)).meta

    async def source_version(self, path: str, etag: str) -> tuple[str, float] | None:
        """The current version of `path` for a variant made from version `etag`: its ETag and when
        Azure confirmed it (None: no such blob). From the tiers while fresh there (revalidated once
        for all if expired), else one conditional request."""
        entry = await self._held(path)
        try:
            if entry is not None:
                current = await self._lookup(path, found=entry)
                return current.meta.etag, current.fetched_at
            with self._stats.origin_call("revalidate"):
                meta = await self._origin.properties(path, if_none_match=etag)
        except BlobNotFound:
            return None
        return (etag if isinstance(meta, NotModified) else meta.etag), time.time()

    async def drop_variants(self, path: str) -> None:
        """Forget every variant of `path` (its source changed): in every tier, and those being made."""
        self._flights.forget_where(lambda key: key != path and path_of(key) == path)
        for tier in self._tiers:
            await tier.purge(path, variants_only=True)
        if self._shared is not None:  # other replicas must not adopt them either; best effort
            self._background.spawn(self._shared.purge(path, variants_only=True))

    def memory_stats(self) -> CacheStats:
        """The memory tier's size and limits, for `/metrics`."""
        return self._memory.cache_stats()

    def fresh_hit(self, path: str) -> Found | None:
        """A fresh in-memory body, found without awaiting (the hot path, counted as a hit), or
        None: then `find` does the full lookup."""
        entry = self._memory.peek(path)
        if entry is None or time.time() - entry.fetched_at >= self._config.ttl_s:
            return None
        self._counters.hits += 1
        return Found(path, entry.meta, CacheStatus.HIT, entry.body)

    async def purge(self, path: str) -> bool:
        """Drop `path` and its variants from every tier; a download of it under way will not be stored."""
        self._flights.forget_where(lambda key: path_of(key) == path)
        removed = [await self._large.purge(path), await self._missing.pop(index_key(path))]
        removed += [await tier.purge(path) for tier in self._tiers]
        return any(removed)

    async def purge_all(self) -> int:
        """Drop everything; downloads under way will not be stored."""
        self._flights.forget_all()
        await self._large.purge_all()
        await self._missing.clear()
        return max([await tier.purge_all() for tier in self._tiers])

    async def purge_shared(self, path: str | None) -> None:
        """Delete the shared tier's copies of `path` and its variants (None: everything); raises
        `RedisFailure` (the caller says the purge did not reach them). Nothing without a shared tier."""
        if self._shared is None:
            return
        if path is None:
            await self._shared.purge_all()
        else:
            await self._shared.purge(path)

    def figures(self) -> CacheFigures:
        """Sizes, limits and counters of every tier, for `/admin/cache` and `/metrics`."""
        disk = None
        if self._disk is not None:
            disk = dataclasses.replace(self._disk.stats(), disk_fills=self._large.fills)
        shared = self._shared.stats() if self._shared is not None else None
        return CacheFigures(self._memory.stats(), self._counters, self.in_flight(), disk, shared)

    def stats(self) -> dict[str, int | bool]:
        """`figures()` as the admin API's JSON object."""
        return self.figures().as_json()

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
    async def _held(self, key: str, original: bool = True) -> Entry | None:
        """The entry of `key` in this process's tiers: memory, disk, and for an original the index
        of large blobs (streamed, never held whole)."""
        entry = await self._memory.lookup(key) or self._on_disk(key)
        if entry is None and original:
            entry = await self._large.lookup(key)
        return entry

    async def _lookup(self, key: str, produce: Producer | None = None, found: Entry | None = None) -> Found:
        """`key` from the tiers (`found`: already looked up), revalidated once expired; else the
        shared tier, else a download (an original) or `produce` (a variant)."""
        now = time.time()
        entry = found or await self._held(key, original=produce is None)
        if entry is not None:
            overdue = entry.age(now) - self._config.ttl_s
            if overdue < 0:
                return Found.of(entry, CacheStatus.HIT)
            return await self._revalidate(key, entry, overdue, produce)
        if produce is None:  # the negative cache holds originals
            missing_since = await self._missing.get(index_key(key))
            if missing_since is not None and now - missing_since < self._config.negative_ttl_s:
                self._counters.negative_hits += 1
                raise BlobNotFound(key, cached=True)
        shared = await self._from_shared(key, now, produce)
        if shared is not None:
            return shared
        entry = await self._flight(key, None, produce)
        return Found.of(entry, CacheStatus.MISS)

    async def _from_shared(self, key: str, now: float, produce: Producer | None = None) -> Found | None:
        """The entry of `key` another replica put in the shared tier (verified there), promoted to
        memory: a HIT while fresh, revalidated (one conditional request) once expired."""
        if self._shared is None:
            return None
        ticket = self._memory.begin_fill(key)  # before the lookup: a purge meanwhile voids it
        entry = await self._shared.lookup(key)
        if entry is None:
            self._memory.release(ticket)
            return None
        overdue = entry.age(now) - self._config.ttl_s
        if overdue >= 0:
            self._memory.release(ticket)
            return await self._revalidate(key, entry, overdue, produce)
        await self._memory.store(ticket, entry)
        return Found.of(entry, CacheStatus.HIT)

    def _on_disk(self, key: str) -> Entry | None:
        found = self._disk.get(key) if self._disk is not None else None
        return None if found is None else found.as_entry()

    async def _revalidate(
        self, key: str, stale: Entry, overdue: float, produce: Producer | None = None
    ) -> Found:
        if overdue < self._config.stale_while_revalidate_s:
            self._flights.launch(key, lambda: self._refresh_quietly(key, stale, produce))
            return Found.of(stale, CacheStatus.STALE)
        try:
            entry = await self._flight(key, stale, produce)
        except OriginError as exc:
            if overdue < self._config.stale_if_error_s:
                log.warning("serving stale %r: %s", key, exc)
                return Found.of(stale, CacheStatus.STALE)
            raise
        unchanged = entry.meta.etag == stale.meta.etag
        status = CacheStatus.HIT if unchanged else CacheStatus.MISS
        return Found.of(entry, status)

    async def _flight(self, key: str, current: Entry | None, produce: Producer | None = None) -> Entry:
        outcome = await self._flights.do(key, lambda: self._fetch(key, current, produce))
        if outcome.shared:
            self._counters.coalesced += 1
        return outcome.value

    async def _refresh_quietly(self, key: str, current: Entry, produce: Producer | None) -> Entry:
        try:
            return await self._fetch(key, current, produce)
        except ImgproxyError as exc:  # a background refresh has no client to tell
            log.warning("background revalidation of %r failed: %s", key, exc)
            return current

    async def _fetch(self, key: str, current: Entry | None, produce: Producer | None) -> Entry:
        """Make a variant (`produce`), or download the original `key`, or revalidate `current`;
        keep the outcome in the tiers and, for an original, in the large and missing indexes."""
        if produce is not None:
            made = (await self._downloads.run(key, current, produce)).entry
            assert made is not None  # a download that returns has its entry
            return made
        path = key
        # Tickets are taken before the first await, so a purge from here on voids them.
        large_ticket, missing_ticket = self._large.begin_fill(path), self._missing.begin_fill(index_key(path))
        try:
            result = await self._downloads.run(
                path, current, lambda current: self._downloads.read_original(path, current)
            )
        except BlobNotFound:  # deleted: remembered as missing; its metadata and variants go
            await self._large.settle(large_ticket, None, drop=True)
            await self._missing.finish_fill(missing_ticket, time.time(), drop=True)
            await self.drop_variants(path)
            raise
        except BaseException:  # failed: what the indexes held stays (a stale entry may still serve)
            await self._large.settle(large_ticket, None, drop=False)
            await self._missing.finish_fill(missing_ticket, None, drop=False)
            raise
        entry = result.entry
        assert entry is not None
        await self._large.settle(large_ticket, entry if entry.body is None else None, drop=True)
        await self._missing.finish_fill(missing_ticket, None, drop=True)
        if result.changed:
            await self.drop_variants(path)  # made from a version that is no more
        return entry

    async def _from_disk(self, resolved: Found, span: Span) -> Opened:
        """A disk hit: read into memory and promoted there when it fits (bytes verified), else
        opened and checked for sendfile. Raises `DamagedEntry` or `_LookAgain` when it is not there."""
        assert self._disk is not None and resolved.file is not None
        key = resolved.key
        found = self._disk.get(key)
        if found is None or found.data != resolved.file:
            raise FileNotFoundError(resolved.file)
        try:
            if resolved.meta.size > self._config.max_item_bytes:
                opened = await self._disk.open_entry(found)
                self._counters.disk_hits += 1
                return Opened(resolved.status, file=opened)
            body = await self._disk.read(found)
        except FileNotFoundError:
            self._disk.forget(key, found)  # that entry only: a newer one may be indexed now
            raise _LookAgain(key) from None
        self._counters.disk_hits += 1
        promoted = dataclasses.replace(found.as_entry(), body=body, file=None)
        await self._memory.store(self._memory.begin_fill(key), promoted)
        start, end = span
        whole = start == 0 and end == len(body) - 1
        return Opened(resolved.status, body=body if whole else memoryview(body)[start : end + 1])
