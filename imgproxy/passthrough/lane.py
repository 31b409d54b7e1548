"""Every request that is not ours goes through to the main application, and its answer comes back.

`forward` sends the request (method and target exactly as received, headers per `passthrough.headers`,
the body streamed) through the `Upstream` pool and writes the app's answer straight to the client's
transport as it arrives: the head, then each chunk (re-chunked when the app gave no length), waiting
for the client to drain, so memory stays at a few buffers whatever the size. A websocket handshake
that the app accepts (101) becomes a byte tunnel both ways, so frames, pings and close codes reach
the other side exactly as sent (`tunnel`). Until our head is written, failures are raised as project
errors (mapped to 502/504/413 by `http.statuses`); after it, the client's connection is aborted, so a cut
body never looks complete. A `ClientTap` on the client's transport reports the moment the client
goes away: the wait for the app is cancelled and its connection released at once.

`web.lanes` puts it in front of aiohttp's router (as the hot path is for hits), and also offers
it as a middleware for what the router does not know.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from aiohttp.http import HttpVersion11

from imgproxy.config import Config
from imgproxy.core.errors import BodyTooLarge, ImgproxyError, PassthroughBusy, RequestTimeout, UpstreamError
from imgproxy.core.request_context import current, current_id
from imgproxy.core.tracing import RawHeaders, SpanKind, Tracer
from imgproxy.http.prebuilt import closing_answer, sent
from imgproxy.passthrough import request_body
from imgproxy.passthrough.connection import Exchange
from imgproxy.passthrough.headers import Forwarding, framed, origin_form, request_head, response_head
from imgproxy.passthrough.pool import Upstream
from imgproxy.passthrough.tunnel import ClientTap, Tunnel

_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_CLOSED: Final = sent(499, False)  # nothing sent: nginx's "client closed request"
# Said and closed at once: aiohttp would otherwise go on reading the slow body for its lingering time.
_BODY_TIMEOUT: Final = closing_answer(408, "Request Timeout", "request body not received in time")
# RFC 9110 section 9.2.2: a request of these methods (without a body) may be sent twice.
_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_ERROR_KIND: Final[dict[type[ImgproxyError], str]] = {
    BodyTooLarge: "body_too_large",
    RequestTimeout: "client_timeout",
    PassthroughBusy: "busy",
}


class _ClientFailure(Exception):
    """The client's side failed (went away, stalled or sent a broken body): abort, no answer."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class OwnRoutes:
    """The paths this service answers itself (they never reach the app): given by `web.routes`."""

    prefixes: tuple[str, ...]
    exact: frozenset[str]

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and (path in self.exact or path.startswith(self.prefixes))


def _decoded_path(request: web.BaseRequest) -> str:
    """The path the router matches (decoded), computed only when the raw one differs from it."""
    raw = request.raw_path.partition("?")[0]
    if "%" in raw or not raw.startswith("/"):
        return request.path
    return raw


class Passthrough:
    """Forwards the requests for paths not in `own` to the app of one worker (`upstream`), per
    `config.upstream`: one per application, made with the upstream pool."""

    def __init__(
        self, config: Config, upstream: Upstream, own: OwnRoutes, tracer: Tracer | None = None
    ) -> None:
        self.config = config.upstream
        self.tracer = tracer  # None: tracing off
        self.send_timeout_s = config.http.send_timeout_s
        self.upstream = upstream
        self.own = own
        self.budget = request_body.BufferBudget(config.upstream)
        self._handshakes = 0  # websocket handshakes under way (not tunnels yet)

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
        tap = ClientTap.on(transport)

        def cancel() -> None:  # the client went away: stop waiting for the app at once
            task.cancel()

        tap.on_lost = cancel
        try:
            if self.tracer is None:
                return await self._forward(request, transport, tap, send_continue)
            return await self._traced(request, transport, tap, send_continue)
        except asyncio.CancelledError:
            if not tap.lost:
                raise
            task.uncancel()
            self.upstream.stats.count_error("client_gone")
            return _CLOSED
        finally:
            tap.on_lost = None  # a tunnel clears what it set itself

    async def _traced(
        self, request: web.BaseRequest, transport: asyncio.Transport, tap: ClientTap, send_continue: bool
    ) -> web.StreamResponse:
        """`_forward` in a client span, whose `traceparent` the app receives (`_raw_headers`)."""
        assert self.tracer is not None
        attributes = {
            "http.request.method": request.method,
            "server.address": self.upstream.host_header.decode(),
        }
        with self.tracer.span("passthrough", SpanKind.CLIENT, attributes) as span:
            response = await self._forward(request, transport, tap, send_continue)
            span.set_attribute("http.response.status_code", response.status)
            return response

    def _raw_headers(self, request: web.BaseRequest) -> RawHeaders:
        """The client's header fields (traced: the pass-through span's trace context, not theirs)."""
        if self.tracer is None:
            return request.raw_headers
        return self.tracer.propagated(request.raw_headers)

    def _forwarding(self, request: web.BaseRequest, tap: ClientTap) -> Forwarding:
        """The connection's `Forwarding`: its peer and scheme do not change, nor does our config."""
        forwarding = tap.forwarding
        if forwarding is None:
            forwarding = tap.forwarding = Forwarding(
                client_ip=request.remote or "",
                scheme=request.scheme,
                upstream_host=self.upstream.host_header,
                preserve_host=self.config.preserve_host,
                trust_forwarded=self.config.trust_forwarded,
            )
        return forwarding

    async def _forward(
        self, request: web.BaseRequest, transport: asyncio.Transport, tap: ClientTap, send_continue: bool
    ) -> web.StreamResponse:
        target, authority = origin_form(request.raw_path)
        if _wants_websocket(request):
            return await self._tunnel(request, transport, tap, target, authority)
        config = self.config
        length = request.content_length
        has_body = request.body_exists
        method = request.method
        buffered: request_body.BufferedBody | None = None
        try:
            if length is not None and length > config.max_body_bytes:
                raise BodyTooLarge(config.max_body_bytes)  # before reading any of it
            if (
                send_continue
                and has_body
                and request.version >= HttpVersion11
                and request.headers.get("Expect", "").lower() == "100-continue"
            ):
                transport.write(_CONTINUE)
            body: AsyncIterator[bytes] | None = None
            chunked = False
            if has_body and config.request_buffering:
                # The whole body first: a slow client holds no connection to the app meanwhile.
                buffered = await request_body.buffer(request, config, self.budget)
                body, length = buffered.chunks(), buffered.size
            elif has_body:
                body, chunked = request_body.stream(request, config), length is None
            head = request_head(
                method, target, self._raw_headers(request), self._forwarding(request, tap), length, chunked,
                authority=authority, request_id=current_id(),
            )  # fmt: skip
            started = time.monotonic()
            exchange = await self.upstream.exchange(
                head,
                body,
                chunked,
                head_only=method == "HEAD",
                retryable=body is None and method in _IDEMPOTENT,
                length=None if chunked or body is None else length,
            )
            if (context := current()) is not None:  # for the access log: until the app's head came
                context.upstream_s = time.monotonic() - started
        except BaseException as exc:
            if buffered is not None:
                buffered.close()
            if isinstance(exc, BodyTooLarge | RequestTimeout | PassthroughBusy):  # announced, or read
                self.upstream.stats.count_error(_ERROR_KIND[type(exc)])
                if isinstance(exc, RequestTimeout) and not transport.is_closing():
                    transport.write(_BODY_TIMEOUT)
                    transport.close()
                    return sent(408, False)
            elif isinstance(exc, request_body.ClientBodyFailed):
                self.upstream.stats.count_error(exc.kind)
                transport.abort()
                return _CLOSED
            raise
        try:
            return await self._relay(request, transport, exchange)
        finally:
            exchange.close()  # the app may have answered before reading the body: its pump stops
            if buffered is not None:
                buffered.close()

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
        context = current()
        head = response_head(
            message.code, message.reason, message.raw_headers, chunked, connection,
            request_id=None if context is None else context.request_id,
        )  # fmt: skip
        sent_bytes = len(head)
        try:
            first = exchange.buffered()
            done = exchange.at_eof()
            transport.writelines(framed(head, first, chunked, done))
            sent_bytes += len(first)
            while not done:
                await self._drain(request)
                chunk = await exchange.read()
                done = not chunk or exchange.at_eof()
                if transport.is_closing():
                    raise _ClientFailure("client_gone")
                transport.writelines(framed(b"", chunk, chunked, done))
                sent_bytes += len(chunk)
        except (UpstreamError, _ClientFailure) as exc:  # either side failed mid-body: never a
            self.upstream.stats.count_error(exc.kind)  # complete-looking body
            transport.abort()
            return sent(message.code, False)
        finally:
            if context is not None:
                context.sent_bytes = sent_bytes
        if not request.content.is_eof():  # the app answered before reading the whole body
            request.protocol.force_close()
            return sent(message.code, False)
        return sent(message.code, keep_alive)

    async def _drain(self, request: web.BaseRequest) -> None:
        """Wait while the client's buffer is full, at most `http.send_timeout_s`."""
        if request.protocol.writing_paused:
            try:
                async with asyncio.timeout(self.send_timeout_s):
                    await request.writer.drain()
            except TimeoutError:
                raise _ClientFailure("client_idle") from None

    async def _tunnel(
        self,
        request: web.BaseRequest,
        transport: asyncio.Transport,
        tap: ClientTap,
        target: str,
        authority: bytes | None,
    ) -> web.StreamResponse:
        """A websocket handshake: the app's 101 opens a byte tunnel; any other answer is relayed.

        Tunnels and handshakes together are at most `upstream.max_websockets`, each on a
        connection of its own (never one of the pool's)."""
        stats = self.upstream.stats
        if stats.websockets + self._handshakes >= self.config.max_websockets:
            stats.count_error("websockets_full")
            raise PassthroughBusy("websockets")
        head = request_head(
            request.method,
            target,
            self._raw_headers(request),
            self._forwarding(request, tap),
            None,
            False,
            upgrade=b"websocket",
            authority=authority,
            request_id=current_id(),
        )
        self._handshakes += 1
        try:
            exchange = await self.upstream.exchange(
                head, None, False, head_only=False, upgrade=True, retryable=False
            )
        finally:
            self._handshakes -= 1
        if exchange.message.code != 101:
            try:
                return await self._relay(request, transport, exchange)
            finally:
                exchange.close()
        stats.websockets += 1
        try:
            head_101 = response_head(
                101, exchange.message.reason, exchange.message.raw_headers, False, b"Upgrade", b"websocket",
                current_id(),
            )  # fmt: skip
            tunnel = Tunnel(tap, transport, exchange.conn.proto, self.config.idle_timeout_s)
            if await tunnel.run(head_101):
                stats.count_error("idle")
        finally:
            stats.websockets -= 1
            self.upstream.release(exchange.conn, reusable=False)
        return sent(101, False)


def _wants_websocket(request: web.BaseRequest) -> bool:
    """RFC 6455 section 4.1: a GET with `Upgrade: websocket` and `Connection: upgrade`."""
    headers = request.headers
    return (
        request.method == "GET"
        and "websocket" in headers.get("Upgrade", "").lower()
        and "upgrade" in headers.get("Connection", "").lower()
    )
