"""Operations endpoints: liveness, readiness and Prometheus metrics (behind `server.metrics_token`
when it is set; the scrape relayed to sibling workers carries the same `Authorization`)."""

from __future__ import annotations

from aiohttp import web

from imgproxy.metrics import CONTENT_TYPE, merge_workers
from imgproxy.web.bearer import require_bearer
from imgproxy.web.keys import CONFIG, METRICS, READINESS, SIBLINGS
from imgproxy.web.siblings import relay_to_siblings


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers. Never touches the origin."""
    return web.Response(text="ok\n", headers={"Cache-Control": "no-store"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 if the origin passed a check recently, else 503."""
    if await request.app[READINESS].is_ready():
        return web.Response(text="ready\n", headers={"Cache-Control": "no-store"})
    return web.Response(status=503, text="origin not ready\n", headers={"Cache-Control": "no-store"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of every metric (of every worker, labelled `worker`, if several)."""
    token = request.app[CONFIG].server.metrics_token
    if token:  # checked before any relay: an unauthorised scrape costs the siblings nothing
        require_bearer(request, token, "metrics")
    body = request.app[METRICS].render()
    siblings = request.app.get(SIBLINGS)
    relayed = await relay_to_siblings(request, siblings)
    if siblings is not None and relayed is not None:
        body = merge_workers({siblings.index: body, **relayed.answers}, len(relayed.failures))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})
