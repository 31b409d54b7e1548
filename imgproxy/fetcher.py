"""Cache-or-origin orchestration: the memory cache first, then one coalesced download.

A blob small enough (`cache.max_item_bytes`) is read whole by a download that a `SingleFlight`
owns, stored in the memory cache and handed to every waiter. A larger blob is never held whole:
the download stops after the first GET, remembers the blob's metadata in a small index of large
blobs, and every waiter streams the bytes from Azure on its own (in parallel, not one after the
other). Purges void downloads already under way (see `cache.FillTicket`).
"""

from __future__ import annotations

import contextlib
import enum
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass
from typing import Final

from .cache import CacheStats, MemoryCache
from .config import CacheConfig
from .errors import BlobChanged, OriginError
from .metrics import Metrics
from .origin import Blob, BlobMeta, Origin, TooLarge
from .singleflight import SingleFlight

# The index of large blobs holds metadata only (a few hundred bytes per entry).
LARGE_INDEX_MAX_ITEMS: Final = 10_000


class CacheStatus(enum.Enum):
    """How a response was answered, sent as `X-Cache`."""

    HIT = "HIT"
    MISS = "MISS"


@dataclass(frozen=True, slots=True)
class Entry:
    """A value of the memory cache (whole body) or of the large-blob index (body None)."""

    meta: BlobMeta
    body: bytes | None
    stored_at: float


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a request gets: the blob's metadata and its body, or a stream of it."""

    meta: BlobMeta
    status: CacheStatus
    body: bytes | None
    stream: AsyncGenerator[bytes, None] | None = None


def _entry_bytes(entry: Entry) -> int:
    return len(entry.body) if entry.body is not None else 0


class Fetcher:
    """Answers `resolve(path)` from the memory cache or from Azure, one download per blob."""

    def __init__(
        self,
        origin: Origin,
        config: CacheConfig,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._origin = origin
        self._config = config
        self._metrics = metrics
        self._counters = metrics.counters
        self._clock = clock
        self._cache: MemoryCache[Entry] = MemoryCache(config.max_items, config.max_bytes, _entry_bytes)
        self._large: MemoryCache[Entry] = MemoryCache(LARGE_INDEX_MAX_ITEMS, 1, _entry_bytes)
        self._flights: SingleFlight[Blob | TooLarge] = SingleFlight()
        metrics.watch_cache(self.cache_stats)

    async def resolve(self, path: str, want_body: bool = True) -> Resolved:
        """Metadata and body of `path`; a large blob's body comes as an open stream if wanted."""
        resolved = await self._lookup(path)
        if resolved.body is not None or not want_body:
            return resolved
        try:
            return await self._open_stream(path, resolved)
        except BlobChanged:
            # Overwritten since we learnt its metadata: forget it and look again, once.
            await self._large.pop(path)
            resolved = await self._lookup(path)
            return resolved if resolved.body is not None else await self._open_stream(path, resolved)

    async def purge(self, path: str) -> bool:
        """Drop `path` from the cache; a download of it under way will not be stored."""
        self._flights.forget(path)
        large = await self._large.pop(path)
        return await self._cache.pop(path) or large

    async def purge_all(self) -> int:
        """Drop everything; downloads under way will not be stored."""
        self._flights.forget_all()
        await self._large.clear()
        return await self._cache.clear()

    def cache_stats(self) -> CacheStats:
        return self._cache.stats()

    def counters(self) -> dict[str, int]:
        """Hits, misses, coalesced waiters and origin requests so far."""
        return self._counters.as_dict()

    def in_flight(self) -> int:
        """Downloads currently running for the cache."""
        return len(self._flights)

    async def close(self) -> None:
        await self._flights.close()

    async def _lookup(self, path: str) -> Resolved:
        now = self._clock()
        entry = await self._cache.get(path)
        if entry is not None and now - entry.stored_at < self._config.ttl_s:
            self._counters.hits += 1
            return Resolved(entry.meta, CacheStatus.HIT, entry.body)
        self._counters.misses += 1
        known = await self._large.get(path)
        if known is not None and now - known.stored_at < self._config.ttl_s:
            return Resolved(known.meta, CacheStatus.MISS, None)
        outcome = await self._flights.do(path, lambda: self._download(path))
        if outcome.shared:
            self._counters.coalesced += 1
        result = outcome.value
        return Resolved(result.meta, CacheStatus.MISS, result.body if isinstance(result, Blob) else None)

    async def _download(self, path: str) -> Blob | TooLarge:
        # Tickets are taken before the first await, so a purge from here on voids them.
        ticket = self._cache.begin_fill(path)
        large_ticket = self._large.begin_fill(path)
        entry: Entry | None = None
        known: Entry | None = None
        try:
            with self._timed("whole"):
                result = await self._origin.fetch(path, self._config.max_item_bytes)
            if isinstance(result, Blob):
                entry = Entry(result.meta, result.body, self._clock())
            else:
                known = Entry(result.meta, None, self._clock())
            return result
        finally:
            await self._cache.finish_fill(ticket, entry)
            await self._large.finish_fill(large_ticket, known)

    async def _open_stream(self, path: str, resolved: Resolved) -> Resolved:
        """Fetch the first chunk now (errors still become a status), the rest as it is read."""
        meta = resolved.meta
        chunks = self._origin.iter_range(path, meta, 0, meta.size - 1)
        try:
            with self._timed("range"):
                first = await anext(chunks)
        except BaseException:
            await chunks.aclose()
            raise
        return Resolved(meta, resolved.status, None, _chain(first, chunks))

    @contextlib.contextmanager
    def _timed(self, kind: str) -> Iterator[None]:
        self._counters.origin_fetches += 1
        started = time.perf_counter()
        try:
            yield
        except OriginError:
            self._counters.origin_errors += 1
            raise
        finally:
            self._metrics.origin_seconds.labels(kind).observe(time.perf_counter() - started)


async def _chain(first: bytes, rest: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    """`first`, then the rest; closing this closes the origin iterator (and its read-ahead)."""
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()
