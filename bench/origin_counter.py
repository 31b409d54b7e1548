"""A counting HTTP proxy in front of Azurite: `python -m bench.origin_counter --upstream URL --port N`.

Every target reaches Azurite through it, so "how many origin requests did this cause" has one
independent witness for imgproxy, nginx and Varnish alike. It streams bodies (256 KiB chunks) and
keeps upstream connections alive; it is only on the miss path, so hit throughput never touches it.
`GET /__bench/stats` answers `{"<METHOD> <blob>": count, ...}` (blob: the path after the container).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
from collections import Counter
from typing import Final
from urllib.parse import unquote

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web
from yarl import URL

from devtools.azurite import ACCOUNT

STATS_PATH: Final = "/__bench/stats"
# Hop-by-hop and framing headers belong to each connection, never forwarded.
_SKIP: Final = frozenset({"host", "connection", "keep-alive", "transfer-encoding", "content-length"})
_COUNTS: Final = web.AppKey[Counter[str]]("counts")
_SESSION: Final = web.AppKey("session", ClientSession)
_UPSTREAM: Final = web.AppKey("upstream", str)


def blob_of(raw_path: str) -> str:
    """'/devstoreaccount1/container/a/b.png' -> 'a/b.png'."""
    parts = unquote(raw_path).lstrip("/").split("/", 2)
    if parts and parts[0] == ACCOUNT:
        parts = parts[1:]
    return parts[1] if len(parts) > 1 else ""


async def _stats(request: web.Request) -> web.Response:
    counts: Counter[str] = request.app[_COUNTS]
    return web.json_response(dict(counts))


async def _forward(request: web.Request) -> web.StreamResponse:
    request.app[_COUNTS][f"{request.method} {blob_of(request.rel_url.raw_path)}"] += 1
    body = await request.read()
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIP}
    url = URL(request.app[_UPSTREAM] + request.rel_url.raw_path_qs, encoded=True)
    async with request.app[_SESSION].request(
        request.method,
        url,
        headers=headers,
        data=io.BytesIO(body) if body else None,
        allow_redirects=False,
    ) as upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in _SKIP:
                response.headers.add(name, value)
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        async for chunk in upstream.content.iter_chunked(256 * 1024):
            await response.write(chunk)
        await response.write_eof()
        return response


async def serve(upstream: str, host: str, port: int) -> None:
    app = web.Application()
    app[_COUNTS] = Counter()
    app[_UPSTREAM] = upstream.rstrip("/")
    session = ClientSession(
        connector=TCPConnector(limit=0), auto_decompress=False, timeout=ClientTimeout(total=None)
    )
    app[_SESSION] = session
    app.router.add_get(STATS_PATH, _stats)
    app.router.add_route("*", "/{tail:.*}", _forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        print(f"origin counter on http://{host}:{port} -> {upstream}", file=sys.stderr, flush=True)
        await asyncio.Event().wait()  # until SIGTERM ends the process
    finally:
        await runner.cleanup()
        await session.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(serve(args.upstream, args.host, args.port))
    else:
        uvloop.run(serve(args.upstream, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
