"""The client's side of a pass-through: a tap on its transport, and the websocket byte tunnel.

`ClientTap` stands in for aiohttp's protocol on a client's transport (`Transport.set_protocol`,
as asyncio's own sendfile fallback does) from the first forwarded request of a connection on:
everything goes on to aiohttp as before, but a lost connection is reported at once, so the
pass-through can stop waiting for the app. `Tunnel` joins the client's connection and the app's
after the app accepted a websocket handshake (101): bytes are copied both ways as they arrive
(frames are not decoded: text, binary, ping/pong, extensions and close codes pass exactly), each
side's back-pressure pauses reading the other, and it ends when either side closes or no byte
moved either way for `idle_s`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp.web_protocol import RequestHandler

from imgproxy.passthrough.connection import AppProtocol
from imgproxy.passthrough.headers import Forwarding


class ClientTap(asyncio.Protocol):
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
        self.forwarding: Forwarding | None = None  # the pass-through's, built at its first request
        transport.set_protocol(self)

    @classmethod
    def on(cls, transport: asyncio.Transport) -> ClientTap:
        """The tap of `transport`, installed now if it has none yet."""
        protocol = transport.get_protocol()
        return protocol if isinstance(protocol, ClientTap) else cls(transport)

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


class Tunnel:
    """The client's and the app's connections joined after the app's 101."""

    def __init__(self, tap: ClientTap, client: asyncio.Transport, app: AppProtocol, idle_s: float) -> None:
        self._tap = tap
        self._client = client
        self._app = app
        self._idle_s = idle_s
        self._loop = asyncio.get_running_loop()
        self._ended: asyncio.Future[bool] = self._loop.create_future()  # True: ended idle
        self._last = self._loop.time()  # when a byte last moved, either way
        self._timer: asyncio.TimerHandle | None = None

    async def run(self, head_101: bytes) -> bool:
        """Send the client the app's 101 (`head_101`), then copy until an end; True if it idled out."""
        tap, app, client = self._tap, self._app, self._client
        tap.on_lost = self._end
        tap.divert = self._to_app
        tap.on_pause = app.pause_reading  # the client's buffer is full: stop reading the app
        tap.on_resume = app.resume_reading
        app.on_pause = client.pause_reading  # and the other way round
        app.on_resume = client.resume_reading
        app.read_timeout = None
        self._timer = self._loop.call_later(self._idle_s, self._check_idle)
        try:
            client.write(head_101)
            app.set_parser(self, None)  # aiohttp hands us the app's bytes from now on
            idle = await self._ended
        finally:
            if self._timer is not None:
                self._timer.cancel()
            tap.on_lost = tap.divert = tap.on_pause = tap.on_resume = None
            app.on_pause = app.on_resume = None
            client.close()
        return idle

    def _end(self, idle: bool = False) -> None:
        if not self._ended.done():
            self._ended.set_result(idle)

    def _to_app(self, data: bytes) -> None:
        self._last = self._loop.time()
        if self._app.transport is not None:
            self._app.transport.write(data)

    def _check_idle(self) -> None:
        if self._ended.done():
            return
        quiet = self._loop.time() - self._last
        if quiet >= self._idle_s:
            self._end(idle=True)
        else:
            self._timer = self._loop.call_later(self._idle_s - quiet, self._check_idle)

    # aiohttp's payload-parser hook (`ResponseHandler.set_parser`): the app's bytes after its 101.

    def feed_data(self, data: bytes) -> tuple[bool, int]:
        self._last = self._loop.time()
        if not self._client.is_closing():
            self._client.write(data)
        return False, 0

    def feed_eof(self) -> None:
        self._end()
