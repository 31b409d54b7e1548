"""Request ids: taken from the client's `X-Request-ID` (when valid) or made, and returned in every answer.

`identified(handler)` is the outermost lane (`web.lanes`): it starts the request's context
(`core.request_context.begin`) before anything else runs, so that the hot path, the pass-through,
the router, the origin's Azure calls and the log lines all see the same id, and puts the id on
an answer not yet sent. Answers sent by the code that made them carry it already: the hot path's
pre-serialized hits and the pass-through's relayed heads write it themselves, and routed answers
that prepare themselves (streams, files) get it from `echo_request_id` (`on_response_prepare`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from imgproxy.core.request_context import HEADER, begin, current_id
from imgproxy.http.prebuilt import Sent

RequestHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def identified(handler: RequestHandler) -> RequestHandler:
    """`handler`, run in a request context of its own whose id every answer carries."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        context = begin(request.headers.get(HEADER))
        response = await handler(request)
        # A `Sent` is already on the wire (with the id); a prepared answer got it when prepared.
        if not response.prepared and type(response) is not Sent:
            response.headers[HEADER] = context.request_id
        return response

    return handle


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: a routed answer carries the request's id, also one prepared by its
    handler (a stream, a file, an error raised through the middleware)."""
    request_id = current_id()
    if request_id is not None:
        response.headers[HEADER] = request_id
