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

import asyncio
import contextlib
import dataclasses
import enum
import logging
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .cache import CacheStats, FillTicket, MemoryCache
from .config import CacheConfig
from .disk_cache import DamagedEntry, DiskCache, EntryLock, OpenEntry, PendingFile
from .errors import BlobChanged, BlobNotFound, DiskTierFailed, ImgproxyError, IncompleteBody, OriginError
from .metrics import Metrics
from .origin import Blob, BlobMeta, NotModified, Origin, TooLarge
from .singleflight import SingleFlight

log = logging.getLogger(__name__)

# The indexes of large and of missing blobs hold no bodies (a few hundred bytes per entry).
INDEX_MAX_ITEMS: Final = 10_000
# Lookups of one request: a disk file that vanished or was damaged, or a blob overwritten since
# its metadata was read, makes the request look again (and each time that entry is gone).
ATTEMPTS: Final = 3

# (start, end) inclusive: the bytes a request needs, or None when it needs no body.
Span = tuple[int, int]


class _LookAgain(Exception):
    """The disk entry a request found was replaced or vanished: look the blob up again."""


class CacheStatus(enum.Enum):
    """How a response was answered, sent as `X-Cache`."""

    HIT = "HIT"
    MISS = "MISS"
    STALE = "STALE"


@dataclass(frozen=True, slots=True)
class Entry:
    """A blob version we know: body in memory, or on disk (`file`), or metadata only."""

    meta: BlobMeta
    body: bytes | None
    stored_at: float  # on the fetcher's (monotonic) clock
    file: Path | None = None
    # A large blob just read: the bytes its first GET moved. Handed to the requests of that
    # download only (never stored), so their stream or disk fill starts after them.
    head: bytes = b""


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a request gets: the blob's metadata and its body, or a stream of the span it chose."""

    meta: BlobMeta
    status: CacheStatus
    body: bytes | None
    stream: AsyncGenerator[bytes, None] | None = None
    file: Path | None = None  # the entry is a complete file of the disk tier (not opened yet)
    head: bytes = b""  # see Entry.head
    opened: OpenEntry | None = None  # that file, opened and checked: send it, then close it


def _entry_bytes(entry: Entry) -> int:
    return len(entry.body) if entry.body is not None else 0


class Fetcher:
    """Answers `resolve(path, choose)` from the memory cache or from Azure, one download per blob."""

    def __init__(
        self,
        origin: Origin,
        config: CacheConfig,
        metrics: Metrics,
        disk: DiskCache | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._origin = origin
        self._disk = disk
        self._config = config
        self._metrics = metrics
        self._counters = metrics.counters
        self._clock = clock
        self._cache: MemoryCache[Entry] = MemoryCache(config.max_items, config.max_bytes, _entry_bytes)
        self._large: MemoryCache[Entry] = MemoryCache(INDEX_MAX_ITEMS, 1, _entry_bytes)
        self._missing: MemoryCache[float] = MemoryCache(INDEX_MAX_ITEMS, 1, lambda _: 0)
        self._flights: SingleFlight[Entry] = SingleFlight()
        self._fills: dict[str, PendingFile] = {}  # large blobs being written to disk, by path
        self._background: set[asyncio.Task[None]] = set()  # fills and disk writes we own
        metrics.watch_cache(self.cache_stats)
        if disk is not None:
            metrics.watch_disk(disk.stats)

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
                elif self._fills_disk(path, resolved.meta, span):
                    answer = await self._tail_fill(path, resolved, span)
                else:
                    answer = await self._open_stream(path, resolved, span)
            except BlobChanged:
                if attempt == ATTEMPTS:
                    raise
                # Overwritten since we learnt its metadata: forget it and look again.
                await self._large.pop(path)
                continue
            except (FileNotFoundError, DamagedEntry, _LookAgain) as exc:
                if attempt == ATTEMPTS:
                    raise DiskTierFailed(path) from exc
                # Evicted or removed under us, damaged (the entry is dropped), or replaced by a
                # newer entry: look again, which asks Azure unless a good copy is there.
                if isinstance(exc, FileNotFoundError):
                    await self._forget_disk(path)
                continue
            self._count(answer.status)
            return answer
        raise AssertionError("unreachable")

    def _fills_disk(self, path: str, meta: BlobMeta, span: Span) -> bool:
        """Whether this large-blob request is served by (starting or joining) a disk fill.

        A fill reads the whole blob: a range of a blob that is not being filled goes to Azure
        as that range alone, so 1 KiB of a 1 GiB blob moves about 1 KiB.
        """
        if self._disk is None or not self._disk.fits(meta.size):
            return False
        return span == (0, meta.size - 1) or path in self._fills

    def fresh_hit(self, path: str) -> Resolved | None:
        """A fresh in-memory body, found without awaiting (the hot path, counted as a hit), or
        None: then `resolve` does the full lookup."""
        if self._cache.busy:
            return None
        entry = self._cache.get_unlocked(path)
        if entry is None or self._clock() - entry.stored_at >= self._config.ttl_s:
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
        """Drop `path` from every index; a download of it under way will not be stored."""
        self._flights.forget(path)
        self._fills.pop(path, None)  # its readers finish; the file is not kept (ticket voided)
        missing = await self._missing.pop(path)
        large = await self._large.pop(path)
        on_disk = await self._disk.remove(path) if self._disk is not None else False
        return await self._cache.pop(path) or large or missing or on_disk

    async def purge_all(self) -> int:
        """Drop everything; downloads under way will not be stored."""
        self._flights.forget_all()
        self._fills.clear()
        await self._missing.clear()
        await self._large.clear()
        on_disk = await self._disk.clear() if self._disk is not None else 0
        return max(await self._cache.clear(), on_disk)

    def cache_stats(self) -> CacheStats:
        return self._cache.stats()

    def disk_stats(self) -> dict[str, int | bool]:
        """The disk tier's size and limits for the admin API (`disk_enabled` false without one)."""
        if self._disk is None:
            return {"disk_enabled": False}
        stats = self._disk.stats()
        return {
            "disk_enabled": True,
            "disk_size": stats.items,
            "disk_bytes": stats.bytes,
            "disk_bytes_limit": stats.max_bytes,
            "disk_evictions": stats.evictions,
            "disk_corrupt": stats.corrupt,
            "disk_fills": len(self._fills),
        }

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
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _lookup(self, path: str) -> Resolved:
        now = self._clock()
        entry = await self._cache.get(path) or self._disk_entry(path, now) or await self._large.get(path)
        if entry is not None:
            overdue = now - entry.stored_at - self._config.ttl_s
            if overdue < 0:
                return Resolved(entry.meta, CacheStatus.HIT, entry.body, file=entry.file)
            return await self._revalidate(path, entry, overdue)
        missing_since = await self._missing.get(path)
        if missing_since is not None and now - missing_since < self._config.negative_ttl_s:
            self._counters.negative_hits += 1
            raise BlobNotFound(path, cached=True)
        entry = await self._flight(path, None)
        return Resolved(entry.meta, CacheStatus.MISS, entry.body, file=entry.file, head=entry.head)

    def _disk_entry(self, path: str, now: float) -> Entry | None:
        found = self._disk.get(path) if self._disk is not None else None
        if found is None:
            return None
        # The disk records wall-clock times (they survive restarts); the fetcher's clock is monotonic.
        age = max(0.0, time.time() - found.fetched_at)
        return Entry(found.meta, None, now - age, found.data)

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

    async def _fetch(self, path: str, current: Entry | None) -> Entry:
        """Download `path`, or revalidate `current`; store the outcome in the right index."""
        # Tickets are taken before the first await, so a purge from here on voids them.
        tickets = (self._cache.begin_fill(path), self._large.begin_fill(path))
        missing_ticket = self._missing.begin_fill(path)
        disk_ticket = self._disk.begin_fill(path) if self._disk is not None else None
        result: Entry | None = None
        gone = False
        lock: EntryLock | None = None
        try:
            if current is None and self._disk is not None and self._disk.shared:
                # Sibling processes share the disk: one of us downloads, the others wait and adopt;
                # but a sibling filling a large blob is not waited for: our first GET learns the
                # size, then our readers follow its file (`_run_fill`).
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
            # Store the outcome where it belongs and drop it from the other index; after a
            # failure keep what there was (a stale entry may still serve), unless the blob is gone.
            small = result if result is not None and result.body is not None else None
            large = result if result is not None and result.body is None else None
            if large is not None and (large.head or large.file is not None):
                # The index keeps metadata only; whether the blob is on disk is the disk tier's to say.
                large = dataclasses.replace(large, head=b"", file=None)
            settled = gone or result is not None
            await self._cache.finish_fill(tickets[0], small, drop=settled)
            await self._large.finish_fill(tickets[1], large, drop=settled)
            await self._missing.finish_fill(missing_ticket, self._clock() if gone else None, drop=settled)
            if disk_ticket is not None:
                await self._settle_disk(path, current, result, gone, disk_ticket, lock)

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
        fresh_body = result is not None and result.body is not None and result.file is None
        if unchanged and current is not None and current.file is not None:
            _release(lock)
            disk.release(ticket)
            await disk.touch(path, time.time())
        elif (
            fresh_body
            and result is not None
            and result.body is not None
            and not unchanged
            and disk.fits(result.meta.size)
        ):
            self._own(
                self._store(path, result.meta, result.body, ticket, lock)
            )  # write-through, off the path
        else:
            _release(lock)
            disk.release(ticket)
            if gone or (result is not None and current is not None and current.file is not None):
                await disk.remove(path)  # deleted, or changed: the file on disk is stale

    async def _store(
        self, path: str, meta: BlobMeta, body: bytes, ticket: FillTicket, lock: EntryLock | None
    ) -> None:
        assert self._disk is not None
        try:
            await self._disk.store(path, meta, body, ticket)
        finally:
            _release(lock)

    async def _adopt(self, path: str, locked: bool) -> Entry | None:
        """A fresh entry a sibling process published on the shared disk, if there is one."""
        assert self._disk is not None
        found = await self._disk.discover(path, locked)
        if found is None:
            return None
        age = max(0.0, time.time() - found.fetched_at)
        if age >= self._config.ttl_s:
            return None  # expired: download it again rather than serve it unchecked
        stored_at = self._clock() - age
        if found.meta.size > self._config.max_item_bytes:
            return Entry(found.meta, None, stored_at, found.data)
        try:
            body = await self._disk.read(found)
        except (FileNotFoundError, DamagedEntry):
            return None  # evicted by a sibling meanwhile, or damaged (and dropped): download it
        return Entry(found.meta, body, stored_at, found.data)

    async def _read(self, path: str, current: Entry | None) -> Entry:
        limit = self._config.max_item_bytes
        if current is not None and current.body is None:
            with self._timed("revalidate"):
                meta = await self._origin.properties(path, if_none_match=current.meta.etag)
            if isinstance(meta, NotModified):
                return Entry(current.meta, None, self._clock(), current.file)
            if meta.size > limit:
                return Entry(meta, None, self._clock())
            current = None  # it shrank enough to cache: read it whole
        kind = "whole" if current is None else "revalidate"
        etag = None if current is None else current.meta.etag
        with self._timed(kind):
            outcome = await self._origin.fetch(path, limit, if_none_match=etag)
        if isinstance(outcome, NotModified):
            assert current is not None
            return Entry(current.meta, current.body, self._clock(), current.file)
        if isinstance(outcome, Blob):
            return Entry(outcome.meta, outcome.body, self._clock())
        assert isinstance(outcome, TooLarge)
        return Entry(outcome.meta, None, self._clock(), head=outcome.head)

    async def _from_disk(self, path: str, resolved: Resolved) -> Resolved:
        """A disk hit: promoted to memory when it fits there (bytes verified), else opened and
        checked for sendfile. Raises `DamagedEntry` or `FileNotFoundError` when it is not there."""
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
        ticket = self._cache.begin_fill(path)
        stored_at = self._clock() - max(0.0, time.time() - found.fetched_at)
        await self._cache.finish_fill(ticket, Entry(found.meta, body, stored_at))
        return Resolved(resolved.meta, resolved.status, body)

    async def _forget_disk(self, path: str) -> None:
        if self._disk is not None:
            self._disk.forget(path)

    async def _tail_fill(self, path: str, resolved: Resolved, span: Span) -> Resolved:
        """Stream `span` from the disk file being filled, starting the single fill if needed."""
        assert self._disk is not None
        meta = resolved.meta
        pending = self._fills.get(path)
        if pending is None or pending.meta.etag != meta.etag or pending.failure is not None:
            pending = self._disk.pending(path, meta, self._disk.begin_fill(path))
            self._fills[path] = pending
            self._own(self._run_fill(pending, self._from_origin(path, meta, 0, meta.size - 1, resolved.head)))
        elif resolved.status is CacheStatus.HIT:
            # Joined a fill from the large index. (Requests that shared the download itself were
            # counted as coalesced by the single-flight already.)
            self._counters.coalesced += 1
        chunks = pending.tail(span[0], span[1])
        try:
            first = await anext(chunks)
        except BaseException:
            await chunks.aclose()
            raise
        return Resolved(meta, CacheStatus.MISS, None, _chain(first, chunks))

    async def _run_fill(self, pending: PendingFile, source: AsyncGenerator[bytes, None]) -> None:
        """Download a large blob once into the disk tier while its readers tail the file."""
        path = pending.path
        assert self._disk is not None
        lock: EntryLock | None = None
        try:
            if self._disk.shared:
                # A sibling process may be filling (or have filled) the same entry: follow its
                # file while it grows, or adopt what it published.
                lock = await self._disk.try_lock(path)
                if lock is None:  # an earlier fill of this process: wait; a sibling's: follow it
                    disk = self._disk
                    lock = await (disk.lock(path) if disk.holds(path) else disk.follow(pending))
                found = await self._disk.discover(path, lock.held)
                if found is not None and found.meta.etag == pending.meta.etag:
                    await source.aclose()
                    pending.adopt(found)  # readers finish from the published file
                    return
                if pending.following:  # served part of a sibling's file that was not published
                    raise IncompleteBody(f"{path}: the sibling process's download failed")
            await pending.open(shared_name=lock is not None and lock.held)
            with self._timed("fill"):
                async with contextlib.aclosing(source) as chunks:
                    async for chunk in chunks:
                        await pending.append(chunk)
            await pending.commit()
        except BaseException as exc:
            await pending.fail(exc)
            if isinstance(exc, BlobChanged):
                await self._large.pop(path)
            if not isinstance(exc, ImgproxyError | OSError):
                raise
            log.warning("disk fill of %s failed: %s", path, exc)
        finally:
            _release(lock)
            if self._fills.get(path) is pending:
                del self._fills[path]

    def _own(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(_settled(self._background))

    async def _open_stream(self, path: str, resolved: Resolved, span: Span) -> Resolved:
        """Fetch the first chunk now (errors still become a status), the rest as it is read."""
        chunks = self._from_origin(path, resolved.meta, span[0], span[1], resolved.head)
        try:
            with self._timed("range"):
                first = await anext(chunks)
        except BaseException:
            await chunks.aclose()
            raise
        return Resolved(resolved.meta, CacheStatus.MISS, None, _chain(first, chunks))

    async def _from_origin(
        self, path: str, meta: BlobMeta, start: int, end: int, head: bytes
    ) -> AsyncGenerator[bytes, None]:
        """Bytes `start..end` of the blob: those already in `head` first, the rest from Azure."""
        step = self._origin.chunk_bytes
        for offset in range(start, min(end + 1, len(head)), step):
            yield head[offset : min(offset + step, end + 1, len(head))]  # a chunk-sized copy at most
        if end >= len(head):
            async with contextlib.aclosing(
                self._origin.iter_range(path, meta, max(start, len(head)), end)
            ) as rest:
                async for chunk in rest:
                    yield chunk

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


def _release(lock: EntryLock | None) -> None:
    if lock is not None:
        lock.release()


def _settled(owner: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
    """Done-callback of an owned background task: forget it, log a failure nobody awaited."""

    def done(task: asyncio.Task[None]) -> None:
        owner.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("background task failed: %s: %s", type(exc).__name__, exc)

    return done


async def _chain(first: bytes, rest: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    """`first`, then the rest; closing this closes the origin iterator (and its read-ahead)."""
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()
