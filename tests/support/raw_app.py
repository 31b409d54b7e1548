"""An app on raw sockets that frames request bodies the way gunicorn, uvicorn and Node do.

It trusts the framing it is given: a body is exactly `Content-Length` bytes (or chunked, if so
announced), and whatever follows on the kept-alive connection is parsed as the next request. That
is what makes a proxy's framing mistakes visible: a proxy that announces one length and writes
another makes this app read a request nobody sent. Every request it parsed is logged (`seen`),
and each answer names the request it answers (method, target, Cookie, body hash and length), so
a test can tell who got whose answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from typing import Final

MAX_HEAD: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class Seen:
    """One request as the app parsed it."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


@dataclass
class RawApp:
    """The app: `await start()`, then `url`; `seen` lists every request parsed, in order."""

    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def targets(self) -> list[str]:
        return [seen.target for seen in self.seen]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                request = await self._read_request(head, reader)
                if request is None:
                    return
                self.seen.append(request)
                answer = json.dumps(
                    {
                        "method": request.method,
                        "target": request.target,
                        "cookie": request.header("Cookie"),
                        "body_sha256": hashlib.sha256(request.body).hexdigest(),
                        "body_bytes": len(request.body),
                        "body_start": request.body[:200].decode("latin-1"),
                    }
                ).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
                )
                await writer.drain()
        finally:
            writer.close()

    async def _read_request(self, head: bytes, reader: asyncio.StreamReader) -> Seen | None:
        lines = head[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return None
        headers = tuple(
            (name.strip(), value.strip()) for name, _, value in (line.partition(":") for line in lines[1:])
        )
        fields = {name.lower(): value for name, value in headers}
        try:
            if "chunked" in fields.get("transfer-encoding", "").lower():
                body = await _read_chunked(reader)
            else:
                body = await reader.readexactly(int(fields.get("content-length", "0")))
        except (asyncio.IncompleteReadError, ValueError, ConnectionError):
            return None
        return Seen(parts[0], parts[1], headers, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers from the proxy
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)
