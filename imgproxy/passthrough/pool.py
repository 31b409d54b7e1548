"""The keep-alive connection pool to the main application (`upstream.url`): the only module that talks to it.

One `Upstream` per worker holds at most `upstream.max_connections` connections (in use, idle and
websocket tunnels together); a caller beyond that waits for one within `upstream.timeout_s`.
Lean on purpose: a `ClientSession` pass-through spends most of a small answer's time in
`ClientRequest`/`ClientResponse`, the connector and tracing (docs/benchmarks.md). Here a
connection is aiohttp's own client protocol (`ResponseHandler`: its C response parser, the
payload `StreamReader` with flow control, read timeouts) on a transport of `loop.create_connection`,
and a request is one write of a head built by `passthrough.headers` followed, if any, by the body.

`exchange` sends one request and returns the app's answer (`Exchange`) once its headers are in:
the body then arrives chunk by chunk (`Exchange.read`), with at most about two parser buffers
(`READ_BUFFER`) held before the socket is paused. A request body is copied by a task while the
answer is awaited (the app may answer early). Deadlines: `connect_timeout_s` to connect,
`timeout_s` from the end of the request to the response headers, `idle_timeout_s` between body
chunks either way. A connection goes back to the pool only after a complete exchange; a request
the caller marks `retryable` (no body, an idempotent method: RFC 9110 section 9.2.2) that finds a
kept-alive connection closed by the app is sent once more on a new one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Final

from aiohttp.streams import EMPTY_PAYLOAD

from imgproxy.config import UpstreamConfig, upstream_address
from imgproxy.core.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from imgproxy.core.stats import UpstreamStats
from imgproxy.passthrough.connection import AppProtocol, Connection, Exchange, map_error, reraise
from imgproxy.passthrough.headers import LAST_CHUNK, framed, host_field

READ_BUFFER: Final = 64 * 1024  # the parser pauses the app's socket at twice this unread
KEEPALIVE_S: Final = 4.0  # an idle connection older than this is closed, not reused (apps close at ~5 s)
_MAX_FIELD: Final = 16 * 1024  # longest response header line we accept from the app


class Upstream:
    """The pool of connections to the app of one worker, and its counters."""

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self.host, self.port = upstream_address(config.url)
        self.host_header = host_field(self.host, self.port)
        self.stats = UpstreamStats()
        self.loop = asyncio.get_running_loop()
        self._idle: list[Connection] = []
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[Connection | None]] = collections.deque()
        self._closed = False

    # -- the pool --------------------------------------------------------------------------

    async def _connect(self, pooled: bool = True) -> Connection:
        loop = self.loop
        try:
            async with asyncio.timeout(self.config.connect_timeout_s):
                _, proto = await loop.create_connection(lambda: AppProtocol(loop), self.host, self.port)
        except TimeoutError:
            raise UpstreamTimeout(
                "connect", f"no connection within {self.config.connect_timeout_s} s"
            ) from None
        except OSError as exc:
            raise UpstreamUnavailable("refused", str(exc) or type(exc).__name__) from None
        self.stats.connections += 1
        return Connection(proto, pooled)

    async def acquire(self) -> Connection:
        """A connection to the app: an idle one, a new one, or the next one freed (within timeout_s)."""
        if self._closed:
            raise UpstreamUnavailable("closed", "shutting down")
        now = self.loop.time()
        while self._idle:
            conn = self._idle.pop()
            self.stats.idle -= 1
            proto = conn.proto
            if proto.is_connected() and not proto.should_close and now - conn.idle_since < KEEPALIVE_S:
                conn.reused = True
                return conn
            self._drop(conn)
            self._open -= 1
        if self._open >= self.config.max_connections:
            waiter: asyncio.Future[Connection | None] = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(self.config.timeout_s):
                    handed = await waiter
            except BaseException as exc:
                if not waiter.done():
                    waiter.cancel()
                elif not waiter.cancelled() and waiter.exception() is None:
                    # handed over just as we timed out or were cancelled: pass it on
                    given = waiter.result()
                    if given is not None:
                        self.release(given, reusable=True)
                    else:
                        self._free_slot()
                if isinstance(exc, TimeoutError):
                    raise UpstreamTimeout("pool", "every connection to the application stayed busy") from None
                raise
            if handed is not None:
                handed.reused = True
                return handed
            # a slot (not a connection) was handed to us: the counter already includes it
        else:
            self._open += 1
        try:
            return await self._connect()
        except BaseException:
            self._free_slot()
            raise

    def release(self, conn: Connection, reusable: bool) -> None:
        """Give `conn` back: kept for the next request if `reusable`, else closed."""
        if not conn.pooled:  # a websocket's own connection: never kept, never counted in the pool
            self._drop(conn)
            return
        if reusable and not self._closed:
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(conn)
                    return
            conn.idle_since = self.loop.time()
            self._idle.append(conn)
            self.stats.idle += 1
            return
        self._drop(conn)
        self._free_slot()

    def _drop(self, conn: Connection) -> None:
        if conn.proto.transport is not None:
            conn.proto.close()
        self.stats.connections -= 1

    def _free_slot(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to it: it connects
                return
        self._open -= 1

    async def close(self) -> None:
        """Close the idle connections; the ones in use close when their exchange ends."""
        self._closed = True
        for conn in self._idle:
            self._drop(conn)
            self._open -= 1
        self._idle.clear()
        self.stats.idle = 0
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(UpstreamUnavailable("closed", "shutting down"))

    # -- one exchange ----------------------------------------------------------------------

    async def exchange(
        self,
        head: bytes,
        body: AsyncIterator[bytes] | None,
        chunked: bool,
        head_only: bool,
        upgrade: bool = False,
        *,
        retryable: bool,
        length: int | None = None,
    ) -> Exchange:
        """Send `head` (and `body`) to the app; return its answer once the headers are in.

        `upgrade`: a websocket handshake, whose answer may be a 101 (the connection is then the
        tunnel's): it goes on a connection of its own, outside the pool, so tunnels never take
        connections that plain requests need (`upstream.max_websockets` bounds them instead).
        `retryable`: the request may be sent twice (no body and an idempotent method), so it is,
        once more on a new connection, when a kept-alive one turns out closed. `length`: the
        `Content-Length` the head announced; a body of any other length aborts the connection
        before a byte more than announced is written (the app must frame it as we said).
        Raises `UpstreamUnavailable`, `UpstreamTimeout`, or what `body` raised.
        """
        started = self.loop.time()
        for attempt in (0, 1):
            try:
                conn = await (self._connect(pooled=False) if upgrade else self.acquire())
                exchange = await self._send(conn, head, body, chunked, head_only, upgrade, length)
            except UpstreamUnavailable as exc:
                retry = attempt == 0 and retryable and body is None and exc.kind == "reset" and conn.reused
                if not retry:
                    self.stats.count_error(exc.kind)
                    raise
                continue  # a kept-alive connection the app had closed: once more, on a new one
            except UpstreamError as exc:
                self.stats.count_error(exc.kind)
                raise
            self.stats.observe(exchange.message.code, self.loop.time() - started)
            return exchange
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(
        self,
        conn: Connection,
        head: bytes,
        body: AsyncIterator[bytes] | None,
        chunked: bool,
        head_only: bool,
        upgrade: bool,
        length: int | None,
    ) -> Exchange:
        proto = conn.proto
        proto.read_timeout = None
        if conn.head_only is not head_only:  # else the last exchange's parser goes on (llhttp keeps alive)
            conn.head_only = head_only
            proto.set_response_params(
                skip_payload=head_only,
                auto_decompress=False,  # Content-Encoding passes untouched
                read_bufsize=READ_BUFFER,
                max_line_size=_MAX_FIELD,
                max_field_size=_MAX_FIELD,
            )
        deadline: asyncio.TimerHandle | None = None
        pump: asyncio.Task[None] | None = None

        def expire() -> None:
            conn.fail(UpstreamTimeout("timeout", f"no response headers within {self.config.timeout_s} s"))

        def arm() -> None:
            nonlocal deadline
            deadline = self.loop.call_later(self.config.timeout_s, expire)

        try:
            conn.write(head)
            if body is None:
                arm()
            else:
                pump = asyncio.create_task(self._pump(conn, body, chunked, length, arm))
            while True:
                message, payload = await proto.read()
                if not 100 <= message.code < 200 or (upgrade and message.code == 101):
                    break
                if message.code == 101:  # only a websocket request may switch protocols
                    raise UpstreamUnavailable("protocol", "101 to a request that did not ask to upgrade")
        except BaseException as exc:
            if deadline is not None:
                deadline.cancel()
            if pump is not None and not pump.done():
                pump.cancel()
            self.release(conn, reusable=False)
            reraise(exc)
        if deadline is not None:
            deadline.cancel()
        if payload is not EMPTY_PAYLOAD and not payload.is_eof():
            proto.read_timeout = self.config.idle_timeout_s
            proto.start_timeout()
        return Exchange(self, conn, message, payload, pump)

    async def _pump(
        self,
        conn: Connection,
        body: AsyncIterator[bytes],
        chunked: bool,
        length: int | None,
        done: Callable[[], None],
    ) -> None:
        """Copy the request body to the app (re-chunked if it came chunked), waiting while it is slow."""
        idle_s = self.config.idle_timeout_s
        sent = 0
        try:
            async for chunk in body:
                if not chunk:
                    continue
                sent += len(chunk)
                if length is not None and sent > length:
                    raise UpstreamUnavailable("framing", f"a body longer than the announced {length} bytes")
                if chunked:
                    conn.writelines(framed(b"", chunk, True, False))
                else:
                    conn.write(chunk)
                if conn.proto.writing_paused:
                    try:
                        async with asyncio.timeout(idle_s):
                            await conn.writer.drain()
                    except TimeoutError:
                        raise UpstreamTimeout("idle", "the application stopped reading the body") from None
            if length is not None and sent != length:
                raise UpstreamUnavailable("framing", f"a body of {sent} bytes, {length} announced")
            if chunked:
                conn.write(LAST_CHUNK)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            conn.fail(map_error(exc))
            return
        done()


@contextlib.asynccontextmanager
async def open_upstream(config: UpstreamConfig) -> AsyncIterator[Upstream]:
    """The pool for the life of the app (`cleanup_ctx`)."""
    upstream = Upstream(config)
    try:
        yield upstream
    finally:
        await upstream.close()
