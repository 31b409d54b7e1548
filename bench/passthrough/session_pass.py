"""A straightforward pass-through for comparison:
`python -m bench.passthrough.session_pass --upstream URL --port N`.

What a first version would look like: one aiohttp route for every path, one `ClientSession` per
process (keep-alive pool, no decompression), the answer streamed back through `web.StreamResponse`.
Same aiohttp and uvloop as imgproxy; `--workers N` processes share the port (SO_REUSEPORT). It is
not a full proxy (no hop-by-hop or forwarded headers rules): a lower bound on the work, not a rival.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from collections.abc import AsyncIterator
from typing import Final

import aiohttp
from aiohttp import web
from yarl import URL

_SESSION: Final = web.AppKey("session", aiohttp.ClientSession)
_UPSTREAM: Final = web.AppKey("upstream", str)
_HOP: Final = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"})


async def _session_ctx(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        app[_SESSION] = session
        yield


async def _forward(request: web.Request) -> web.StreamResponse:
    url = URL(request.app[_UPSTREAM] + request.raw_path, encoded=True)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
    data = request.content if request.body_exists else None
    session = request.app[_SESSION]
    async with session.request(request.method, url, headers=headers, data=data) as upstream:
        response = web.StreamResponse(status=upstream.status)
        for name, value in upstream.headers.items():
            if name.lower() not in _HOP:
                response.headers.add(name, value)
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


def _serve(upstream: str, port: int) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    app = web.Application()
    app[_UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(_session_ctx)
    app.router.add_route("*", "/{tail:.*}", _forward)
    print(f"serving on {port}", flush=True)
    web.run_app(app, host="127.0.0.1", port=port, reuse_port=True, access_log=None, print=None)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    procs = [
        multiprocessing.Process(target=_serve, args=(args.upstream, args.port)) for _ in range(args.workers)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
