"""A counting HTTP proxy in front of Azurite: `python -m bench.origin_counter --upstream URL --port N`.

Every target reaches Azurite through it, so "how many origin requests did this cause" has one
independent witness for imgproxy, nginx and Varnish alike. It streams bodies (256 KiB chunks) and
keeps upstream connections alive; it is only on the miss path, so hit throughput never touches it.
`GET /__bench/stats` answers `{"<METHOD> <blob>": count, ...}` (blob: the path after the container).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from typing import Final

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

from devtools.forwarding import send_upstream, split_blob_path, start_reply

STATS_PATH: Final = "/__bench/stats"
_COUNTS: Final = web.AppKey[Counter[str]]("counts")
_SESSION: Final = web.AppKey("session", ClientSession)
_UPSTREAM: Final = web.AppKey("upstream", str)


async def _stats(request: web.Request) -> web.Response:
    counts: Counter[str] = request.app[_COUNTS]
    return web.json_response(dict(counts))


async def _forward(request: web.Request) -> web.StreamResponse:
    _, blob = split_blob_path(request.rel_url.raw_path)
    request.app[_COUNTS][f"{request.method} {blob}"] += 1
    async with send_upstream(request.app[_SESSION], request.app[_UPSTREAM], request) as upstream:
        response = await start_reply(request, upstream)
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
