"""The soak's stand-in for the main application: `python -m bench.soak.app --port N`.

`POST /upload` reads the body and answers its length and SHA-256 (the soak checks them);
`GET /page/{n}` answers a small HTML page. Its own process, so its memory is not the proxy's.
"""

from __future__ import annotations

import argparse
import hashlib

from aiohttp import web


async def upload(request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        digest.update(chunk)
        size += len(chunk)
    return web.json_response({"bytes": size, "sha256": digest.hexdigest()})


async def page(request: web.Request) -> web.Response:
    return web.Response(
        text=f"<html><body>page {request.match_info['n']}</body></html>", content_type="text/html"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/upload", upload)
    app.router.add_get("/page/{n}", page)
    print(f"soak app on {args.port}", flush=True)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
