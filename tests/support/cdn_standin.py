"""A stand-in for a CDN's purge endpoint: an aiohttp server in the test's loop that records every
request it takes, and that can answer 503 or refuse connections for a while (`fail`, `go_down`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from devtools.azurite import free_port


@dataclass(frozen=True, slots=True)
class Received:
    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes


class CdnStandIn:
    """Records purges (`received`); `failing_status` set: answers it instead (counted in `refused`)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.refused = 0  # requests answered with failing_status
        self.failing_status: int | None = None
        self.retry_after = ""  # sent with failing_status when set
        self.arrivals: list[float] = []  # loop time of every request
        self.port = free_port()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        self._site: web.TCPSite | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        self.arrivals.append(asyncio.get_running_loop().time())
        if self.failing_status is not None:
            self.refused += 1
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return web.Response(status=self.failing_status, headers=headers)
        body = await request.read()
        self.received.append(Received(request.method, request.path_qs, dict(request.headers), body))
        return web.json_response({"success": True})

    async def go_up(self) -> None:
        """Accept connections (again) on the same port."""
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await self._site.start()

    async def go_down(self) -> None:
        """Refuse connections until `go_up`."""
        assert self._site is not None
        await self._site.stop()
        self._site = None


@asynccontextmanager
async def run_cdn_standin() -> AsyncIterator[CdnStandIn]:
    standin = CdnStandIn()
    await standin._runner.setup()
    await standin.go_up()
    try:
        yield standin
    finally:
        await standin._runner.cleanup()
