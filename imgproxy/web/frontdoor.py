"""The server's side of every client connection: the deadlines and limits aiohttp has no setting for.

aiohttp closes a connection that idles between requests (`server.keepalive_timeout_s`, passed
as its `keepalive_timeout`) but has no deadline for a request head that trickles in, none for a
client that stops reading its answer, and no cap per client. `FrontDoorRunner` (an `AppRunner`)
makes every connection's protocol a `FrontDoorHandler`, which adds them:

- **Head deadline** (`server.header_timeout_s`): a new connection must complete its first request
  head within it; a kept-alive one, from the first byte of its next request (the silence before
  that byte is the keep-alive timeout's). Past it: 408 if part of a head arrived (RFC 9110
  section 15.5.9), else the connection is closed quietly. Kept as a deadline that one timer per
  connection checks when it fires, so a request costs a clock read, not a timer.
- **Send deadline** (`http.send_timeout_s`): while the transport holds more than its high-water
  mark unsent (the client is not reading), a timer runs; the client catching up stops it. Past
  it the connection is aborted, so whatever waits on a write (a disk file, an origin stream, a
  reader of a shared download, a pass-through) gets `ConnectionResetError` and lets go. Every
  answer goes through this: aiohttp's responses, the hot path's pre-serialized writes, the
  pass-through's relays (asyncio's native sendfile waits on the socket itself: `streaming`
  bounds it in pieces).
- **Connections per client address** (`server.max_connections_per_ip`, 0: no cap): a connection
  beyond it gets a 503 and is closed before anything of it is read.

`hide_versions` makes aiohttp's `Server` header say `imgproxy` (no Python or aiohttp version),
on its own answers (a 400 for a malformed request) too.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any, Final, cast

from aiohttp import web, web_response
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from imgproxy.config import Config
from imgproxy.core.request_context import HEADER as REQUEST_ID
from imgproxy.core.request_context import current_id, new_request_id
from imgproxy.core.stats import FrontDoorStats
from imgproxy.http.prebuilt import closing_answer
from imgproxy.http.semantics import SERVER_NAME

_REQUEST_TIMEOUT: Final = closing_answer(408, "Request Timeout", "request head not received in time")
_TOO_MANY: Final = closing_answer(503, "Service Unavailable", "too many connections from one address", 1)


def hide_versions() -> None:
    """aiohttp's default `Server` value names Python's and its own version; ours names neither.

    aiohttp has no setting for it: it reads this module constant when it prepares a response that
    has no `Server` of its own (its own 400s included), so that constant is what we set.
    """
    web_response.SERVER_SOFTWARE = SERVER_NAME  # type: ignore[attr-defined]


class FrontDoor:
    """The limits of one server (from `server.*` and `http.send_timeout_s`) and its per-address table."""

    def __init__(self, config: Config) -> None:
        self.header_timeout_s = config.server.header_timeout_s
        self.send_timeout_s = config.http.send_timeout_s
        self.max_per_ip = config.server.max_connections_per_ip
        self.stats = FrontDoorStats()
        self._per_ip: dict[str, int] = {}  # open connections by address; no entry at zero

    def admit(self, ip: str) -> bool:
        """Count a connection from `ip`; False if that makes more than the cap (it still counts
        until `leave`)."""
        count = self._per_ip.get(ip, 0) + 1
        self._per_ip[ip] = count
        return count <= self.max_per_ip

    def leave(self, ip: str) -> None:
        count = self._per_ip.get(ip, 0) - 1
        if count > 0:
            self._per_ip[ip] = count
        else:
            self._per_ip.pop(ip, None)


class FrontDoorHandler(RequestHandler):
    """aiohttp's protocol for one client connection, with the front door's deadlines and cap."""

    __slots__ = ("_client_ip", "_door", "_head_bytes", "_head_deadline", "_head_timer", "_send_timer")

    def __init__(self, manager: FrontDoorServer, *, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self._door = manager.door
        self._head_deadline = 0.0  # when the pending request head must be complete; 0: none pending
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = False  # part of the pending head has arrived (a 408 is owed, not silence)
        self._send_timer: asyncio.TimerHandle | None = None
        self._client_ip: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        door = self._door
        door.stats.open += 1
        self._expect_head(self._loop.time())
        if door.max_per_ip:
            peer = transport.get_extra_info("peername")
            if isinstance(peer, tuple) and peer:  # not a Unix socket (the workers' relay)
                self._client_ip = ip = str(peer[0])
                if not door.admit(ip):
                    door.stats.count("per_ip")
                    cast(asyncio.Transport, transport).write(_TOO_MANY)  # uvloop's is no subclass
                    self.force_close()  # close() flushes the 503 first

    def connection_lost(self, exc: BaseException | None) -> None:
        door = self._door
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        if self._client_ip is not None:
            door.leave(self._client_ip)
            self._client_ip = None
        door.stats.open -= 1
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not data:  # aiohttp re-feeds its parser with b"" when reading resumes
            super().data_received(data)
            return
        if not self._head_deadline and not self._request_in_progress and not self._upgraded:
            self._expect_head(self._loop.time())  # the first byte of the next request
        self._head_bytes = True
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:  # a head is complete (what follows it waits its turn)
            self._head_deadline = 0.0

    def _expect_head(self, now: float) -> None:
        self._head_deadline = deadline = now + self._door.header_timeout_s
        self._head_bytes = False
        if self._head_timer is None:
            self._head_timer = self._loop.call_at(deadline, self._check_head)

    def _check_head(self) -> None:
        self._head_timer = None
        deadline = self._head_deadline
        if not deadline or self.transport is None:
            return
        if self._loop.time() < deadline:  # a later head than the one this timer was set for
            self._head_timer = self._loop.call_at(deadline, self._check_head)
            return
        self._door.stats.count("head_timeout")
        if self._head_bytes:
            self.transport.write(_REQUEST_TIMEOUT)
        self.force_close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a request its parser refused quotes the offending bytes: ours is the
        status in fixed words (a client's input is never echoed). It carries the request's id
        (a new one for a request that never reached the lanes)."""
        if status != HTTPStatus.INTERNAL_SERVER_ERROR:
            message = f"{status} {HTTPStatus(status).phrase}\n"
        response = super().handle_error(request, status, exc, message)
        response.headers[REQUEST_ID] = current_id() or new_request_id()
        return response

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        """A malformed request is the client's mistake, one line at INFO; aiohttp logs each with a
        traceback at ERROR, which anyone on the internet could fill the log with."""
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            reason = (exc.message or type(exc).__name__).strip().splitlines()[0][:120]
            self.logger.info("bad request from %s: %r", self._client_ip or self.peername, reason)
            return
        super().log_exception(*args, **kwargs)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self._loop.call_later(self._door.send_timeout_s, self._send_expired)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_expired(self) -> None:
        self._send_timer = None
        transport = self.transport
        if transport is not None and self.writing_paused:
            self._door.stats.count("send_timeout")
            transport.abort()  # now: what is queued for a client that does not read is dropped


class FrontDoorServer(web.Server):
    """aiohttp's low-level server making `FrontDoorHandler`s (built from the runner's own server)."""

    def __init__(self, plain: web.Server, door: FrontDoor) -> None:
        # aiohttp builds its Server from the app and keeps the handler's settings (the app's
        # handler_args, the runner's access log) in `_kwargs`; the same go to our handlers.
        kwargs: dict[str, Any] = dict(plain._kwargs)
        super().__init__(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            **kwargs,
        )
        self.door = door

    def __call__(self) -> RequestHandler:
        return FrontDoorHandler(self, loop=self._loop, **self._kwargs)


class FrontDoorRunner(web.AppRunner):
    """An `AppRunner` whose connections pass the front door (`door`)."""

    def __init__(self, app: web.Application, door: FrontDoor, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.door = door

    async def _make_server(self) -> web.Server:
        return FrontDoorServer(await super()._make_server(), self.door)


def handler_args(config: Config) -> dict[str, Any]:
    """What aiohttp's protocol is told for every connection (`web.Application(handler_args=...)`).

    `auto_decompress` off: a request body reaches whoever reads it as the client sent it. Inflated,
    a `Content-Encoding: gzip` body would be forwarded to the app under the client's (compressed)
    `Content-Length`, and the surplus would be read by the app as a request of its own (smuggling).
    """
    return {"auto_decompress": False, "keepalive_timeout": config.server.keepalive_timeout_s}
