"""The routes this service answers itself, listed once: the router is built from them, and the
pass-through forwards every path that is none of them (`OwnRoutes`).

`/images/...` is ours whatever the method (`POST /images/x` is our 405); the operations routes
(`/healthz`, `/readyz`, `/metrics`) and the whole `/admin/` namespace sit under
`server.ops_prefix`, and stay ours whether or not the admin API is on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from imgproxy.config import Config
from imgproxy.passthrough.lane import OwnRoutes
from imgproxy.web import admin, images, ops

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# The router matches the decoded path: [\s\S] lets a bad path (even one holding a newline) reach
# its handler to be refused with a 400, rather than fall through to a 404.
_TAIL: Final = r"{path:[\s\S]*}"
ADMIN_NAMESPACE: Final = "/admin/"  # ours entirely, under the ops prefix


@dataclass(frozen=True, slots=True)
class Route:
    """One route: `path` is taken after `server.ops_prefix` when `ops`; `tail` matches every path
    under it (its handler reads the rest); `admin` routes exist only with `admin.token`."""

    method: str
    path: str
    handler: Handler
    ops: bool = True
    tail: bool = False
    admin: bool = False


ROUTES: Final = (
    Route("GET", images.PREFIX, images.get_image, ops=False, tail=True),  # HEAD too (add_get)
    Route("GET", "/healthz", ops.healthz),
    Route("GET", "/readyz", ops.readyz),
    Route("GET", "/metrics", ops.metrics),
    Route("GET", "/admin/cache", admin.cache_stats, admin=True),
    Route("DELETE", "/admin/cache", admin.purge_all, admin=True),
    Route("DELETE", admin.PURGE_PREFIX, admin.purge_one, tail=True, admin=True),
)


def _full(route: Route, ops_prefix: str) -> str:
    return (ops_prefix if route.ops else "") + route.path


def add_routes(router: web.UrlDispatcher, config: Config) -> None:
    """Register every route `config` turns on."""
    for route in ROUTES:
        if route.admin and not config.admin.token:
            continue
        path = _full(route, config.server.ops_prefix) + (_TAIL if route.tail else "")
        if route.method == "GET":
            router.add_get(path, route.handler)
        else:
            router.add_route(route.method, path, route.handler)


def own_routes(config: Config) -> OwnRoutes:
    """The paths that never go to the main application (all of `ROUTES`, on or off, and the
    admin namespace)."""
    prefix = config.server.ops_prefix
    prefixes = [_full(route, prefix) for route in ROUTES if route.tail]
    prefixes.append(prefix + ADMIN_NAMESPACE)
    exact = {_full(route, prefix) for route in ROUTES if not route.tail}
    return OwnRoutes(tuple(dict.fromkeys(prefixes)), frozenset(exact))
