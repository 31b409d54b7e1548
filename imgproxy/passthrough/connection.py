"""One HTTP/1.1 connection to the main application, and the answer of one exchange on it.

A connection is aiohttp's own client protocol (`ResponseHandler`: its C response parser, the
payload `StreamReader` with flow control, read timeouts) on a transport of
`loop.create_connection`; `pool.Upstream` makes, lends and takes them back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import NoReturn, Protocol

from aiohttp import ServerDisconnectedError
from aiohttp.client_exceptions import ClientPayloadError, SocketTimeoutError
from aiohttp.client_proto import ResponseHandler  # aiohttp's client protocol (not re-exported)
from aiohttp.http import RawResponseMessage, StreamWriter
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader

from imgproxy.core.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable


class Releaser(Protocol):
    """Where a connection goes back once its exchange is over (the pool)."""

    def release(self, conn: Connection, reusable: bool) -> None: ...


class AppProtocol(ResponseHandler):
    """aiohttp's client protocol, telling a tunnel when the app's side stops taking our bytes."""

    on_pause: Callable[[], None] | None = None
    on_resume: Callable[[], None] | None = None

    def resume_reading(self, resume_parser: bool = True) -> None:
        # The payload's StreamReader asks for this after every read, paused or not, and aiohttp
        # then feeds its parser an empty chunk: a few microseconds per request for nothing.
        if self._reading_paused or self._buffer_paused:
            super().resume_reading(resume_parser)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.on_pause is not None:
            self.on_pause()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.on_resume is not None:
            self.on_resume()


class Connection:
    """One HTTP/1.1 connection to the app."""

    __slots__ = ("head_only", "idle_since", "pooled", "proto", "reused", "writer")

    def __init__(self, proto: AppProtocol, pooled: bool = True) -> None:
        self.proto = proto
        self.pooled = pooled  # counted in the pool (a websocket's connection is not)
        self.writer = StreamWriter(proto, proto._loop)  # only for drain(): waits while paused
        self.reused = False
        self.idle_since = 0.0
        self.head_only: bool | None = None  # what the response parser was made for

    def write(self, data: bytes | memoryview) -> None:
        transport = self.proto.transport
        if transport is None or transport.is_closing():
            raise UpstreamUnavailable("reset", "the application closed the connection")
        transport.write(data)

    def writelines(self, parts: Iterable[bytes]) -> None:
        transport = self.proto.transport
        if transport is None or transport.is_closing():
            raise UpstreamUnavailable("reset", "the application closed the connection")
        transport.writelines(parts)

    def fail(self, exc: BaseException) -> None:
        """End the exchange on this connection with `exc` (whoever awaits the answer gets it)."""
        self.proto.set_exception(exc)
        transport = self.proto.transport
        if transport is not None:
            transport.abort()


def map_error(exc: BaseException) -> BaseException:
    """aiohttp's and the OS's errors as ours; anything of ours (or the client's side) as is."""
    if isinstance(exc, UpstreamError | asyncio.CancelledError):
        return exc
    if isinstance(exc, SocketTimeoutError):
        return UpstreamTimeout("idle", "the application stalled")
    if isinstance(exc, ServerDisconnectedError | ClientPayloadError | ConnectionError | OSError):
        return UpstreamUnavailable("reset", str(exc) or type(exc).__name__)
    if type(exc).__module__.startswith("aiohttp"):  # HttpProcessingError and the like: not HTTP
        return UpstreamUnavailable("protocol", str(exc) or type(exc).__name__)
    return exc


def reraise(exc: BaseException) -> NoReturn:
    mapped = map_error(exc)
    if mapped is exc:
        raise exc
    raise mapped from exc


class Exchange:
    """The app's answer to one request: `message` (status, raw headers) now, the body as it comes."""

    __slots__ = ("_pool", "_pump", "conn", "has_body", "message", "payload")

    def __init__(
        self,
        pool: Releaser,
        conn: Connection,
        message: RawResponseMessage,
        payload: StreamReader,
        pump: asyncio.Task[None] | None,
    ) -> None:
        self._pool = pool
        self.conn = conn
        self.message = message
        self.payload = payload
        self._pump = pump
        self.has_body = payload is not EMPTY_PAYLOAD

    def buffered(self) -> bytes:
        """The part of the body that has arrived already (no waiting)."""
        if not self.has_body:
            return b""
        try:
            return self.payload.read_nowait(-1)
        except Exception as exc:
            reraise(exc)

    async def read(self) -> bytes:
        """The next chunk of the body as the app wrote it; b"" at the end."""
        try:
            return await self.payload.readany()
        except Exception as exc:
            reraise(exc)

    def at_eof(self) -> bool:
        return not self.has_body or self.payload.at_eof()

    def close(self) -> None:
        """Hand the connection back: to the pool after a complete exchange, else closed."""
        pump = self._pump
        pump_done = pump is None or pump.done()
        if pump is not None and not pump_done:
            pump.cancel()
        proto = self.conn.proto
        reusable = (
            pump_done
            and (pump is None or not pump.cancelled())  # `_pump` returns on any error but a cancel
            and self.at_eof()
            and not proto.should_close
            and proto.is_connected()
        )
        self._pool.release(self.conn, reusable)
