"""Blobs larger than `cache.max_item_bytes`: never held whole, streamed from Azure or a disk fill.

Their metadata lives in an index of its own (10,000 entries, no bodies). A request that needs
the bytes either streams its span from Azure as ranged GETs pinned to the ETag (one chunk read
ahead), or, with the disk tier on and the whole blob asked for, joins the single download of the
blob into the disk tier and reads the growing file at its own pace (`cache.disk.fill`). The bytes
the first GET already moved (`Entry.head`) start the stream or the fill, so they are not read twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncGenerator
from typing import Final

from imgproxy.cache.disk.fill import PendingFile
from imgproxy.cache.disk.locks import EntryLock, release
from imgproxy.cache.disk.tier import DiskTier
from imgproxy.cache.representation import CacheStatus, Found, Opened, Span
from imgproxy.core.background import Background
from imgproxy.core.blob import BlobMeta, Entry
from imgproxy.core.errors import BlobChanged, ImgproxyError, IncompleteBody
from imgproxy.core.lru import AsyncLRU, FillTicket
from imgproxy.core.stats import FetchStats
from imgproxy.origin import Origin

log = logging.getLogger(__name__)

INDEX_MAX_ITEMS: Final = 10_000  # metadata only: a few hundred bytes per entry


class LargeBlobs:
    """The index of large blobs and the streams and disk fills of their bytes."""

    def __init__(
        self, origin: Origin, disk: DiskTier | None, stats: FetchStats, background: Background
    ) -> None:
        self._origin = origin
        self._disk = disk
        self._stats = stats
        self._counters = stats.counters
        self._background = background
        self._index: AsyncLRU[Entry] = AsyncLRU(INDEX_MAX_ITEMS, 1, lambda _: 0)
        self._fills: dict[str, PendingFile] = {}  # being written to disk, by path

    @property
    def fills(self) -> int:
        """Downloads into the disk tier under way."""
        return len(self._fills)

    # --- the index ------------------------------------------------------------------------
    def begin_fill(self, path: str) -> FillTicket:
        return self._index.begin_fill(path)

    async def lookup(self, path: str) -> Entry | None:
        return await self._index.get(path)

    async def settle(self, ticket: FillTicket, entry: Entry | None, drop: bool) -> None:
        """Keep the metadata of a large blob just read (`entry`), or drop the path if told."""
        if entry is not None:
            # The index keeps metadata only; whether the blob is on disk is the disk tier's to say.
            entry = dataclasses.replace(entry, head=b"", file=None)
        await self._index.finish_fill(ticket, entry, drop=drop)

    async def forget(self, path: str) -> None:
        """Drop the metadata of `path` (overwritten since it was read); a fill under way goes on."""
        await self._index.pop(path)

    async def purge(self, path: str) -> bool:
        self._fills.pop(path, None)  # its readers finish; the file is not kept (ticket voided)
        return await self._index.pop(path)

    async def purge_all(self) -> None:
        self._fills.clear()
        await self._index.clear()

    # --- the bytes ------------------------------------------------------------------------
    async def open(self, found: Found, span: Span) -> Opened:
        """`span` of a large blob not on disk: from a disk fill (started or joined) or from Azure."""
        if self._fills_disk(found.key, found.meta, span):
            return await self._tail_fill(found.key, found, span)
        return await self._open_stream(found.key, found, span)

    def _fills_disk(self, path: str, meta: BlobMeta, span: Span) -> bool:
        """Whether this request is served by (starting or joining) a disk fill.

        A fill reads the whole blob: a range of a blob that is not being filled goes to Azure
        as that range alone, so 1 KiB of a 1 GiB blob moves about 1 KiB.
        """
        if self._disk is None or not self._disk.fits_size(meta.size):
            return False
        return span == (0, meta.size - 1) or path in self._fills

    async def _tail_fill(self, path: str, resolved: Found, span: Span) -> Opened:
        """Stream `span` from the disk file being filled, starting the single fill if needed."""
        assert self._disk is not None
        meta = resolved.meta
        pending = self._fills.get(path)
        if pending is None or pending.meta.etag != meta.etag or pending.failure is not None:
            pending = self._disk.pending(path, meta, self._disk.begin_fill(path))
            self._fills[path] = pending
            source = self._from_origin(path, meta, 0, meta.size - 1, resolved.head)
            self._background.spawn(self._run_fill(pending, source))
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
        return Opened(CacheStatus.MISS, stream=_chain(first, chunks))

    async def _run_fill(self, pending: PendingFile, source: AsyncGenerator[bytes, None]) -> None:
        """Download a large blob once into the disk tier while its readers tail the file."""
        path = pending.key
        disk = self._disk
        assert disk is not None
        lock: EntryLock | None = None
        try:
            if disk.shared:
                # A sibling process may be filling (or have filled) the same entry: follow its
                # file while it grows, or adopt what it published.
                lock = await disk.try_lock(path)
                if lock is None:  # an earlier fill of this process: wait; a sibling's: follow it
                    lock = await (disk.lock(path) if disk.holds(path) else disk.follow(pending))
                found = await disk.discover(path, lock.held)
                if found is not None and found.meta.etag == pending.meta.etag:
                    await source.aclose()
                    pending.adopt(found)  # readers finish from the published file
                    return
                if pending.following:  # served part of a sibling's file that was not published
                    raise IncompleteBody(f"{path}: the sibling process's download failed")
            await pending.open(shared_name=lock is not None and lock.held)
            with self._stats.origin_call("fill"):
                async with contextlib.aclosing(source) as chunks:
                    async for chunk in chunks:
                        await pending.append(chunk)
            await pending.commit()
        except BaseException as exc:
            await pending.fail(exc)
            if isinstance(exc, BlobChanged):
                await self._index.pop(path)
            if not isinstance(exc, ImgproxyError | OSError):
                raise
            log.warning("disk fill of %s failed: %s", path, exc)
        finally:
            release(lock)
            if self._fills.get(path) is pending:
                del self._fills[path]

    async def _open_stream(self, path: str, resolved: Found, span: Span) -> Opened:
        """Fetch the first chunk now (errors still become a status), the rest as it is read."""
        chunks = self._from_origin(path, resolved.meta, span[0], span[1], resolved.head)
        try:
            with self._stats.origin_call("range"):
                first = await anext(chunks)
        except BaseException:
            await chunks.aclose()
            raise
        return Opened(CacheStatus.MISS, stream=_chain(first, chunks))

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


async def _chain(first: bytes, rest: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    """`first`, then the rest; closing this closes the origin iterator (and its read-ahead)."""
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()
