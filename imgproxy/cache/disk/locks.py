"""Per-entry lock files of a disk directory shared by worker processes (`flock` on `<name>.lock`).

A download takes its entry's lock, so a sibling that wants the same entry waits (at most
`disk.lock_timeout_s`) and then adopts what was published instead of asking Azure again. Waits
block in daemon threads, at most `LOCK_WAITERS` at a time: a stopping worker must not wait at
exit for a thread parked behind a sibling's long download.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Final

import aiofiles.os

log = logging.getLogger(__name__)

LOCK_WAITERS: Final = 8  # threads that may block in flock at once; more waits queue for them


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


def release(lock: EntryLock | None) -> None:
    if lock is not None:
        lock.release()


class Locks:
    """The lock files of one directory, and which of them this process holds."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._waiter_slots = asyncio.Semaphore(LOCK_WAITERS)
        self._held: Counter[str] = Counter()  # entry locks this process holds, by key

    def holds(self, key: str) -> bool:
        """True while this process holds `key`'s lock (an earlier fill here, not a sibling's)."""
        return self._held[key] > 0

    async def lock(self, key: str, file: Path) -> EntryLock:
        """Take `key`'s lock `file`, waiting up to `timeout_s` for a sibling holding it.

        After the timeout the caller goes on without the lock (at worst a second download).
        """
        fd = await self.open_file(file)
        try:
            if flock_now(fd):  # uncontended: no thread needed
                return self.held_lock(key, fd, waited=False)
        except BaseException:
            os.close(fd)
            raise
        waiting: asyncio.Future[None] | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
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
                log.warning("disk lock of %r not free after %.1f s: going on without it", key, self.timeout_s)
                return EntryLock(None, waited=True)
            raise
        return self.held_lock(key, fd, waited=True)

    async def try_lock(self, key: str, file: Path) -> EntryLock | None:
        """`key`'s lock if it is free now, else None (no waiting)."""
        fd = await self.open_file(file)
        try:
            if flock_now(fd):
                return self.held_lock(key, fd, waited=False)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        return None

    async def open_file(self, file: Path) -> int:
        await aiofiles.os.makedirs(file.parent, exist_ok=True)
        opening = asyncio.ensure_future(asyncio.to_thread(os.open, file, os.O_RDWR | os.O_CREAT))
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_close_opened)  # the thread may still open it: close it then
            raise

    def held_lock(self, key: str, fd: int, waited: bool) -> EntryLock:
        self._held[key] += 1

        def released() -> None:
            self._held[key] -= 1
            if self._held[key] <= 0:
                del self._held[key]

        return EntryLock(fd, waited, released)


def flock_now(fd: int) -> bool:
    """Take the exclusive flock on `fd` if it is free; False if another descriptor holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


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


def _close_opened(opening: asyncio.Future[int]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        os.close(opening.result())
