"""A blob being written into the disk tier while its readers follow the file as it grows.

`PendingFile` is one download: every reader `tail`s it at its own pace, waking on each appended
chunk, and holds at most `READ_BYTES`. A failed or voided download leaves nothing behind and cuts
every reader short. `follow` lets the readers of a worker read a sibling process's fill of the
same blob version (named by its ETag) instead of downloading it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, Final, Protocol

import aiofiles.os

from imgproxy.cache.disk.files import TMP_SUFFIX, DiskEntry, open_file, unlink
from imgproxy.cache.disk.integrity import FileIdentity, new_hasher
from imgproxy.cache.disk.locks import EntryLock, Locks, flock_now
from imgproxy.core.blob import BlobMeta
from imgproxy.core.errors import IncompleteBody
from imgproxy.core.lru import FillTicket

log = logging.getLogger(__name__)

READ_BYTES: Final = 256 * 1024  # one read of a tailing reader (its memory bound)
FOLLOW_POLL_S: Final = 0.01  # how often a sibling's growing fill file is looked at


class FillOwner(Protocol):
    """What a fill needs of the tier that started it (the disk tier): to publish the finished
    file as an entry, or to hand back its ticket."""

    async def publish(self, pending: PendingFile) -> bool: ...

    def release(self, ticket: FillTicket) -> None: ...


class PendingFile:
    """A blob being written to disk; readers may tail it while it grows."""

    def __init__(
        self,
        disk: FillOwner,
        key: str,
        meta: BlobMeta,
        data: Path,
        ticket: FillTicket,
        source_etag: str | None = None,
    ) -> None:
        self.disk = disk
        self.key = key
        self.meta = meta
        self.data = data
        self.ticket = ticket
        self.source_etag = source_etag
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
            await unlink(self.tmp)  # a crashed writer's leftover: a new inode, never truncate one
        self._file = await open_file(self.tmp, "wb")
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
            raise IncompleteBody(f"{self.key}: wrote {self.written} of {self.meta.size} bytes")
        await self._file.flush()
        await asyncio.to_thread(os.fsync, self._file.fileno())
        self.identity = FileIdentity.of(os.fstat(self._file.fileno()))
        if self._hasher is not None:
            self.digest = self._hasher.hexdigest()
        await self._file.close()
        try:
            published = await self.disk.publish(self)
        finally:
            await unlink(self.tmp)  # still there only if it was not published
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
            await unlink(self.tmp)

    async def tail(self, start: int, end: int) -> AsyncGenerator[bytes, None]:
        """Bytes `start..end` (inclusive) as they arrive; raises the writer's failure if any."""
        while not self.readable and self.failure is None and not self.done:
            await self._progress.wait()  # the writer has not created the file yet
        if self.failure is not None:
            raise IncompleteBody(f"{self.key}: download failed") from self.failure
        try:
            f = await open_file(self.tmp, "rb")
        except FileNotFoundError:
            # Renamed into place (or deleted) since: wait for the outcome, then read the final file.
            while self.failure is None and not self.done:
                await self._progress.wait()
            if self.failure is not None:
                raise IncompleteBody(f"{self.key}: download failed") from self.failure
            f = await open_file(self.data, "rb")  # FileNotFoundError if purged meanwhile
        try:
            position = start
            while position <= end:
                while self.written <= position and self.failure is None and not self.done:
                    await self._progress.wait()
                if self.failure is not None:
                    raise IncompleteBody(f"{self.key}: download failed") from self.failure
                available = min(self.written, end + 1) - position
                await f.seek(position)
                chunk = await f.read(min(available, READ_BYTES))
                if not chunk:
                    raise IncompleteBody(f"{self.key}: file shorter than written")
                position += len(chunk)
                yield chunk
        finally:
            await f.close()

    def _notify(self) -> None:
        # Wake every waiting reader; later waiters wait on a fresh event.
        event, self._progress = self._progress, asyncio.Event()
        event.set()


async def follow(locks: Locks, pending: PendingFile, lock_file: Path) -> EntryLock:
    """A sibling process holds the entry's lock: until it lets go, let `pending`'s readers read
    the sibling's fill file as it grows (its name carries the ETag, so only the same blob
    version is followed). Returns the lock, held, once the sibling let go (the caller adopts what
    it published, or fails, or downloads); an empty lock after `disk.lock_timeout_s` without
    progress if nothing was served yet; raises `IncompleteBody` if the sibling stalled after
    bytes were served. Polls every FOLLOW_POLL_S: a file growing in another process has no event
    to wait on (inotify is not in the standard library).
    """
    loop = asyncio.get_running_loop()
    lock_fd = await locks.open_file(lock_file)
    fill_fd: int | None = None
    progressed = loop.time()
    try:
        while not flock_now(lock_fd):
            # Looked at only while the lock is held, so the file is a live sibling's, not a leftover.
            if fill_fd is None:
                with contextlib.suppress(FileNotFoundError):
                    fill_fd = os.open(pending.shared_tmp, os.O_RDONLY)
            if fill_fd is not None:
                size = min(os.fstat(fill_fd).st_size, pending.meta.size)
                if size > pending.written:
                    pending.follow(size)
                    progressed = loop.time()
            if loop.time() - progressed > locks.timeout_s:
                if pending.following:
                    raise IncompleteBody(f"{pending.key}: the sibling process's download stalled")
                log.warning("disk fill of %r by a sibling made no progress: going on without it", pending.key)
                os.close(lock_fd)
                return EntryLock(None, waited=True)
            await asyncio.sleep(FOLLOW_POLL_S)
    except BaseException:
        os.close(lock_fd)
        raise
    finally:
        if fill_fd is not None:
            os.close(fill_fd)
    return locks.held_lock(pending.key, lock_fd, waited=True)
