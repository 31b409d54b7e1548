"""`GET` and `HEAD /images/{blob path}`."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from ..errors import BadPath
from ..http_semantics import X_CACHE, blob_headers
from ..keys import CONFIG, FETCHER, METRICS
from ..paths import parse_blob_path
from ..streaming import send_stream

PREFIX: Final = "/images/"


def blob_path_after(prefix: str, request: web.Request) -> str:
    """The validated blob path that follows `prefix` in the raw (undecoded) request path."""
    raw = request.rel_url.raw_path
    if not raw.startswith(prefix):  # e.g. "/images%2Fx", which the router decodes
        raise BadPath(f"path must start with {prefix}")
    return parse_blob_path(raw[len(prefix) :])


async def get_image(request: web.Request) -> web.StreamResponse:
    """Answer with the blob's bytes from the cache, or streamed from Azure."""
    path = blob_path_after(PREFIX, request)
    config = request.app[CONFIG]
    metrics = request.app[METRICS]
    head = request.method == "HEAD"
    resolved = await request.app[FETCHER].resolve(path, want_body=not head)
    headers = blob_headers(resolved.meta, config.http.cache_control)
    headers[X_CACHE] = resolved.status.value

    if resolved.body is not None:
        if not head:
            metrics.bytes_served.inc(len(resolved.body))
        return web.Response(body=resolved.body, headers=headers)

    response = web.StreamResponse(headers=headers)
    response.content_length = resolved.meta.size
    await response.prepare(request)
    if resolved.stream is None:  # HEAD of a large blob: headers only
        await response.write_eof()
        return response
    sent = await send_stream(request, response, resolved.stream, config.http.stream_chunk_bytes)
    metrics.bytes_served.inc(sent)
    return response
