"""The disk tier: originals and variants kept on local disk across restarts, bounded by bytes,
least recently used evicted first (files in `files`, writes in `fill`, locks in `locks`,
the start-up scan in `scan`).

Writes go to a temporary file that is renamed into place; the data file is renamed first and the
`.meta` file last, so an entry exists only once both are complete. On start the index is rebuilt
from the `.meta` files; temporaries, orphans and entries whose data file is missing, unreadable
or not the file that was written (size, modification time) are deleted.

The files are untrusted (`cache.disk.integrity`): a hit opens the data file and checks its `fstat` against
the entry before anything is sent, a read into memory checks the bytes against Content-MD5 or the
digest recorded at write time, and a mismatch drops the entry (`damaged`) so the caller asks Azure.
Purges void writes under way through fill tickets, as in the memory tier.

Shared between processes (`server.workers` > 1): every worker indexes the same directory. The
supervisor cleans it once before the workers start (a worker's own scan deletes nothing, since a
sibling may be mid-write). A download takes the entry's lock file, so a sibling that wants the
same entry waits for it and then `discover`s the published entry instead of asking Azure again.
Each worker evicts within its share of `disk.max_bytes`; every file is in its writer's index until
deleted, so the directory stays under the whole bound. A file a sibling evicted is noticed when
opening it fails, and looked up again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Final

import aiofiles.os

from imgproxy.cache.disk.files import (
    TMP_SUFFIX,
    Damage,
    DamagedEntry,
    DiskEntry,
    Layout,
    OpenEntry,
    delete_entry,
    meta_json,
    open_raw,
    read_verified,
    same_file,
    write_atomically,
)
from imgproxy.cache.disk.fill import PendingFile, follow
from imgproxy.cache.disk.integrity import identity_mismatch
from imgproxy.cache.disk.locks import EntryLock, Locks
from imgproxy.cache.disk.scan import scan
from imgproxy.cache.tier import VariantIndex
from imgproxy.config import DiskConfig
from imgproxy.core.blob import BlobMeta, Entry, path_of
from imgproxy.core.lru import LRU, FillTicket, TicketBook
from imgproxy.core.stats import DiskFigures, DiskStats

log = logging.getLogger(__name__)

NAME: Final = "disk"


class DiskTier:
    """Index and files of the disk tier for one container."""

    name = NAME

    def __init__(self, config: DiskConfig, container: str, shared: bool = False) -> None:
        self.root = Path(config.path).resolve()
        self.max_item_bytes = config.max_item_bytes
        self.shared = shared  # sibling processes use the same directory
        self.locks = Locks(config.lock_timeout_s)
        self._layout = Layout(self.root, container)
        self._container = container
        self._index: LRU[DiskEntry] = LRU(2**62, config.max_bytes, lambda e: e.meta.size)
        self._index.on_evict = self._evicted
        self._variants = VariantIndex()
        self._tickets = TicketBook(path_of)
        self._deletions: set[asyncio.Task[None]] = set()
        self.discarded_at_start = 0
        self.corrupt = 0

    # --- lifecycle ------------------------------------------------------------------------
    async def open(self) -> None:
        """Create the directory and rebuild the index from what is on disk."""
        scanned = await asyncio.to_thread(scan, self.root, self._layout, not self.shared)
        self.discarded_at_start += scanned.discarded
        for _, entry in sorted(scanned.entries, key=lambda e: e[0]):
            self._put(entry)

    async def close(self) -> None:
        """Wait for evicted files still being deleted."""
        if self._deletions:
            await asyncio.wait(list(self._deletions))

    # --- the Tier interface -----------------------------------------------------------------
    def begin_fill(self, key: str) -> FillTicket:
        """A ticket that a purge of the key's path voids (take it before the download starts)."""
        return self._tickets.issue(key)

    def release(self, ticket: FillTicket) -> None:
        self._tickets.release(ticket)

    def fits(self, entry: Entry) -> bool:
        return self.fits_size(entry.meta.size)

    def fits_size(self, size: int) -> bool:
        return size <= self.max_item_bytes and size <= self._index.max_bytes

    async def lookup(self, key: str) -> Entry | None:
        found = self.get(key)
        return None if found is None else found.as_entry()

    def get(self, key: str) -> DiskEntry | None:
        """The entry for `key` (marked most recently used), or None."""
        return self._index.get(key)

    async def store(self, ticket: FillTicket, entry: Entry | None) -> bool:
        """Write a whole body (write-through of a small blob or a variant); with None (or an entry
        without a body) delete what is kept of the ticket's key."""
        if entry is None or entry.body is None:
            if self._tickets.release(ticket):
                await self.remove(ticket.key)
            return False
        pending = self.pending(entry.key, entry.meta, ticket, entry.source_etag)
        try:
            await pending.open()
            await pending.append(entry.body)
            return await pending.commit()
        except BaseException as exc:
            await pending.fail(exc)
            raise

    async def renew(self, entry: Entry) -> None:
        """Record that `entry.key` was revalidated unchanged (rewrites its metadata)."""
        found = self._index.get(entry.key)
        if found is None or found.meta.etag != entry.meta.etag:
            return
        renewed = dataclasses.replace(found, fetched_at=entry.fetched_at)
        await self._write_meta(renewed)
        if self._index.peek(entry.key) is found:
            self._put(renewed)

    async def remove(self, key: str) -> bool:
        """Forget `key` and delete its files; void writes of it under way."""
        self._tickets.void(key)
        entry = self._pop(key)
        await delete_entry(self._layout.data_path(key))
        return entry is not None

    async def purge(self, path: str, variants_only: bool = False) -> bool:
        """Forget `path` and its variants (or only those) and delete their files, whichever
        process wrote them (the variants' directory goes whole); void their writes under way."""
        self._tickets.void_group(path, (lambda key: key != path) if variants_only else None)
        removed = [self._index.pop(key) for key in self._variants.pop(path)]
        original = self._layout.data_path(path)
        await asyncio.to_thread(shutil.rmtree, Layout.variants_dir(original), ignore_errors=True)
        if not variants_only:
            removed.append(self._pop(path))
            await delete_entry(original)
        return any(entry is not None for entry in removed)

    async def purge_all(self) -> int:
        """Forget everything and delete every entry's files; void every write under way."""
        self._tickets.void_all()
        entries = self._index.items()
        self._index.clear()
        self._variants.clear()
        for _, entry in entries:
            await delete_entry(entry.data)
        return len(entries)

    def stats(self) -> DiskFigures:
        index = self._index
        return DiskFigures(
            len(index), index.bytes, index.max_bytes, index.evictions, self.corrupt, len(self._variants)
        )

    def disk_stats(self) -> DiskStats:
        index = self._index
        return DiskStats(
            len(index), index.bytes, index.max_bytes, index.evictions, self.discarded_at_start, self.corrupt
        )

    # --- shared directory: siblings' entries and locks ------------------------------------
    async def discover(self, key: str, locked: bool = False) -> DiskEntry | None:
        """An entry of `key` a sibling process published since our index was built (indexed now).

        `locked`: the caller holds the entry's lock, so no sibling is half-way through publishing
        it, and metadata that does not describe its data file means damage (dropped, counted).
        """
        data = self._layout.data_path(key)
        entry, damage = await asyncio.to_thread(self._layout.inspect, Layout.meta_path(data), data)
        if damage is not None and locked and damage.entry.key == key:
            self._pop(key)
            await self._report_damage(damage)
        if entry is None or entry.key != key:
            return None
        self._put(entry)
        return entry

    async def lock(self, key: str) -> EntryLock:
        """`key`'s lock, waiting at most `disk.lock_timeout_s` for a sibling (then not held)."""
        return await self.locks.lock(key, self._lock_file(key))

    async def try_lock(self, key: str) -> EntryLock | None:
        """`key`'s lock if it is free now, else None."""
        return await self.locks.try_lock(key, self._lock_file(key))

    def holds(self, key: str) -> bool:
        return self.locks.holds(key)

    async def follow(self, pending: PendingFile) -> EntryLock:
        """Serve `pending`'s readers from a sibling's fill of the same version (`fill.follow`)."""
        return await follow(self.locks, pending, self._lock_file(pending.key))

    async def sibling_filling(self, key: str) -> bool:
        """True if a fill file of `key` exists (a process holding its lock is writing a large blob)."""
        data = self._layout.data_path(key)
        pattern = f"{data.name}.*.fill{TMP_SUFFIX}"
        return await asyncio.to_thread(lambda: any(data.parent.glob(pattern)))

    # --- reading entries ------------------------------------------------------------------
    async def read(self, entry: DiskEntry) -> bytes:
        """The whole body of a (small) entry, for promotion to memory, checked against the entry
        (identity, then content). Raises `DamagedEntry` (entry dropped) or `FileNotFoundError`."""
        opened = await self.open_entry(entry)
        reading = asyncio.ensure_future(asyncio.to_thread(read_verified, opened.file, entry))
        try:
            body, damage = await asyncio.shield(reading)
        except asyncio.CancelledError:
            reading.add_done_callback(lambda _: opened.close())  # not under the thread's feet
            raise
        opened.close()
        if damage is not None:
            await opened.damaged(damage)
            raise DamagedEntry(entry.key)
        return body

    async def open_entry(self, entry: DiskEntry) -> OpenEntry:
        """The entry's data file, opened and checked against the entry by `fstat` (no byte read).

        A mismatch drops the entry and raises `DamagedEntry`, unless the entry was replaced
        meanwhile (republished here, or by a sibling process on a shared disk): then the new entry
        is indexed and `FileNotFoundError` says "look again", as for a file that vanished.
        """
        file = await open_raw(entry.data)
        try:
            stat = os.fstat(file.fileno())
            damage = identity_mismatch(entry.identity, stat)
            if damage is not None and await self._replaced(entry):
                raise FileNotFoundError(entry.data)
        except BaseException:
            file.close()
            raise
        opened = OpenEntry(entry, file, stat, self.damaged)
        if damage is None:
            return opened
        opened.close()
        # On a shared disk a sibling publishing a new version renames its data file in before its
        # metadata: while it holds the entry's lock, a mismatch may be that, not damage.
        lock = await self.try_lock(entry.key) if self.shared else None
        if self.shared and lock is None:
            raise FileNotFoundError(entry.data)
        try:
            await opened.damaged(damage)
        finally:
            if lock is not None:
                lock.release()
        raise DamagedEntry(entry.key)

    async def damaged(self, entry: DiskEntry, reason: str, stat: os.stat_result | None = None) -> None:
        """Drop an entry whose file is not what was written: once, logged and counted."""
        if self._index.peek(entry.key) is not entry:
            return  # dropped (or replaced) already: reported by whoever did it
        self._pop(entry.key)
        await self._report_damage(Damage(entry, reason, stat))

    def forget(self, key: str, entry: DiskEntry | None = None) -> None:
        """Drop `key` (only if it is still `entry`, when given) from the index only: its file
        vanished under us. Writes under way go on."""
        if entry is None or self._index.peek(key) is entry:
            self._pop(key)

    # --- writing entries ------------------------------------------------------------------
    def pending(
        self, key: str, meta: BlobMeta, ticket: FillTicket, source_etag: str | None = None
    ) -> PendingFile:
        """A write of `meta.size` bytes of `key` (call `open` on it before appending)."""
        return PendingFile(self, key, meta, self._layout.data_path(key), ticket, source_etag)

    async def publish(self, pending: PendingFile) -> bool:
        """Rename a finished temporary into place and index it, unless its ticket was voided."""
        if not pending.ticket.valid:
            return False
        assert pending.identity is not None
        entry = DiskEntry(
            pending.key,
            pending.meta,
            time.time(),
            pending.data,
            pending.identity,
            pending.digest,
            pending.source_etag,
        )
        await aiofiles.os.replace(pending.tmp, pending.data)  # a rename keeps the mtime recorded
        await self._write_meta(entry)
        if not self._tickets.release(pending.ticket):
            await delete_entry(pending.data)  # purged while we renamed
            return False
        return self._put(entry)

    # --- internals ------------------------------------------------------------------------
    def _lock_file(self, key: str) -> Path:
        return Layout.lock_path(self._layout.data_path(key))

    def _put(self, entry: DiskEntry) -> bool:
        self._variants.add(entry.key)
        if self._index.put(entry.key, entry):
            return True
        self._variants.discard(entry.key)
        return False

    def _pop(self, key: str) -> DiskEntry | None:
        self._variants.discard(key)
        return self._index.pop(key)

    def _evicted(self, key: str, entry: DiskEntry) -> None:
        self._variants.discard(key)
        task = asyncio.get_running_loop().create_task(delete_entry(entry.data))
        self._deletions.add(task)
        task.add_done_callback(self._deletions.discard)

    async def _replaced(self, entry: DiskEntry) -> bool:
        """Whether the index, or (shared) the entry's metadata on disk, now describes another file."""
        current = self._index.peek(entry.key)
        if current is not None and current is not entry:
            return True
        if not self.shared:
            return False
        reloaded, _ = await asyncio.to_thread(self._layout.inspect, Layout.meta_path(entry.data), entry.data)
        if reloaded is None or reloaded.key != entry.key or reloaded.identity == entry.identity:
            return False
        self._put(reloaded)
        return True

    async def _report_damage(self, damage: Damage) -> None:
        """Count and log `damage`, and delete the entry's files while they are still the damaged
        ones (`stat` of the descriptor that showed it): a sibling may already have dropped them
        and published a good copy."""
        entry = damage.entry
        self.corrupt += 1
        log.warning("disk entry of %r is damaged (%s): dropped, %s", entry.key, damage.reason, entry.data)
        if damage.stat is None or await asyncio.to_thread(same_file, entry.data, damage.stat):
            await delete_entry(entry.data)

    async def _write_meta(self, entry: DiskEntry) -> None:
        text = json.dumps(meta_json(self._container, entry))
        # One thread call writes, fsyncs and renames: a cancellation cannot leave a file open.
        await asyncio.to_thread(write_atomically, Layout.meta_path(entry.data), text.encode())
