"""Cache-or-origin orchestration: memory cache, freshness, revalidation, coalesced downloads.

A blob small enough (`cache.max_item_bytes`) is read whole by a download that a `SingleFlight`
owns, stored in the memory cache and handed to every waiter. A larger blob is never held whole:
the download stops after the first GET, its metadata goes into an index of large blobs, and every
waiter streams the bytes it needs from Azure on its own (in parallel, not one after the other).

Freshness (`cache.ttl_s`): a fresh entry is a HIT. An expired one is revalidated with a
conditional request (ETag, If-None-Match), coalesced per blob like a download. Within
`cache.stale_while_revalidate_s` of expiry the stale entry is served at once and the revalidation
runs in the background; when Azure fails, a stale entry younger than `cache.stale_if_error_s`
past expiry is served instead of the error. A 404 is remembered for `cache.negative_ttl_s`.
Purges void downloads already under way (see `cache.FillTicket`).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass
from typing import Final

from .cache import CacheStats, MemoryCache
from .config import CacheConfig
from .errors import BlobChanged, BlobNotFound, ImgproxyError, OriginError
from .metrics import Metrics
from .origin import Blob, BlobMeta, NotModified, Origin, TooLarge
from .singleflight import SingleFlight

log = logging.getLogger(__name__)

# The indexes of large and of missing blobs hold no bodies (a few hundred bytes per entry).
INDEX_MAX_ITEMS: Final = 10_000

# (start, end) inclusive: the bytes a request needs, or None when it needs no body.
Span = tuple[int, int]


class CacheStatus(enum.Enum):
    """How a response was answered, sent as `X-Cache`."""

    HIT = "HIT"
    MISS = "MISS"
    STALE = "STALE"


@dataclass(frozen=True, slots=True)
class Entry:
    """A value of the memory cache (whole body) or of the large-blob index (body None)."""

    meta: BlobMeta
    body: bytes | None
    stored_at: float


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a request gets: the blob's metadata and its body, or a stream of the span it chose."""

    meta: BlobMeta
    status: CacheStatus
    body: bytes | None
    stream: AsyncGenerator[bytes, None] | None = None


def _entry_bytes(entry: Entry) -> int:
    return len(entry.body) if entry.body is not None else 0


class Fetcher:
    """Answers `resolve(path, choose)` from the memory cache or from Azure, one download per blob."""

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
        self._large: MemoryCache[Entry] = MemoryCache(INDEX_MAX_ITEMS, 1, _entry_bytes)
        self._missing: MemoryCache[float] = MemoryCache(INDEX_MAX_ITEMS, 1, lambda _: 0)
        self._flights: SingleFlight[Entry] = SingleFlight()
        metrics.watch_cache(self.cache_stats)

    async def resolve(self, path: str, choose: Callable[[BlobMeta], Span | None]) -> Resolved:
        """Metadata of `path`, and the body span `choose(meta)` asks for (streamed if large)."""
        for attempt in (1, 2):
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
                streamed = await self._open_stream(path, resolved, span)
            except BlobChanged:
                if attempt == 2:
                    raise
                # Overwritten since we learnt its metadata: forget it and look again, once.
                await self._large.pop(path)
                continue
            # Bytes from Azure are a miss, even when the metadata came from the index.
            self._count(CacheStatus.MISS)
            return streamed
        raise AssertionError("unreachable")

    def _count(self, status: CacheStatus) -> None:
        if status is CacheStatus.HIT:
            self._counters.hits += 1
        elif status is CacheStatus.MISS:
            self._counters.misses += 1
        else:
            self._counters.stale += 1

    async def purge(self, path: str) -> bool:
        """Drop `path` from every index; a download of it under way will not be stored."""
        self._flights.forget(path)
        missing = await self._missing.pop(path)
        large = await self._large.pop(path)
        return await self._cache.pop(path) or large or missing

    async def purge_all(self) -> int:
        """Drop everything; downloads under way will not be stored."""
        self._flights.forget_all()
        await self._missing.clear()
        await self._large.clear()
        return await self._cache.clear()

    def cache_stats(self) -> CacheStats:
        return self._cache.stats()

    def counters(self) -> dict[str, int]:
        """Hits, misses, coalesced waiters, origin requests and the like, so far."""
        return self._counters.as_dict()

    def waiting(self, path: str) -> int:
        """Requests currently waiting on the download or revalidation of `path`."""
        return self._flights.waiting(path)

    def in_flight(self) -> int:
        """Downloads and revalidations currently running."""
        return len(self._flights)

    async def close(self) -> None:
        await self._flights.close()

    async def _lookup(self, path: str) -> Resolved:
        now = self._clock()
        entry = await self._cache.get(path) or await self._large.get(path)
        if entry is not None:
            overdue = now - entry.stored_at - self._config.ttl_s
            if overdue < 0:
                return Resolved(entry.meta, CacheStatus.HIT, entry.body)
            return await self._revalidate(path, entry, overdue)
        missing_since = await self._missing.get(path)
        if missing_since is not None and now - missing_since < self._config.negative_ttl_s:
            self._counters.negative_hits += 1
            raise BlobNotFound(path, cached=True)
        entry = await self._flight(path, None)
        return Resolved(entry.meta, CacheStatus.MISS, entry.body)

    async def _revalidate(self, path: str, stale: Entry, overdue: float) -> Resolved:
        if overdue < self._config.stale_while_revalidate_s:
            self._flights.launch(path, lambda: self._refresh_quietly(path, stale))
            return Resolved(stale.meta, CacheStatus.STALE, stale.body)
        try:
            entry = await self._flight(path, stale)
        except OriginError as exc:
            if overdue < self._config.stale_if_error_s:
                log.warning("serving stale %s: %s", path, exc)
                return Resolved(stale.meta, CacheStatus.STALE, stale.body)
            raise
        unchanged = entry.meta.etag == stale.meta.etag
        return Resolved(entry.meta, CacheStatus.HIT if unchanged else CacheStatus.MISS, entry.body)

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

    async def _fetch(self, path: str, current: Entry | None) -> Entry:
        """Download `path`, or revalidate `current`; store the outcome in the right index."""
        # Tickets are taken before the first await, so a purge from here on voids them.
        tickets = (self._cache.begin_fill(path), self._large.begin_fill(path))
        missing_ticket = self._missing.begin_fill(path)
        result: Entry | None = None
        gone = False
        try:
            result = await self._read(path, current)
            return result
        except BlobNotFound:
            gone = True
            raise
        finally:
            # Store the outcome where it belongs and drop it from the other index; after a
            # failure keep what there was (a stale entry may still serve), unless the blob is gone.
            small = result if result is not None and result.body is not None else None
            large = result if result is not None and result.body is None else None
            settled = gone or result is not None
            await self._cache.finish_fill(tickets[0], small, drop=settled)
            await self._large.finish_fill(tickets[1], large, drop=settled)
            await self._missing.finish_fill(missing_ticket, self._clock() if gone else None, drop=settled)

    async def _read(self, path: str, current: Entry | None) -> Entry:
        limit = self._config.max_item_bytes
        if current is not None and current.body is None:
            with self._timed("revalidate"):
                meta = await self._origin.properties(path, if_none_match=current.meta.etag)
            if isinstance(meta, NotModified):
                return Entry(current.meta, None, self._clock())
            if meta.size > limit:
                return Entry(meta, None, self._clock())
            current = None  # it shrank enough to cache: read it whole
        kind = "whole" if current is None else "revalidate"
        etag = None if current is None else current.meta.etag
        with self._timed(kind):
            outcome = await self._origin.fetch(path, limit, if_none_match=etag)
        if isinstance(outcome, NotModified):
            assert current is not None
            return Entry(current.meta, current.body, self._clock())
        if isinstance(outcome, Blob):
            return Entry(outcome.meta, outcome.body, self._clock())
        assert isinstance(outcome, TooLarge)
        return Entry(outcome.meta, None, self._clock())

    async def _open_stream(self, path: str, resolved: Resolved, span: Span) -> Resolved:
        """Fetch the first chunk now (errors still become a status), the rest as it is read."""
        chunks = self._origin.iter_range(path, resolved.meta, span[0], span[1])
        try:
            with self._timed("range"):
                first = await anext(chunks)
        except BaseException:
            await chunks.aclose()
            raise
        return Resolved(resolved.meta, CacheStatus.MISS, None, _chain(first, chunks))

    @contextlib.contextmanager
    def _timed(self, kind: str) -> Iterator[None]:
        self._counters.origin_fetches += 1
        if kind == "revalidate":
            self._counters.revalidations += 1
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
