"""The request lanes ahead of aiohttp's router: hits answered from memory (`hot_path`, which also
gives every request its id), then the pass-through to the main application for every path that
is not ours; the router takes the rest.

`install_lanes(runner)` puts them on a runner's low-level server (after `setup()`); the server
`python -m imgproxy` runs and the tests' servers both come from `server.start_runner`, which
does it. `passthrough_middleware` is the same pass-through for an app served without the lanes:
it forwards what the router does not know.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from imgproxy.core.errors import ImgproxyError
from imgproxy.core.request_context import current
from imgproxy.http.statuses import error_response
from imgproxy.web.hot_path import hot_path
from imgproxy.web.keys import METRICS, PASSTHROUGH, TRACER
from imgproxy.web.traced import traced_requests

RequestHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def install_lanes(runner: web.AppRunner) -> None:
    """Give the request its id, answer hits, then forward what is not ours, then route (call
    after `setup()`)."""
    server = runner.server
    if server is None:
        raise RuntimeError("install_lanes needs runner.setup() first")
    app = runner.app
    handler = server.request_handler
    if PASSTHROUGH in app:
        handler = passthrough_lane(app, handler)
    handler = hot_path(app, handler, error_response)
    tracer = app.get(TRACER)
    if tracer is not None:  # [otel] enabled: every request in a server span (nothing when off)
        handler = traced_requests(tracer, handler)
    server.request_handler = handler


def passthrough_lane(app: web.Application, full: RequestHandler) -> RequestHandler:
    """`full`, preceded by the pass-through of every request whose path is not ours."""
    passthrough = app[PASSTHROUGH]
    metrics = app[METRICS]

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if not passthrough.forwards(request):
            return await full(request)
        context = current()
        if context is not None:
            context.cache = "pass"
        try:
            response = await passthrough.forward(request, send_continue=True)
        except ImgproxyError as exc:
            response = error_response(exc)
        metrics.count_response(response.status)
        return response

    return handle


@web.middleware
async def passthrough_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """What the router does not know and is not ours goes to the app (405s stay ours)."""
    passthrough = request.app.get(PASSTHROUGH)
    if (
        passthrough is not None
        and isinstance(request.match_info.http_exception, web.HTTPNotFound)
        and passthrough.forwards(request)
    ):
        context = current()
        if context is not None:
            context.cache = "pass"
        return await passthrough.forward(request, send_continue=False)
    return await handler(request)
