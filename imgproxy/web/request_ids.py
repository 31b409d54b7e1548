"""Request ids: taken from the client's `X-Request-ID` (when valid) or made, and returned in every answer.

The hot path, the outermost lane, starts the request's context (`core.request_context.begin`)
before anything else runs, so that the pass-through, the router, the origin's Azure calls and the
log lines all see the same id, and `stamp`s the id on an answer not yet sent. Answers sent by the
code that made them carry it already: the hot path's pre-serialized hits and the pass-through's
relayed heads write it themselves, and routed answers that prepare themselves (streams, files)
get it from `echo_request_id` (`on_response_prepare`).
"""

from __future__ import annotations

from aiohttp import web

from imgproxy.core.request_context import HEADER, current_id
from imgproxy.http.prebuilt import Sent


def stamp(response: web.StreamResponse, request_id: str) -> None:
    """Put `request_id` on `response` unless it is sent already (a `Sent` carried it itself; a
    prepared answer got it from `echo_request_id`)."""
    if type(response) is not Sent and not response.prepared:
        response.headers[HEADER] = request_id


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: a routed answer carries the request's id, also one prepared by its
    handler (a stream, a file, an error raised through the middleware)."""
    request_id = current_id()
    if request_id is not None:
        response.headers[HEADER] = request_id
