"""`CdnPurger`: purges forwarded to the CDN's purge endpoint, in order, from a bounded queue.

`submit(path)` (None: everything) never waits: the admin call that purged our tiers answers at
once, and a task sends the queued purges one at a time, each no earlier than `cdn.purge_delay_s`
after it was accepted (other replicas apply a logged purge within about a second: a CDN that
refetched sooner could get the old bytes from one of them). A failed attempt (refused, timed out
within `cdn.purge_timeout_s`, 408, 425, 429 or 5xx) is tried again after an exponential backoff
(`cdn.purge_backoff_s` doubled each time, at most `cdn.purge_max_backoff_s`), up to
`cdn.purge_attempts` in all (a longer `Retry-After` in seconds is waited instead, within the same
maximum); another 4xx is given up at once (the endpoint refuses the request itself). The queue
holds `cdn.purge_queue` purges: one more replaces them all with one purge of everything (the
container's tag), so the CDN never keeps bytes we were told to forget. On shutdown the queue gets
`cdn.purge_drain_s` to empty; what is left is dropped and logged.

Which process sends: the one that accepted the admin call (not its sibling workers, which get it
relayed, nor the replicas that follow it in the purge log), so a purge is sent once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import aiohttp

from imgproxy.cdn.request import PurgeRequest, PurgeTemplate
from imgproxy.config import CdnConfig
from imgproxy.core.cdn_stats import CdnPurgeStats
from imgproxy.http.tags import CdnTags

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Purge:
    path: str | None  # None: everything
    not_before: float  # loop time


@dataclass(frozen=True, slots=True)
class _Failure:
    retryable: bool
    reason: str  # for the log: a status or an exception's name
    retry_after_s: float = 0.0


class CdnPurger:
    """The queue and the task that sends it (see the module's docstring)."""

    def __init__(self, config: CdnConfig, container: str, session: aiohttp.ClientSession) -> None:
        self._config = config
        self._template = PurgeTemplate(config, CdnTags((), config.tag_prefix, container), container)
        self._session = session
        self._queue: collections.deque[_Purge] = collections.deque()
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._busy = False  # a purge taken from the queue is being sent
        self._idle = asyncio.Event()
        self._idle.set()
        self._stats = CdnPurgeStats()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="cdn-purger")

    def stats(self) -> CdnPurgeStats:
        return replace(self._stats, queued=len(self._queue))

    def submit(self, path: str | None) -> None:
        """Queue the purge of `path` (None: everything) for the CDN; never waits."""
        if self._closing.is_set():
            self._count(dropped=1)
            log.warning("CDN purge of %s dropped: shutting down", "everything" if path is None else path)
            return
        purge = _Purge(path, asyncio.get_running_loop().time() + self._config.purge_delay_s)
        if len(self._queue) >= self._config.purge_queue:
            self._count(dropped=len(self._queue) + 1)
            log.warning(
                "CDN purge queue full (%d): its purges replaced by one purge of everything",
                len(self._queue),
            )
            self._queue.clear()
            purge = replace(purge, path=None)
        self._queue.append(purge)
        self._idle.clear()
        self._wake.set()

    async def drain(self) -> None:
        """Stop accepting; send what is queued within `cdn.purge_drain_s`, then stop."""
        self._closing.set()  # also ends the delays: what is left goes now
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._config.purge_drain_s):
                await self._idle.wait()
        left = len(self._queue) + self._busy
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if left:
            self._count(dropped=left)
            log.warning("%d CDN purge(s) not sent at shutdown", left)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            purge = self._queue[0]
            wait_s = purge.not_before - loop.time()
            if wait_s > 0 and not self._closing.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await self._closing.wait()
            if not self._queue or self._queue[0] is not purge:
                continue  # replaced meanwhile (queue full)
            self._queue.popleft()
            self._busy = True
            try:
                await self._send(self._template.build(purge.path))
            finally:
                self._busy = False

    async def _send(self, request: PurgeRequest) -> None:
        config = self._config
        for attempt in range(1, config.purge_attempts + 1):
            failure = await self._attempt(request)
            if failure is None:
                self._count(sent=1)
                return
            if not failure.retryable or attempt == config.purge_attempts:
                self._count(failed=1)
                log.warning(
                    "CDN purge of tag %s given up after %d attempt(s): %s",
                    request.tag,
                    attempt,
                    failure.reason,
                )
                return
            self._count(retried=1)
            # The endpoint's Retry-After (a rate limit) if longer than the backoff; both bounded.
            backoff_s = max(config.purge_backoff_s * 2 ** (attempt - 1), failure.retry_after_s)
            await asyncio.sleep(min(backoff_s, config.purge_max_backoff_s))

    async def _attempt(self, request: PurgeRequest) -> _Failure | None:
        """None when the CDN took the purge; else why not (never a header: they hold the secret)."""
        try:
            async with self._session.request(
                request.method, request.url, headers=request.headers, data=request.body or None
            ) as response:
                status, retry_after = response.status, response.headers.get("Retry-After", "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _Failure(True, type(exc).__name__)
        if 200 <= status < 300:
            return None
        retryable = status in (408, 425, 429) or status >= 500
        # Seconds only (RFC 9110 section 10.2.3 also allows a date: then the backoff alone).
        seconds = float(retry_after) if retry_after.isdigit() else 0.0
        return _Failure(retryable, f"status {status}", seconds)

    def _count(self, sent: int = 0, failed: int = 0, retried: int = 0, dropped: int = 0) -> None:
        stats = self._stats
        self._stats = replace(
            stats,
            sent=stats.sent + sent,
            failed=stats.failed + failed,
            retried=stats.retried + retried,
            dropped=stats.dropped + dropped,
        )


@contextlib.asynccontextmanager
async def open_purger(config: CdnConfig, container: str) -> AsyncIterator[CdnPurger]:
    """A `CdnPurger` with its own HTTP session, drained (bounded) and closed on exit."""
    timeout = aiohttp.ClientTimeout(total=config.purge_timeout_s)
    async with aiohttp.ClientSession(timeout=timeout, raise_for_status=False) as session:
        purger = CdnPurger(config, container, session)
        try:
            yield purger
        finally:
            await purger.drain()
