"""The disk tier: blobs kept on local disk across restarts, bounded by bytes, LRU-evicted.

Layout: `<disk.path>/<k[0:2]>/<k[2:4]>/<k>` holds the bytes and `<k>.meta` (JSON) the metadata,
where `k` is the SHA-256 of the container and the blob path: no blob name can reach outside the
directory. Writes go to a temporary file that is renamed into place; the data file is renamed
first and the `.meta` file last, so an entry exists only once both are complete. On start the
index is rebuilt from the `.meta` files; temporaries, orphans and entries whose data file is
missing, unreadable or not the file that was written (size, modification time) are deleted.

The files are untrusted (`integrity`): a hit opens the data file and checks its `fstat` against
the entry before anything is sent, a read into memory checks the bytes against Content-MD5 or the
digest recorded at write time, and a mismatch drops the entry (`damaged`) so the caller asks Azure.

A `PendingFile` is a download being written: readers can `tail` it while it grows, each at its
own pace, waking on every appended chunk. A failed or voided download leaves nothing behind.
Purges void writes under way through the same fill tickets as the memory cache.

Shared between processes (`server.workers` > 1): every worker indexes the same directory. The
supervisor cleans it once before the workers start (a worker's own scan deletes nothing, since a
sibling may be mid-write). A download takes `<k>.lock` with `flock`, so a sibling that wants the
same entry waits for it and then `discover`s the published entry instead of asking Azure again.
A large blob is written under `<k>.<etag digest>.fill.tmp` by the lock holder, and a sibling that
wants the same version does not wait: it `follow`s that file as it grows, then adopts the entry.
Each worker evicts within its share of `disk.max_bytes`; every file is in its writer's index until
deleted, so the directory stays under the whole bound. A file a sibling evicted is noticed when
opening it fails, and looked up again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import threading
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Final

import aiofiles
import aiofiles.os
import aiofiles.threadpool

from .cache import LRU, FillTicket, TicketBook
from .config import DiskConfig
from .errors import IncompleteBody
from .integrity import FileIdentity, content_mismatch, identity_mismatch, new_hasher
from .origin import BlobMeta

log = logging.getLogger(__name__)

META_SUFFIX: Final = ".meta"
TMP_SUFFIX: Final = ".tmp"
LOCK_SUFFIX: Final = ".lock"
READ_BYTES: Final = 256 * 1024  # one read of a tailing reader (its memory bound)
FOLLOW_POLL_S: Final = 0.01  # how often a sibling's growing fill file is looked at
LOCK_WAITERS: Final = 8  # threads that may block in flock at once; more waits queue for them


@dataclass(frozen=True, slots=True)
class DiskEntry:
    """A complete entry on disk."""

    path: str
    meta: BlobMeta
    fetched_at: float  # wall-clock seconds (time.time), so freshness survives a restart
    data: Path
    identity: FileIdentity  # the data file as written: checked against fstat on every hit
    digest: str | None = None  # BLAKE2b of the bytes, recorded when the blob has no Content-MD5


@dataclass(frozen=True, slots=True)
class DiskStats:
    items: int
    bytes: int
    max_bytes: int
    evictions: int
    discarded_at_start: int
    corrupt: int  # entries found damaged while serving and dropped


@dataclass(frozen=True, slots=True)
class Damage:
    """An entry whose data file is not what its metadata describes, and why."""

    entry: DiskEntry
    reason: str
    stat: os.stat_result | None  # of the damaged file, when it could be opened


class DamagedEntry(Exception):
    """An entry's file is not what was written; the entry has been dropped (ask Azure instead)."""


class DiskCache:
    """Index and files of the disk tier for one container."""

    def __init__(self, config: DiskConfig, container: str, shared: bool = False) -> None:
        self.root = Path(config.path).resolve()
        self.max_item_bytes = config.max_item_bytes
        self.shared = shared  # sibling processes use the same directory
        self._lock_timeout_s = config.lock_timeout_s
        self._waiter_slots = asyncio.Semaphore(LOCK_WAITERS)
        self._held: Counter[str] = Counter()  # entry locks this process holds, by path
        self._container = container
        self._index: LRU[DiskEntry] = LRU(2**62, config.max_bytes, lambda e: e.meta.size)
        self._index.on_evict = self._evicted
        self._tickets = TicketBook()
        self._deletions: set[asyncio.Task[None]] = set()
        self.discarded_at_start = 0
        self.corrupt = 0

    # --- lifecycle ------------------------------------------------------------------------
    async def open(self) -> None:
        """Create the directory and rebuild the index from what is on disk."""
        entries = await asyncio.to_thread(self._scan, not self.shared)
        for entry in sorted(entries, key=lambda e: e[0]):
            self._index.put(entry[1].path, entry[1])

    async def close(self) -> None:
        """Wait for evicted files still being deleted."""
        if self._deletions:
            await asyncio.wait(list(self._deletions))

    # --- lookups --------------------------------------------------------------------------
    def get(self, path: str) -> DiskEntry | None:
        """The entry for `path` (marked most recently used), or None."""
        return self._index.get(path)

    def fits(self, size: int) -> bool:
        return size <= self.max_item_bytes and size <= self._index.max_bytes

    def stats(self) -> DiskStats:
        return DiskStats(
            len(self._index),
            self._index.bytes,
            self._index.max_bytes,
            self._index.evictions,
            self.discarded_at_start,
            self.corrupt,
        )

    async def discover(self, path: str, locked: bool = False) -> DiskEntry | None:
        """An entry of `path` a sibling process published since our index was built (indexed now).

        `locked`: the caller holds the entry's lock, so no sibling is half-way through publishing
        it, and metadata that does not describe its data file means damage (dropped, counted).
        """
        data = self._data_path(self._key(path))
        entry, damage = await asyncio.to_thread(self._inspect, data.with_name(data.name + META_SUFFIX), data)
        if damage is not None and locked and damage.entry.path == path:
            self._index.pop(path)
            await self._report_damage(damage)
        if entry is None or entry.path != path:
            return None
        self._index.put(path, entry)
        return entry

    async def lock(self, path: str) -> EntryLock:
        """Take `path`'s lock file, waiting up to `disk.lock_timeout_s` for a sibling holding it.

        After the timeout the caller goes on without the lock (at worst a second download).
        """
        fd = await self._open_lock_file(path)
        try:
            if _flock_now(fd):  # uncontended: no thread needed
                return self._held_lock(path, fd, waited=False)
        except BaseException:
            os.close(fd)
            raise
        waiting: asyncio.Future[None] | None = None
        try:
            async with asyncio.timeout(self._lock_timeout_s):
                await self._waiter_slots.acquire()
                waiting = _flock_in_thread(fd)
                waiting.add_done_callback(lambda _: self._waiter_slots.release())
                await asyncio.shield(waiting)
        except BaseException as exc:
            if waiting is None:
                os.close(fd)
            else:  # the thread may still get the lock later: close the file then, which releases it
                waiting.add_done_callback(lambda _: os.close(fd))
            if isinstance(exc, TimeoutError):
                log.warning(
                    "disk lock of %s not free after %.1f s: going on without it", path, self._lock_timeout_s
                )
                return EntryLock(None, waited=True)
            raise
        return self._held_lock(path, fd, waited=True)

    async def try_lock(self, path: str) -> EntryLock | None:
        """`path`'s lock if it is free now, else None (no waiting)."""
        fd = await self._open_lock_file(path)
        try:
            if _flock_now(fd):
                return self._held_lock(path, fd, waited=False)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        return None

    async def sibling_filling(self, path: str) -> bool:
        """True if a fill file of `path` exists (a process holding its lock is writing a large blob)."""
        data = self._data_path(self._key(path))
        pattern = f"{data.name}.*.fill{TMP_SUFFIX}"
        return await asyncio.to_thread(lambda: any(data.parent.glob(pattern)))

    def holds(self, path: str) -> bool:
        """True while this process holds `path`'s lock (an earlier fill here, not a sibling's)."""
        return self._held[path] > 0

    async def follow(self, pending: PendingFile) -> EntryLock:
        """A sibling process holds the entry's lock: until it lets go, let `pending`'s readers read
        the sibling's fill file as it grows (its name carries the ETag, so only the same blob
        version is followed). Returns the lock, held, once the sibling let go (the caller adopts what
        it published, or fails, or downloads); an empty lock after `disk.lock_timeout_s` without
        progress if nothing was served yet; raises `IncompleteBody` if the sibling stalled after
        bytes were served. Polls every FOLLOW_POLL_S: a file growing in another process has no event
        to wait on (inotify is not in the standard library).
        """
        loop = asyncio.get_running_loop()
        lock_fd = await self._open_lock_file(pending.path)
        fill_fd: int | None = None
        progressed = loop.time()
        try:
            while not _flock_now(lock_fd):
                # Looked at only while the lock is held, so the file is a live sibling's, not a leftover.
                if fill_fd is None:
                    with contextlib.suppress(FileNotFoundError):
                        fill_fd = os.open(pending.shared_tmp, os.O_RDONLY)
                if fill_fd is not None:
                    size = min(os.fstat(fill_fd).st_size, pending.meta.size)
                    if size > pending.written:
                        pending.follow(size)
                        progressed = loop.time()
                if loop.time() - progressed > self._lock_timeout_s:
                    if pending.following:
                        raise IncompleteBody(f"{pending.path}: the sibling process's download stalled")
                    log.warning(
                        "disk fill of %s by a sibling made no progress: going on without it", pending.path
                    )
                    os.close(lock_fd)
                    return EntryLock(None, waited=True)
                await asyncio.sleep(FOLLOW_POLL_S)
        except BaseException:
            os.close(lock_fd)
            raise
        finally:
            if fill_fd is not None:
                os.close(fill_fd)
        return self._held_lock(pending.path, lock_fd, waited=True)

    async def _open_lock_file(self, path: str) -> int:
        data = self._data_path(self._key(path))
        await aiofiles.os.makedirs(data.parent, exist_ok=True)
        opening = asyncio.ensure_future(
            asyncio.to_thread(os.open, data.with_name(data.name + LOCK_SUFFIX), os.O_RDWR | os.O_CREAT)
        )
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_close_opened)  # the thread may still open it: close it then
            raise

    def _held_lock(self, path: str, fd: int, waited: bool) -> EntryLock:
        self._held[path] += 1

        def released() -> None:
            self._held[path] -= 1
            if self._held[path] <= 0:
                del self._held[path]

        return EntryLock(fd, waited, released)

    async def read(self, entry: DiskEntry) -> bytes:
        """The whole body of a (small) entry, for promotion to memory, checked against the entry
        (identity, then content). Raises `DamagedEntry` (entry dropped) or `FileNotFoundError`."""
        opened = await self.open_entry(entry)
        reading = asyncio.ensure_future(asyncio.to_thread(_read_verified, opened.file, entry))
        try:
            body, damage = await asyncio.shield(reading)
        except asyncio.CancelledError:
            reading.add_done_callback(lambda _: opened.close())  # not under the thread's feet
            raise
        opened.close()
        if damage is not None:
            await opened.damaged(damage)
            raise DamagedEntry(entry.path)
        return body

    async def open_entry(self, entry: DiskEntry) -> OpenEntry:
        """The entry's data file, opened and checked against the entry by `fstat` (no byte read).

        A mismatch drops the entry and raises `DamagedEntry`, unless the entry was replaced
        meanwhile (republished here, or by a sibling process on a shared disk): then the new entry
        is indexed and `FileNotFoundError` says "look again", as for a file that vanished.
        """
        file = await _open_raw(entry.data)
        try:
            stat = os.fstat(file.fileno())
            damage = identity_mismatch(entry.identity, stat)
            if damage is not None and await self._replaced(entry):
                raise FileNotFoundError(entry.data)
        except BaseException:
            file.close()
            raise
        opened = OpenEntry(self, entry, file, stat)
        if damage is not None:
            opened.close()
            await opened.damaged(damage)
            raise DamagedEntry(entry.path)
        return opened

    async def _replaced(self, entry: DiskEntry) -> bool:
        """Whether the index, or (shared) the entry's metadata on disk, now describes another file."""
        current = self._index.peek(entry.path)
        if current is not None and current is not entry:
            return True
        if not self.shared:
            return False
        meta_path = entry.data.with_name(entry.data.name + META_SUFFIX)
        reloaded = await asyncio.to_thread(self._load, meta_path, entry.data)
        if reloaded is None or reloaded.path != entry.path or reloaded.identity == entry.identity:
            return False
        self._index.put(entry.path, reloaded)
        return True

    async def damaged(self, entry: DiskEntry, reason: str, stat: os.stat_result | None = None) -> None:
        """Drop an entry whose file is not what was written: once, logged and counted."""
        if self._index.peek(entry.path) is not entry:
            return  # dropped (or replaced) already: reported by whoever did it
        self._index.pop(entry.path)
        await self._report_damage(Damage(entry, reason, stat))

    async def _report_damage(self, damage: Damage) -> None:
        """Count and log `damage`, and delete the entry's files while they are still the damaged
        ones (`stat` of the descriptor that showed it): a sibling may already have dropped them
        and published a good copy."""
        entry = damage.entry
        self.corrupt += 1
        log.warning("disk entry of %s is damaged (%s): dropped, %s", entry.path, damage.reason, entry.data)
        if damage.stat is None or await asyncio.to_thread(_same_file, entry.data, damage.stat):
            await _delete(entry.data)

    # --- writes ---------------------------------------------------------------------------
    def begin_fill(self, path: str) -> FillTicket:
        """A ticket that a purge of `path` voids (take it before the download starts)."""
        return self._tickets.issue(path)

    def release(self, ticket: FillTicket) -> None:
        """Return a ticket that will not be used to write."""
        self._tickets.release(ticket)

    def pending(self, path: str, meta: BlobMeta, ticket: FillTicket) -> PendingFile:
        """A write of `meta.size` bytes of `path` (call `open` on it before appending)."""
        return PendingFile(self, path, meta, self._data_path(self._key(path)), ticket)

    async def store(self, path: str, meta: BlobMeta, body: bytes, ticket: FillTicket) -> bool:
        """Write a whole body (write-through of a small blob)."""
        pending = self.pending(path, meta, ticket)
        try:
            await pending.open()
            await pending.append(body)
            return await pending.commit()
        except BaseException as exc:
            await pending.fail(exc)
            raise

    async def touch(self, path: str, fetched_at: float) -> None:
        """Record that `path` was revalidated unchanged (rewrites its metadata)."""
        entry = self._index.get(path)
        if entry is None:
            return
        renewed = dataclasses.replace(entry, fetched_at=fetched_at)
        await self._write_meta(renewed)
        if self._index.get(path) is entry:
            self._index.put(path, renewed)

    def forget(self, path: str, entry: DiskEntry | None = None) -> None:
        """Drop `path` (only if it is still `entry`, when given) from the index only: its file
        vanished under us. Writes under way go on."""
        if entry is None or self._index.peek(path) is entry:
            self._index.pop(path)

    async def remove(self, path: str) -> bool:
        """Forget `path` and delete its files; void writes of it under way."""
        self._tickets.void(path)
        entry = self._index.pop(path)
        await _delete(self._data_path(self._key(path)))
        return entry is not None

    async def clear(self) -> int:
        """Forget everything and delete every entry's files; void every write under way."""
        self._tickets.void_all()
        entries = self._index.items()
        self._index.clear()
        for _, entry in entries:
            await _delete(entry.data)
        return len(entries)

    # --- internals ------------------------------------------------------------------------
    def _key(self, path: str) -> str:
        return hashlib.sha256(f"{self._container}\0{path}".encode()).hexdigest()

    def _data_path(self, key: str) -> Path:
        return self.root / key[:2] / key[2:4] / key

    def _evicted(self, path: str, entry: DiskEntry) -> None:
        task = asyncio.get_running_loop().create_task(_delete(entry.data))
        self._deletions.add(task)
        task.add_done_callback(self._deletions.discard)

    async def _publish(self, pending: PendingFile) -> bool:
        """Rename a finished temporary into place and index it, unless its ticket was voided."""
        if not pending.ticket.valid:
            return False
        assert pending.identity is not None
        entry = DiskEntry(
            pending.path, pending.meta, _wall_clock(), pending.data, pending.identity, pending.digest
        )
        await aiofiles.os.replace(pending.tmp, pending.data)  # a rename keeps the mtime recorded
        await self._write_meta(entry)
        if not self._tickets.release(pending.ticket):
            await _delete(pending.data)  # purged while we renamed
            return False
        return self._index.put(pending.path, entry)

    async def _write_meta(self, entry: DiskEntry) -> None:
        meta_path = entry.data.with_name(entry.data.name + META_SUFFIX)
        text = json.dumps(_meta_json(self._container, entry))
        # One thread call writes, fsyncs and renames: a cancellation cannot leave a file open.
        await asyncio.to_thread(_write_atomically, meta_path, text.encode())

    def _scan(self, clean: bool = True) -> list[tuple[float, DiskEntry]]:
        """Read every entry on disk; unless told not to `clean` (a sibling may be writing),
        delete temporaries, orphans and incomplete entries."""
        self.root.mkdir(parents=True, exist_ok=True)
        found: list[tuple[float, DiskEntry]] = []
        metas: set[Path] = set()
        for file in self.root.glob("*/*/*"):
            if file.name.endswith(TMP_SUFFIX) and clean:
                _discard(file)
                self.discarded_at_start += 1
            elif file.name.endswith(META_SUFFIX):
                metas.add(file)
        for meta_path in metas:
            data = meta_path.with_name(meta_path.name[: -len(META_SUFFIX)])
            entry = self._load(meta_path, data)
            if entry is not None:
                with contextlib.suppress(OSError):
                    found.append((data.stat().st_atime, entry))
            elif clean:
                _discard(meta_path)
                _discard(data)
                self.discarded_at_start += 1
        if not clean:
            return found
        for file in self.root.glob("*/*/*"):
            if file.name.endswith((META_SUFFIX, LOCK_SUFFIX)):
                continue
            if file.with_name(file.name + META_SUFFIX) not in metas:
                _discard(file)  # data without metadata: a crash between the renames
                self.discarded_at_start += 1
        return found

    def _load(self, meta_path: Path, data: Path) -> DiskEntry | None:
        """The complete entry described by `meta_path`, or None if missing, foreign, incomplete or
        not the file that was written."""
        return self._inspect(meta_path, data)[0]

    def _inspect(self, meta_path: Path, data: Path) -> tuple[DiskEntry | None, Damage | None]:
        """`_load`, and when our metadata describes a data file that is not what it says (short,
        long, modified since, unreadable), why. A missing data file is not damage: a sibling
        deleting an entry removes the data first."""
        try:
            raw = json.loads(meta_path.read_text())
            entry = _entry_from_json(raw, data)
        except (OSError, ValueError, KeyError, TypeError):
            return None, None
        if raw.get("container") != self._container or self._data_path(self._key(entry.path)) != data:
            return None, None
        try:
            with data.open("rb") as file:  # unreadable (a directory, EIO, no permission): not an entry
                stat = os.fstat(file.fileno())
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            return None, Damage(entry, f"unreadable: {exc.strerror}", None)
        reason = identity_mismatch(entry.identity, stat)
        if reason is not None:
            return None, Damage(entry, reason, stat)
        return entry, None


def clean_disk(config: DiskConfig, container: str) -> int:
    """Delete temporaries, orphans and incomplete entries before workers share the directory."""
    disk = DiskCache(config, container)
    disk._scan(clean=True)
    return disk.discarded_at_start


def _flock_in_thread(fd: int) -> asyncio.Future[None]:
    """`flock(fd, LOCK_EX)` in a daemon thread, settled on the running loop.

    Not an executor: its threads are joined at exit, so one blocked behind a sibling's long fill
    would hold up a stopping worker for as long as that fill lasts.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def wait() -> None:
        error: BaseException | None = None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException as exc:
            error = exc
        try:
            loop.call_soon_threadsafe(settle, error)
        except RuntimeError:  # the loop is closed: nobody will take the lock, let it go
            os.close(fd)

    threading.Thread(target=wait, name="disk-lock", daemon=True).start()
    return done


def _flock_now(fd: int) -> bool:
    """Take the exclusive flock on `fd` if it is free; False if another descriptor holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _close_opened(opening: asyncio.Future[int]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        os.close(opening.result())


class EntryLock:
    """An entry's lock file, held (`fd`) or not got in time (None). `release` is idempotent."""

    def __init__(self, fd: int | None, waited: bool, on_release: Callable[[], None] | None = None) -> None:
        self._fd = fd
        self.waited = waited  # a sibling held it: look for its entry before downloading
        self._on_release = on_release

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock
            if self._on_release is not None:
                self._on_release()


class PendingFile:
    """A blob being written to disk; readers may tail it while it grows."""

    def __init__(self, disk: DiskCache, path: str, meta: BlobMeta, data: Path, ticket: FillTicket) -> None:
        self.disk = disk
        self.path = path
        self.meta = meta
        self.data = data
        self.ticket = ticket
        self.tmp = data.with_name(f"{data.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
        # Where a process holding the entry's lock writes, so that siblings can follow it.
        version = hashlib.sha256(meta.etag.encode()).hexdigest()[:16]
        self.shared_tmp = data.with_name(f"{data.name}.{version}.fill{TMP_SUFFIX}")
        self.written = 0
        self.failure: BaseException | None = None
        self.done = False
        self.following = False  # the file is a sibling process's: never ours to delete
        # Recorded for the integrity checks: the digest only when Azure gave no Content-MD5.
        self._hasher = new_hasher() if meta.content_md5 is None else None
        self.digest: str | None = None
        self.identity: FileIdentity | None = None
        self._file: Any = None
        self._progress = asyncio.Event()

    async def open(self, shared_name: bool = False) -> None:
        """Create the temporary file (under `shared_tmp` if we hold the entry's lock); readers
        waiting in `tail` may then open it."""
        await aiofiles.os.makedirs(self.data.parent, exist_ok=True)
        if shared_name:
            self.tmp = self.shared_tmp
            await _unlink(self.tmp)  # a crashed writer's leftover: a new inode, never truncate one
        self._file = await _open(self.tmp, "wb")
        self._notify()

    def follow(self, size: int) -> None:
        """A sibling process's fill file now holds `size` bytes: readers read it."""
        self.tmp = self.shared_tmp
        self.following = True
        self.written = size
        self._notify()

    @property
    def readable(self) -> bool:
        """The file readers open exists: ours once created, or the sibling's we follow."""
        return self._file is not None or self.following

    async def append(self, chunk: bytes) -> None:
        await self._file.write(chunk)
        await self._file.flush()  # readers tail the file through their own descriptors
        if self._hasher is not None:
            await asyncio.to_thread(self._hasher.update, chunk)  # hashlib lets go of the GIL
        self.written += len(chunk)
        self._notify()

    async def commit(self) -> bool:
        """Finish: check the length, fsync, record what was written, rename into place. False if
        voided meanwhile."""
        if self.written != self.meta.size:
            raise IncompleteBody(f"{self.path}: wrote {self.written} of {self.meta.size} bytes")
        await self._file.flush()
        await asyncio.to_thread(os.fsync, self._file.fileno())
        self.identity = FileIdentity.of(os.fstat(self._file.fileno()))
        if self._hasher is not None:
            self.digest = self._hasher.hexdigest()
        await self._file.close()
        try:
            published = await self.disk._publish(self)
        finally:
            await _unlink(self.tmp)  # still there only if it was not published
            self.done = True
            self._notify()
        return published

    def adopt(self, entry: DiskEntry) -> None:
        """A sibling process published this entry: readers read its file instead of ours."""
        self.disk.release(self.ticket)
        self.written = entry.meta.size
        self.done = True
        self._notify()

    async def fail(self, exc: BaseException) -> None:
        """Abort: every reader gets `exc`, the temporary file is deleted."""
        self.failure = exc
        self._notify()
        self.disk.release(self.ticket)
        if self._file is not None:
            with contextlib.suppress(Exception):
                await self._file.close()
        if not self.following:
            await _unlink(self.tmp)

    async def tail(self, start: int, end: int) -> AsyncGenerator[bytes, None]:
        """Bytes `start..end` (inclusive) as they arrive; raises the writer's failure if any."""
        while not self.readable and self.failure is None and not self.done:
            await self._progress.wait()  # the writer has not created the file yet
        if self.failure is not None:
            raise IncompleteBody(f"{self.path}: download failed") from self.failure
        try:
            f = await _open(self.tmp, "rb")
        except FileNotFoundError:
            # Renamed into place (or deleted) since: wait for the outcome, then read the final file.
            while self.failure is None and not self.done:
                await self._progress.wait()
            if self.failure is not None:
                raise IncompleteBody(f"{self.path}: download failed") from self.failure
            f = await _open(self.data, "rb")  # FileNotFoundError if purged meanwhile
        try:
            position = start
            while position <= end:
                while self.written <= position and self.failure is None and not self.done:
                    await self._progress.wait()
                if self.failure is not None:
                    raise IncompleteBody(f"{self.path}: download failed") from self.failure
                available = min(self.written, end + 1) - position
                await f.seek(position)
                chunk = await f.read(min(available, READ_BYTES))
                if not chunk:
                    raise IncompleteBody(f"{self.path}: file shorter than written")
                position += len(chunk)
                yield chunk
        finally:
            await f.close()

    def _notify(self) -> None:
        # Wake every waiting reader; later waiters wait on a fresh event.
        event, self._progress = self._progress, asyncio.Event()
        event.set()


class OpenEntry:
    """An entry's data file, open and checked: send it, then `close` it (idempotent)."""

    def __init__(self, disk: DiskCache, entry: DiskEntry, file: BinaryIO, stat: os.stat_result) -> None:
        self.entry = entry
        self.file = file
        self._disk = disk
        self._stat = stat

    async def damaged(self, reason: str) -> None:
        """The send came up short, or the bytes were wrong: drop the entry (logged once)."""
        await self._disk.damaged(self.entry, reason, self._stat)

    def close(self) -> None:
        self.file.close()


def _read_verified(file: BinaryIO, entry: DiskEntry) -> tuple[bytes, str | None]:
    """The whole file and, if it is not the entry's content, why not (runs in a thread)."""
    body = file.read(entry.meta.size + 1)  # one byte more shows a file that grew
    return body, content_mismatch(body, entry.meta.size, entry.meta.content_md5, entry.digest)


def _same_file(path: Path, stat: os.stat_result) -> bool:
    """Whether `path` is still the file `stat` describes (or is gone): then it may be deleted."""
    try:
        now = path.stat()
    except FileNotFoundError:
        return True
    return (now.st_dev, now.st_ino) == (stat.st_dev, stat.st_ino)


async def _open_raw(file: Path) -> BinaryIO:
    """`open(file, "rb")` in a thread, closed later if we are cancelled while it opens."""
    opening = asyncio.ensure_future(asyncio.to_thread(open, file, "rb"))
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_orphan)
        raise


async def _open(file: Path, mode: str) -> Any:
    """`aiofiles.open` that cannot leak: if we are cancelled while the thread opens the file,
    the file is closed as soon as the thread hands it over."""
    opening = asyncio.ensure_future(asyncio.to_thread(open, file, mode))
    try:
        raw = await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_orphan)
        raise
    return aiofiles.threadpool.wrap(raw)


def _close_orphan(opening: asyncio.Future[Any]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


def _discard(file: Path) -> None:
    """Delete what is at `file` at start-up, whatever it is (a directory there is not ours)."""
    try:
        if file.is_dir() and not file.is_symlink():
            shutil.rmtree(file, ignore_errors=True)
        else:
            file.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cannot delete %s from the disk tier: %s", file, exc)


def _write_atomically(target: Path, data: bytes) -> None:
    tmp = target.with_name(f"{target.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


async def _delete(data: Path) -> None:
    """Delete an entry's data and metadata files, if present."""
    for file in (data, data.with_name(data.name + META_SUFFIX)):
        await _unlink(file)


async def _unlink(file: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        await aiofiles.os.unlink(file)


def _wall_clock() -> float:
    return time.time()


def _meta_json(container: str, entry: DiskEntry) -> dict[str, Any]:
    meta = entry.meta
    return {
        "container": container,
        "path": entry.path,
        "size": meta.size,
        "etag": meta.etag,
        "last_modified": meta.last_modified.isoformat(),
        "content_type": meta.content_type,
        "content_md5": base64.b64encode(meta.content_md5).decode() if meta.content_md5 else None,
        "fetched_at": entry.fetched_at,
        "mtime_ns": entry.identity.mtime_ns,
        "blake2b": entry.digest,
    }


def _entry_from_json(raw: dict[str, Any], data: Path) -> DiskEntry:
    md5 = raw.get("content_md5")
    meta = BlobMeta(
        size=int(raw["size"]),
        etag=str(raw["etag"]),
        last_modified=datetime.fromisoformat(raw["last_modified"]),
        content_type=str(raw["content_type"]),
        content_md5=base64.b64decode(md5) if md5 else None,
    )
    digest = raw.get("blake2b")
    return DiskEntry(
        str(raw["path"]),
        meta,
        float(raw["fetched_at"]),
        data,
        FileIdentity(meta.size, int(raw["mtime_ns"])),  # no mtime_ns: written by an older version
        str(digest) if digest is not None else None,
    )
