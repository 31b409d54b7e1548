"""A small HTTP proxy between imgproxy and Azurite that counts and can misbehave on command.

The connection string's `BlobEndpoint` points here; requests are forwarded unchanged (SharedKey
signatures do not cover the Host header, so they still verify). Every request is recorded with
the blob it named, its Range header and how many body bytes went back. A test can install a
`hook` that runs before forwarding: it may wait on events, or return its own response (a fault).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import ClientSession, ClientTimeout, web

from devtools.forwarding import send_upstream, split_blob_path, start_reply

Hook = Callable[[web.Request], Awaitable[web.StreamResponse | None]]


def range_start(request: web.Request) -> int | None:
    """Where a ranged read starts (`x-ms-range` or `Range: bytes=N-...`), None if not ranged."""
    value = request.headers.get("x-ms-range") or request.headers.get("Range") or ""
    first = value.removeprefix("bytes=").partition("-")[0]
    return int(first) if value.startswith("bytes=") and first.isdigit() else None


def reads_from(offset: int, name: str | None = None) -> Callable[[web.Request], bool]:
    """Matches ranged reads (of blob `name`, if given) starting at or after byte `offset`."""

    def matches(request: web.Request) -> bool:
        start = range_start(request)
        named = name is None or request.path.endswith("/" + name)
        return named and start is not None and start >= offset

    return matches


@dataclass(slots=True)
class Recorded:
    method: str
    container: str
    blob: str
    range: str | None
    pinned: bool  # carried If-Match (a read pinned to one blob version)
    conditional: bool  # carried If-None-Match (a revalidation)
    status: int = 0
    body_bytes: int = 0
    client_request_id: str | None = None  # x-ms-client-request-id as it went to Azure


@dataclass(slots=True)
class Held:
    """Requests matching a predicate wait here until `release` is set."""

    predicate: Callable[[web.Request], bool]
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    count: int = 0


class OriginProxy:
    """Forward to `upstream`, recording every request."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.requests: list[Recorded] = []
        self.hook: Hook | None = None
        # Body faults applied while forwarding: cut after N bytes, or flip one byte.
        self.truncate_after: tuple[Callable[[web.Request], bool], int] | None = None
        self.corrupt: Callable[[web.Request], bool] | None = None
        self._session: ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.endpoint = ""

    async def start(self, host: str = "127.0.0.1") -> None:
        self._session = ClientSession(auto_decompress=False, timeout=ClientTimeout(total=None))
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        port = server.sockets[0].getsockname()[1]
        self.endpoint = f"http://{host}:{port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # --- what the tests read -------------------------------------------------------------
    def blob_requests(self, blob: str, method: str = "GET") -> list[Recorded]:
        """Requests for one blob (any container) with this method."""
        return [r for r in self.requests if r.blob == blob and r.method == method]

    def count(self, blob: str, method: str = "GET") -> int:
        return len(self.blob_requests(blob, method))

    def body_bytes(self, blob: str) -> int:
        return sum(r.body_bytes for r in self.requests if r.blob == blob)

    # --- what the tests command ----------------------------------------------------------
    def fail_with(self, status: int) -> None:
        """Answer every request with `status` until `heal()`."""

        async def hook(request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, text="injected fault")

        self.hook = hook

    def heal(self) -> None:
        self.hook = None
        self.truncate_after = None
        self.corrupt = None

    def reset(self, predicate: Callable[[web.Request], bool]) -> None:
        """Drop the connection of matching requests without answering."""

        async def hook(request: web.Request) -> web.StreamResponse | None:
            if not predicate(request):
                return None
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=599)  # never sent: the connection is gone

        self.hook = hook

    def hold(self, predicate: Callable[[web.Request], bool]) -> Held:
        """Make matching requests wait until `held.release` is set (others pass)."""
        held = Held(predicate)

        async def hook(request: web.Request) -> None:
            if held.predicate(request):
                held.count += 1
                held.arrived.set()
                await held.release.wait()

        self.hook = hook
        return held

    # --- forwarding ----------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        container, blob = split_blob_path(request.rel_url.raw_path)
        # The SDK sends ranges as x-ms-range; other clients use Range.
        byte_range = request.headers.get("x-ms-range") or request.headers.get("Range")
        record = Recorded(
            request.method,
            container,
            blob,
            byte_range,
            pinned="If-Match" in request.headers,
            conditional="If-None-Match" in request.headers,
            client_request_id=request.headers.get("x-ms-client-request-id"),
        )
        self.requests.append(record)
        if self.hook is not None:
            injected = await self.hook(request)
            if injected is not None:
                record.status = injected.status
                return injected
        assert self._session is not None
        async with send_upstream(self._session, self.upstream, request) as upstream:
            record.status = upstream.status
            response = await start_reply(request, upstream)
            limit = None
            if self.truncate_after is not None and self.truncate_after[0](request):
                limit = self.truncate_after[1]
            flip = self.corrupt is not None and self.corrupt(request)
            async for chunk in upstream.content.iter_chunked(256 * 1024):
                if flip and chunk:
                    chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                    flip = False
                if limit is not None and record.body_bytes + len(chunk) >= limit:
                    await response.write(chunk[: limit - record.body_bytes])
                    record.body_bytes = limit
                    assert request.transport is not None
                    request.transport.close()  # fewer bytes than Content-Length announced
                    return response
                await response.write(chunk)
                record.body_bytes += len(chunk)
            await response.write_eof()
            return response
