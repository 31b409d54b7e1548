"""Admin API (registered only when `admin.token` is set): cache statistics and purges.

Every call needs `Authorization: Bearer <admin.token>`, compared in constant time.
"""

from __future__ import annotations

import hmac
from typing import Final

from aiohttp import web

from ..keys import CONFIG, FETCHER
from .images import blob_path_after

PURGE_PREFIX: Final = "/admin/cache/"


def _require_token(request: web.Request) -> None:
    expected = request.app[CONFIG].admin.token.encode()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise web.HTTPUnauthorized(
            text="admin token required\n",
            headers={"WWW-Authenticate": 'Bearer realm="imgproxy-admin"'},
        )


async def cache_stats(request: web.Request) -> web.Response:
    """`GET /admin/cache`: sizes, limits and counters as JSON."""
    _require_token(request)
    fetcher = request.app[FETCHER]
    stats = fetcher.cache_stats()
    body = {
        "cache_size": stats.items,
        "cache_bytes": stats.bytes,
        "cache_limit": stats.max_items,
        "cache_bytes_limit": stats.max_bytes,
        "evictions": stats.evictions,
        "in_flight": fetcher.in_flight(),
        **fetcher.counters(),
        **fetcher.disk_stats(),
    }
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def purge_one(request: web.Request) -> web.Response:
    """`DELETE /admin/cache/{blob path}`: forget one blob."""
    _require_token(request)
    path = blob_path_after(PURGE_PREFIX, request)
    purged = await request.app[FETCHER].purge(path)
    return web.json_response({"path": path, "purged": purged})


async def purge_all(request: web.Request) -> web.Response:
    """`DELETE /admin/cache`: forget every blob."""
    _require_token(request)
    purged = await request.app[FETCHER].purge_all()
    return web.json_response({"purged": purged})
