"""The request's server span (`[otel] enabled`): `traced_requests` wraps the whole request handler,
lanes included, so a hit the hot path answers has its span too, while with tracing off nothing of
this runs (`web.lanes` installs it only when the application has a tracer).

The span continues the client's trace when its `traceparent` is valid (W3C Trace Context), else
starts one; its name is the method and, for images, the route (low cardinality: never the blob).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from imgproxy.core.tracing import Tracer
from imgproxy.web.images import PREFIX

RequestHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
_IMAGES_ROUTE = f"{PREFIX}{{path}}"


def traced_requests(tracer: Tracer, handler: RequestHandler) -> RequestHandler:
    """`handler`, each request in a server span (the parent of everything done for it)."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        method = request.method
        path = request.rel_url.raw_path
        images = path.startswith(PREFIX)
        attributes = {"http.request.method": method, "url.path": path}
        if images:
            attributes["http.route"] = _IMAGES_ROUTE
        name = f"{method} {_IMAGES_ROUTE}" if images else method
        with tracer.server_span(name, request.headers, attributes) as span:
            response = await handler(request)
            span.set_attribute("http.response.status_code", response.status)
            cache = response.headers.get("X-Cache")
            if cache is not None:
                span.set_attribute("imgproxy.cache", cache)
            return response

    return handle
