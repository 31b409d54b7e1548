"""Every request that is not ours goes through to the main application, and its answer comes back.

`forward` sends the request (method and target exactly as received, headers per `proxy_headers`,
the body streamed) through the `Upstream` pool and writes the app's answer straight to the client's
transport as it arrives: the head, then each chunk (re-chunked when the app gave no length), waiting
for the client to drain, so memory stays at a few buffers whatever the size. A websocket handshake
that the app accepts (101) becomes a byte tunnel both ways, so frames, pings and close codes reach
the other side exactly as sent. Until our head is written, failures are raised as project errors
(mapped to 502/504/413 by `app.py`); after it, the client's connection is aborted, so a cut body
never looks complete. While a request is forwarded, `_ClientTap` stands in for aiohttp's protocol on
the client's transport (`Transport.set_protocol`, as asyncio's sendfile fallback does) to learn the
moment the client goes away, and the app's connection is released at once.

Two entries: `lane` on aiohttp's low-level server before routing (`app.install_passthrough`, the
way `hot_path` answers hits), and `middleware` for what the router does not know (tests' apps).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from aiohttp.http import HttpVersion11
from aiohttp.web_protocol import RequestHandler

from ..config import Config
from ..errors import BodyTooLarge, ImgproxyError
from ..keys import CONFIG, METRICS, UPSTREAM
from ..prebuilt import Sent
from ..proxy_headers import Forwarding, request_head, response_head
from ..upstream import Exchange, Upstream
from .images import PREFIX as IMAGES_PREFIX

RequestHandlerFn = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
ErrorAnswer = Callable[[ImgproxyError], web.Response]

_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK: Final = b"0\r\n\r\n"
_CLOSED: Final = Sent(499, keep_alive=False)  # nothing sent: nginx's "client closed request"


class _ClientFailure(Exception):
    """The client's side failed (went away, stalled or sent a broken body): abort, no answer."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class OwnRoutes:
    """The paths this service answers itself (they never reach the app), per `server.ops_prefix`."""

    prefixes: tuple[str, ...]
    exact: frozenset[str]

    @classmethod
    def of(cls, ops_prefix: str) -> OwnRoutes:
        ops = ("healthz", "readyz", "metrics")
        return cls((IMAGES_PREFIX, f"{ops_prefix}/admin/"), frozenset(f"{ops_prefix}/{name}" for name in ops))

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and (path in self.exact or path.startswith(self.prefixes))


def _decoded_path(request: web.BaseRequest) -> str:
    """The path the router matches (decoded), computed only when the raw one differs from it."""
    raw = request.raw_path.partition("?")[0]
    if "%" in raw or not raw.startswith("/"):
        return request.path
    return raw


class _ClientTap(asyncio.Protocol):
    """Stands in for aiohttp's protocol on a client's transport from its first forwarded request on.

    Bytes go on to aiohttp as before (a request body, the next requests), unless `divert` is set
    (a websocket tunnel: they go to the app). A lost connection is reported to `on_lost` at once,
    then passed on, so aiohttp cleans up as usual. It stays for the connection's life: installing
    it once costs less than swapping protocols around every request.
    """

    def __init__(self, transport: asyncio.Transport) -> None:
        inner = transport.get_protocol()
        assert isinstance(inner, RequestHandler)
        self.inner = inner
        self.lost = False
        self.on_lost: Callable[[], None] | None = None
        self.divert: Callable[[bytes], None] | None = None
        self.on_pause: Callable[[], None] | None = None
        self.on_resume: Callable[[], None] | None = None
        transport.set_protocol(self)

    @classmethod
    def on(cls, transport: asyncio.Transport) -> _ClientTap:
        """The tap of `transport`, installed now if it has none yet."""
        protocol = transport.get_protocol()
        return protocol if isinstance(protocol, _ClientTap) else cls(transport)

    def data_received(self, data: bytes) -> None:
        if self.divert is not None:
            self.divert(data)
        else:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.divert is not None and self.on_lost is not None:
            self.on_lost()
            return None
        self.inner.eof_received()
        return None

    def pause_writing(self) -> None:
        self.inner.pause_writing()
        if self.on_pause is not None:
            self.on_pause()

    def resume_writing(self) -> None:
        self.inner.resume_writing()
        if self.on_resume is not None:
            self.on_resume()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.on_lost is not None:
            self.on_lost()
        self.inner.connection_lost(exc)


class Passthrough:
    """Forwards requests to the app of one worker (`upstream`), per `config.upstream`."""

    def __init__(self, config: Config, upstream: Upstream) -> None:
        self.config = config.upstream
        self.upstream = upstream
        self.own = OwnRoutes.of(config.server.ops_prefix)
        self._sent: dict[tuple[int, bool], Sent] = {}

    def sent(self, status: int, keep_alive: bool) -> Sent:
        """A (reused) response telling aiohttp that the answer is on the wire already."""
        key = (status, keep_alive)
        sent = self._sent.get(key)
        if sent is None:
            sent = self._sent[key] = Sent(status, keep_alive)
        return sent

    def forwards(self, request: web.BaseRequest) -> bool:
        """True if `request` is for the app (its path is none of ours)."""
        return _decoded_path(request) not in self.own

    async def forward(self, request: web.BaseRequest, send_continue: bool) -> web.StreamResponse:
        """Send `request` to the app and its answer to the client (see the module docstring).

        `send_continue`: answer `Expect: 100-continue` ourselves (aiohttp's router already does).
        """
        transport = request.transport
        if transport is None or transport.is_closing():
            return _CLOSED
        task = asyncio.current_task(self.upstream.loop)  # with the loop: no getpid() per call
        assert task is not None
        tap = _ClientTap.on(transport)

        def cancel() -> None:  # the client went away: stop waiting for the app at once
            task.cancel()

        tap.on_lost = cancel
        try:
            return await self._forward(request, transport, tap, send_continue)
        except asyncio.CancelledError:
            if not tap.lost:
                raise
            task.uncancel()
            self.upstream.stats.count_error("client_gone")
            return _CLOSED
        finally:
            tap.on_lost = tap.on_pause = tap.on_resume = tap.divert = None

    def _forwarding(self, request: web.BaseRequest) -> Forwarding:
        return Forwarding(
            client_ip=request.remote or "",
            scheme=request.scheme,
            upstream_host=self.upstream.host_header,
            preserve_host=self.config.preserve_host,
            trust_forwarded=self.config.trust_forwarded,
        )

    async def _forward(
        self, request: web.BaseRequest, transport: asyncio.Transport, tap: _ClientTap, send_continue: bool
    ) -> web.StreamResponse:
        if _wants_websocket(request):
            return await self._tunnel(request, transport, tap)
        config = self.config
        length = request.content_length
        has_body = request.body_exists
        if length is not None and length > config.max_body_bytes:
            self.upstream.stats.count_error("body_too_large")
            raise BodyTooLarge(config.max_body_bytes)  # before reading any of it
        chunked = has_body and length is None
        head = request_head(
            request.method, request.raw_path, request.raw_headers, self._forwarding(request), length, chunked
        )
        body = _request_body(request, config.max_body_bytes, config.idle_timeout_s) if has_body else None
        if (
            send_continue
            and body is not None
            and request.version >= HttpVersion11
            and request.headers.get("Expect", "").lower() == "100-continue"
        ):
            transport.write(_CONTINUE)
        try:
            exchange = await self.upstream.exchange(head, body, chunked, head_only=request.method == "HEAD")
        except BodyTooLarge:
            self.upstream.stats.count_error("body_too_large")
            raise
        except _ClientFailure as exc:
            self.upstream.stats.count_error(exc.kind)
            transport.abort()
            return _CLOSED
        try:
            return await self._relay(request, transport, exchange)
        finally:
            exchange.close()

    async def _relay(
        self, request: web.BaseRequest, transport: asyncio.Transport, exchange: Exchange
    ) -> web.StreamResponse:
        """Write the app's answer to the client as it arrives."""
        message = exchange.message
        keep_alive = request.keep_alive
        http11 = request.version >= HttpVersion11
        chunked = False
        if exchange.has_body and (message.chunked or "Content-Length" not in message.headers):
            if http11:
                chunked = True
            else:
                keep_alive = False  # HTTP/1.0: the end of the body is the end of the connection
        connection = None if keep_alive == http11 else (b"keep-alive" if keep_alive else b"close")
        head = response_head(message.code, message.reason, message.raw_headers, chunked, connection)
        try:
            first = exchange.buffered()
            done = exchange.at_eof()
            transport.writelines(_framed(head, first, chunked, done))
            while not done:
                await self._drain(request)
                chunk = await exchange.read()
                done = not chunk or exchange.at_eof()
                if transport.is_closing():
                    raise _ClientFailure("client_gone")
                transport.writelines(_framed(b"", chunk, chunked, done))
        except ImgproxyError as exc:  # the app failed mid-body: never a complete-looking body
            kind = getattr(exc, "kind", type(exc).__name__)
            self.upstream.stats.count_error(kind)
            transport.abort()
            return self.sent(message.code, False)
        except _ClientFailure as exc:
            self.upstream.stats.count_error(exc.kind)
            transport.abort()
            return self.sent(message.code, False)
        if not request.content.is_eof():  # the app answered before reading the whole body
            request.protocol.force_close()
            return self.sent(message.code, False)
        return self.sent(message.code, keep_alive)

    async def _drain(self, request: web.BaseRequest) -> None:
        """Wait while the client's buffer is full, at most `idle_timeout_s`."""
        if request.protocol.writing_paused:
            try:
                async with asyncio.timeout(self.config.idle_timeout_s):
                    await request.writer.drain()
            except TimeoutError:
                raise _ClientFailure("client_idle") from None

    async def _tunnel(
        self, request: web.BaseRequest, transport: asyncio.Transport, tap: _ClientTap
    ) -> web.StreamResponse:
        """A websocket handshake: the app's 101 opens a byte tunnel; any other answer is relayed."""
        head = request_head(
            request.method,
            request.raw_path,
            request.raw_headers,
            self._forwarding(request),
            None,
            False,
            upgrade=b"websocket",
        )
        exchange = await self.upstream.upgrade(head)
        if exchange.message.code != 101:
            try:
                return await self._relay(request, transport, exchange)
            finally:
                exchange.close()
        message = exchange.message
        conn = exchange.conn
        app_side = conn.proto
        stats = self.upstream.stats
        stats.websockets += 1
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()
        idle_s = self.config.idle_timeout_s
        last = [loop.time()]

        def end() -> None:
            if not ended.done():
                ended.set_result(None)

        def to_app(data: bytes) -> None:
            last[0] = loop.time()
            if app_side.transport is not None:
                app_side.transport.write(data)

        def check_idle() -> None:
            if ended.done():
                return
            quiet = loop.time() - last[0]
            if quiet >= idle_s:
                stats.count_error("idle")
                end()
            else:
                timers[0] = loop.call_later(idle_s - quiet, check_idle)

        timers = [loop.call_later(idle_s, check_idle)]
        tap.on_lost = end
        tap.divert = to_app
        tap.on_pause = app_side.pause_reading
        tap.on_resume = app_side.resume_reading
        app_side.on_pause = transport.pause_reading
        app_side.on_resume = transport.resume_reading
        app_side.read_timeout = None
        try:
            head = response_head(101, message.reason, message.raw_headers, False, b"Upgrade", b"websocket")
            transport.write(head)
            app_side.set_parser(_ToClient(transport, last, loop, end), None)
            await ended
        finally:
            timers[0].cancel()
            stats.websockets -= 1
            app_side.on_pause = app_side.on_resume = None
            self.upstream.release(conn, reusable=False)
            transport.close()
        return self.sent(101, False)


class _ToClient:
    """Takes the app's bytes after its 101 (aiohttp's `set_parser` hook) and writes them to the client."""

    def __init__(
        self,
        transport: asyncio.Transport,
        last: list[float],
        loop: asyncio.AbstractEventLoop,
        end: Callable[[], None],
    ) -> None:
        self._transport = transport
        self._last = last
        self._loop = loop
        self._end = end

    def feed_data(self, data: bytes) -> tuple[bool, int]:
        self._last[0] = self._loop.time()
        if not self._transport.is_closing():
            self._transport.write(data)
        return False, 0

    def feed_eof(self) -> None:
        self._end()


def _framed(head: bytes, chunk: bytes, chunked: bool, last: bool) -> list[bytes]:
    parts = [head] if head else []
    if chunked:
        if chunk:
            parts += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
        if last:
            parts.append(_LAST_CHUNK)
    elif chunk:
        parts.append(chunk)
    return parts


def _wants_websocket(request: web.BaseRequest) -> bool:
    """RFC 6455 section 4.1: a GET with `Upgrade: websocket` and `Connection: upgrade`."""
    headers = request.headers
    return (
        request.method == "GET"
        and "websocket" in headers.get("Upgrade", "").lower()
        and "upgrade" in headers.get("Connection", "").lower()
    )


async def _request_body(request: web.BaseRequest, limit: int, idle_s: float) -> AsyncIterator[bytes]:
    """The client's body as it arrives, at most `limit` bytes, each chunk within `idle_s`."""
    content = request.content
    total = 0
    while True:
        try:
            async with asyncio.timeout(idle_s):
                chunk = await content.readany()
        except TimeoutError:
            raise _ClientFailure("client_idle") from None
        except (ConnectionError, OSError):
            raise _ClientFailure("client_gone") from None
        except Exception:  # aiohttp's payload errors: a broken chunked encoding, a short body
            raise _ClientFailure("client_error") from None
        if not chunk:
            return
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(limit)
        yield chunk


def lane(app: web.Application, full: RequestHandlerFn, on_error: ErrorAnswer) -> RequestHandlerFn:
    """`full`, preceded by the pass-through of every request whose path is not ours."""
    passthrough = Passthrough(app[CONFIG], app[UPSTREAM])
    metrics = app[METRICS]

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if not passthrough.forwards(request):
            return await full(request)
        try:
            response = await passthrough.forward(request, send_continue=True)
        except ImgproxyError as exc:
            response = on_error(exc)
        metrics.count_response(response.status)
        return response

    return handle


@web.middleware
async def middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """What the router does not know and is not ours goes to the app (405s stay ours)."""
    upstream = request.app.get(UPSTREAM)
    if upstream is not None and isinstance(request.match_info.http_exception, web.HTTPNotFound):
        passthrough = Passthrough(request.app[CONFIG], upstream)
        if passthrough.forwards(request):
            return await passthrough.forward(request, send_continue=False)
    return await handler(request)
