"""Admin API (registered only when `admin.token` is set): cache statistics and purges.

Every call needs `Authorization: Bearer <admin.token>`, compared in constant time. With several
workers a purge is relayed to the siblings (`siblings`): the answer says how many workers there are
and which did not confirm (then it is a 502: the purge is idempotent, send it again). With Redis
(`redis.url`) the purge is also logged for every other replica: `"logged": false` (and a 502)
when Redis did not take it; it was applied here all the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web

from imgproxy.core.stats import CacheFigures
from imgproxy.web.bearer import require_bearer
from imgproxy.web.cdn import forward_purge
from imgproxy.web.images import blob_path_after
from imgproxy.web.keys import CONFIG, FETCHER, REPLICATION, SIBLINGS
from imgproxy.web.siblings import RELAYED_HEADER, relay_to_siblings

PURGE_PREFIX: Final = "/admin/cache/"


def _require_token(request: web.Request) -> None:
    require_bearer(request, request.app[CONFIG].admin.token, "admin")


async def cache_stats(request: web.Request) -> web.Response:
    """`GET /admin/cache`: sizes, limits and counters as JSON (combined over the workers, if several:
    `CacheFigures.merge` says how each figure combines)."""
    _require_token(request)
    figures = request.app[FETCHER].figures()
    extra: dict[str, Any] = {}
    replication = request.app.get(REPLICATION)
    if replication is not None:
        extra = await replication.stats()
    body: dict[str, Any] = {**figures.as_json(), **extra}
    siblings = request.app.get(SIBLINGS)
    relayed = await relay_to_siblings(request, siblings)
    if siblings is not None and relayed is not None:
        answers = {i: json.loads(answer) for i, answer in relayed.answers.items()}
        merged = figures.merge([CacheFigures.from_json(answer) for answer in answers.values()])
        per_worker = {siblings.index: body, **answers}
        body = {
            **merged.as_json(),
            **extra,
            "workers": siblings.count,
            "workers_unreached": relayed.failures,
            "per_worker": {str(i): per_worker[i] for i in sorted(per_worker)},
        }
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def purge_one(request: web.Request) -> web.Response:
    """`DELETE /admin/cache/{blob path}`: forget one blob and its variants (in every worker and,
    with Redis, every replica)."""
    _require_token(request)
    path = blob_path_after(request.app[CONFIG].server.ops_prefix + PURGE_PREFIX, request)
    purged = await request.app[FETCHER].purge(path)
    logged = await _log_purge(request, path)
    forward_purge(request, path)
    # The path is echoed: the authenticated admin's own input, validated and sent as JSON (not
    # a client's, and never in an HTML or text body).
    return await _everywhere(
        request,
        {"path": path, "purged": purged},
        lambda answers: purged or any(a["purged"] for a in answers),
        logged,
    )


async def purge_all(request: web.Request) -> web.Response:
    """`DELETE /admin/cache`: forget every blob (in every worker; `purged` counts them all)."""
    _require_token(request)
    purged = await request.app[FETCHER].purge_all()
    logged = await _log_purge(request, None)
    forward_purge(request, None)
    return await _everywhere(
        request, {"purged": purged}, lambda answers: purged + sum(a["purged"] for a in answers), logged
    )


async def _log_purge(request: web.Request, path: str | None) -> bool | None:
    """With Redis: delete the shared copies and log the purge for the other replicas (whether both
    happened); None without Redis, and for a purge a sibling worker relayed (it logs it itself)."""
    replication = request.app.get(REPLICATION)
    if replication is None or RELAYED_HEADER in request.headers:
        return None
    return await replication.purge(path)


async def _everywhere(
    request: web.Request,
    local: dict[str, Any],
    combine: Callable[[list[dict[str, Any]]], Any],
    logged: bool | None,
) -> web.Response:
    """Answer with `local`, after relaying the call to the sibling workers if there are any; a
    502 when a sibling did not confirm or the purge log did not take it (send it again)."""
    if logged is not None:
        local = {**local, "logged": logged}
    siblings = request.app.get(SIBLINGS)
    relayed = await relay_to_siblings(request, siblings)
    if siblings is None or relayed is None:
        return web.json_response(local, status=502 if logged is False else 200)
    answers = [json.loads(body) for body in relayed.answers.values()]
    body = {
        **local,
        "purged": combine(answers),
        "workers": siblings.count,
        "workers_unreached": relayed.failures,
    }
    return web.json_response(body, status=502 if relayed.failures or logged is False else 200)
