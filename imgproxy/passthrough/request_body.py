"""A client's request body on its way to the app: read within a deadline, counted, buffered first.

With `upstream.request_buffering` (the default, as nginx's `proxy_request_buffering`) the whole
body is read before a connection to the app is taken, so a client trickling its body holds no
connection of the pool. It is kept in memory up to `upstream.request_buffer_bytes` (and while the
worker's buffers together stay under `upstream.request_buffers_total_bytes`), past that in a
temporary file in `upstream.spool_dir`, unlinked at creation, so nothing is left behind by a crash.
Spooled bytes of a worker are bounded by `upstream.spool_max_bytes` (a body that would pass it gets
503 with Retry-After, before more of it is read). The app then gets the body with its exact
`Content-Length`, a chunked one included.

Without buffering, the body is streamed to the app as it arrives (`stream`), holding an app
connection meanwhile; the app gets the client's framing (a chunked body re-chunked).

Either way the body must arrive within `upstream.body_timeout_s`, extended by one second per
`upstream.body_min_rate` bytes received (as Apache's mod_reqtimeout `MinRate`): a slow but steady
upload goes on, a trickle of a few bytes a minute is answered 408. No more than
`upstream.max_body_bytes` are read (413). aiohttp gives the bytes exactly as sent (de-chunked only:
the server never inflates a `Content-Encoding`).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from collections.abc import AsyncIterator
from typing import BinaryIO, Final

from aiohttp import web

from imgproxy.config import UpstreamConfig
from imgproxy.core.errors import BodyTooLarge, PassthroughBusy, RequestTimeout

SPOOL_WRITE_BYTES: Final = 256 * 1024  # spooled bytes are written (and read back) this many at a time


class ClientBodyFailed(Exception):
    """The client's side failed while sending its body (went away, or sent a broken chunked body)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind  # the `kind` label of imgproxy_upstream_errors_total


class BufferBudget:
    """The request-body bytes one worker holds in memory and in spool files, against their bounds."""

    def __init__(self, config: UpstreamConfig) -> None:
        self.memory_limit = config.request_buffers_total_bytes
        self.spool_limit = config.spool_max_bytes
        self.memory = 0
        self.spooled = 0

    def take_memory(self, size: int) -> bool:
        if self.memory + size > self.memory_limit:
            return False
        self.memory += size
        return True

    def check_spool(self, size: int) -> None:
        """Raise `PassthroughBusy` if `size` more spool bytes would not fit now."""
        if self.spooled + size > self.spool_limit:
            raise PassthroughBusy("spool")

    def take_spool(self, size: int) -> None:
        """Reserve `size` spool bytes or raise `PassthroughBusy`."""
        self.check_spool(size)
        self.spooled += size


class _Deadline:
    """When the body must be complete: `body_timeout_s` from the start, one second more per
    `body_min_rate` bytes received."""

    __slots__ = ("_loop", "_rate", "_start")

    def __init__(self, config: UpstreamConfig) -> None:
        self._loop = asyncio.get_running_loop()
        self._start = self._loop.time() + config.body_timeout_s
        self._rate = config.body_min_rate

    def at(self, received: int) -> float:
        return self._start + (received / self._rate if self._rate else 0.0)


async def _chunks(request: web.BaseRequest, config: UpstreamConfig) -> AsyncIterator[bytes]:
    """The client's body as it arrives, each read within the deadline, at most `max_body_bytes`."""
    content = request.content
    limit = config.max_body_bytes
    deadline = _Deadline(config)
    total = 0
    while True:
        try:
            chunk = content.read_nowait(-1)  # raises the stream's error as readany would
            if not chunk and not content.at_eof():
                async with asyncio.timeout_at(deadline.at(total)):
                    chunk = await content.readany()
        except TimeoutError:
            raise RequestTimeout() from None
        except (ConnectionError, OSError):
            raise ClientBodyFailed("client_gone") from None
        except Exception:  # aiohttp's payload errors: a broken chunked encoding, a short body
            raise ClientBodyFailed("client_error") from None
        if not chunk:
            return
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(limit)
        yield chunk


def stream(request: web.BaseRequest, config: UpstreamConfig) -> AsyncIterator[bytes]:
    """The body, read as the app takes it (`request_buffering` off)."""
    return _chunks(request, config)


class BufferedBody:
    """A whole request body, in memory or in a spool file; `close` gives its bytes back."""

    def __init__(self, budget: BufferBudget) -> None:
        self._budget = budget
        self._parts: list[bytes] = []
        self._in_memory = 0  # bytes of `_parts` counted against the budget's memory
        self._file: BinaryIO | None = None
        self._pending = bytearray()  # spooled bytes not written yet
        self._spooled = 0  # bytes reserved in the budget's spool
        # A read of the spool file may still run in a thread after the pump that asked for it was
        # cancelled: closing the file waits for it (one bounded read), so its descriptor is never
        # closed, and perhaps reused, under it.
        self._file_lock = threading.Lock()
        self.size = 0

    @property
    def spooled(self) -> bool:
        return self._file is not None

    async def add(self, chunk: bytes, memory_bytes: int, spool_dir: str | None) -> None:
        self.size += len(chunk)
        if self._file is None:
            if self.size <= memory_bytes and self._budget.take_memory(len(chunk)):
                self._in_memory += len(chunk)
                self._parts.append(chunk)
                return
            await self._spill(spool_dir)
        self._budget.take_spool(len(chunk))
        self._spooled += len(chunk)
        self._pending += chunk
        if len(self._pending) >= SPOOL_WRITE_BYTES:
            await self.finish()

    async def _spill(self, spool_dir: str | None) -> None:
        """From now on the body goes to a file: what memory held goes there first."""
        loop = asyncio.get_running_loop()
        self._file = await loop.run_in_executor(None, _spool_file, spool_dir)
        held = b"".join(self._parts)
        self._parts.clear()
        self._budget.memory -= self._in_memory
        self._in_memory = 0
        self._budget.take_spool(len(held))
        self._spooled += len(held)
        self._pending += held

    async def finish(self) -> None:
        """Write what is still pending to the spool file (once the whole body was added)."""
        if self._file is not None and self._pending:
            data, self._pending = bytes(self._pending), bytearray()
            await asyncio.get_running_loop().run_in_executor(None, self._file.write, data)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body from its start (call once the whole body was added)."""
        if self._file is None:
            for part in self._parts:
                yield part
            return
        loop = asyncio.get_running_loop()
        offset = 0
        while offset < self.size:
            piece = await loop.run_in_executor(
                None, self._read_at, offset, min(SPOOL_WRITE_BYTES, self.size - offset)
            )
            if not piece:
                raise OSError(f"spool file ended at {offset} of {self.size} bytes")
            offset += len(piece)
            yield piece

    def _read_at(self, offset: int, size: int) -> bytes:
        with self._file_lock:
            if self._file is None:
                return b""
            return os.pread(self._file.fileno(), size, offset)

    def close(self) -> None:
        """Give the bytes back to the budget and the spool file to the system (safe to call twice)."""
        self._parts.clear()
        self._pending = bytearray()
        self._budget.memory -= self._in_memory
        self._budget.spooled -= self._spooled
        self._in_memory = self._spooled = 0
        with self._file_lock:
            if self._file is not None:
                self._file.close()  # unlinked at creation: closing frees the space
                self._file = None


def _spool_file(spool_dir: str | None) -> BinaryIO:
    return tempfile.TemporaryFile(prefix="imgproxy-body-", dir=spool_dir)


async def buffer(request: web.BaseRequest, config: UpstreamConfig, budget: BufferBudget) -> BufferedBody:
    """The whole body, read within its deadline, before anything goes to the app.

    Raises `RequestTimeout`, `BodyTooLarge`, `PassthroughBusy` (spool full) or `ClientBodyFailed`;
    nothing is held after an error.
    """
    body = BufferedBody(budget)
    length = request.content_length
    spool_dir = config.spool_dir or None
    try:
        if length is not None and length > config.request_buffer_bytes:
            budget.check_spool(length)  # refused before a byte is read, if it cannot fit now
        async for chunk in _chunks(request, config):
            await body.add(chunk, config.request_buffer_bytes, spool_dir)
        await body.finish()
    except BaseException:
        body.close()
        raise
    return body
