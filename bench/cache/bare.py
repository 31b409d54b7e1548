"""The framework's ceiling: `python -m bench.cache.bare --origin URL --paths FILE --port N`.

At start it reads every listed blob from the (public) container once into a dict; then it answers
`GET /images/<path>` with `web.Response(body=...)` and nothing else: no cache logic, no headers
beyond the content type, no origin. Same aiohttp and (if importable) uvloop as imgproxy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Final

from aiohttp import ClientSession, TCPConnector, web

_BLOBS: Final = web.AppKey("blobs", dict[str, bytes])


async def load(origin: str, names: list[str]) -> dict[str, bytes]:
    """Read each blob once (8 at a time) from `origin` (the container's URL)."""
    blobs: dict[str, bytes] = {}
    limit = asyncio.Semaphore(8)
    async with ClientSession(connector=TCPConnector(limit=8)) as session:

        async def one(name: str) -> None:
            async with limit, session.get(f"{origin.rstrip('/')}/{name}") as response:
                response.raise_for_status()
                blobs[name] = await response.read()

        await asyncio.gather(*(one(name) for name in names))
    return blobs


async def _health(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _image(request: web.Request) -> web.Response:
    body = request.app[_BLOBS].get(request.match_info["path"])
    if body is None:
        raise web.HTTPNotFound()
    return web.Response(body=body, content_type="image/png")


async def serve(origin: str, names: list[str], host: str, port: int) -> None:
    app = web.Application()
    app[_BLOBS] = await load(origin, names)
    app.router.add_get("/__health", _health)
    app.router.add_get("/images/{path:.+}", _image)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        total = sum(map(len, app[_BLOBS].values()))
        print(
            f"serving on http://{host}:{port} ({len(names)} blobs, {total} bytes)",
            file=sys.stderr,
            flush=True,
        )
        await asyncio.Event().wait()  # until SIGTERM ends the process
    finally:
        await runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--origin", required=True, help="the container's URL, e.g. http://h:p/account/c")
    parser.add_argument("--paths", type=Path, required=True, help="JSON list of blob names to load")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    names: list[str] = json.loads(args.paths.read_text())
    coro = serve(args.origin, names, args.host, args.port)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(coro)
    else:
        uvloop.run(coro)
    return 0


if __name__ == "__main__":
    sys.exit(main())
