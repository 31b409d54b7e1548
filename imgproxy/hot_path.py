"""The hot path: plain GETs of fresh in-memory blobs, answered before aiohttp's router and middleware.

`install_hot_path(runner)` wraps the low-level server's request handler (`runner.server`, public
aiohttp API) after `runner.setup()`. A request it cannot answer outright (another method or route,
a conditional or Range header, a bad path, anything not fresh in memory) goes on to the
application unchanged, which gives every other answer, so behaviour is the same either way; only
the cost of a hit changes (routing and the middleware chain are a third of it). Application
signals such as `on_response_prepare` do not run for these answers: add none that must see hits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from .errors import BadPath
from .handlers.images import PREFIX, plain_hit_response
from .http_semantics import Conditions
from .keys import CONFIG, FETCHER, METRICS
from .paths import parse_blob_path_cached
from .prebuilt import SENT, write_plain_hit

RequestHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def install_hot_path(runner: web.AppRunner) -> None:
    """Answer plain hits first on `runner`'s server (call after `setup()`, before sites start)."""
    server = runner.server
    if server is None:
        raise RuntimeError("install_hot_path needs runner.setup() first")
    server.request_handler = hot_path(runner.app, server.request_handler)


def hot_path(app: web.Application, full: RequestHandler) -> RequestHandler:
    """`full`, preceded by an answer from memory for the requests that can have one at once."""
    fetcher, metrics = app[FETCHER], app[METRICS]
    cache_control = app[CONFIG].http.cache_control
    # aiohttp's access log reads the size from the response object, which a pre-serialized answer
    # leaves empty: with the log on, hits take aiohttp's Response so each line is true.
    pre_serialize = not app[CONFIG].server.access_log
    transform = app[CONFIG].transform
    # With transforms on, a query may ask for a variant, and with auto_format every answer depends
    # on Accept: such requests go to the application, which knows variants.
    any_query, never = transform.enabled, transform.enabled and transform.auto_format

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        raw = request.rel_url.raw_path
        if never or (any_query and request.rel_url.raw_query_string):
            return await full(request)
        if request.method == "GET" and raw.startswith(PREFIX) and Conditions.from_request(request).plain:
            try:
                path = parse_blob_path_cached(raw[len(PREFIX) :])
            except BadPath:
                return await full(request)  # the application words the 400
            hit = fetcher.fresh_hit(path)
            if hit is not None:
                metrics.count_response(200)
                if (
                    pre_serialize
                    and hit.body is not None
                    and write_plain_hit(request, hit.meta, hit.body, cache_control)
                ):
                    metrics.bytes_served += len(hit.body)
                    return SENT
                return plain_hit_response(app, hit, head=False)
        return await full(request)

    return handle
