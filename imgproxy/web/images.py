"""`GET` and `HEAD /images/{blob path}`: conditional requests, ranges, cached or streamed bodies."""

from __future__ import annotations

from contextlib import aclosing
from typing import Final

from aiohttp import web

from imgproxy.cache.resolved import Resolved, Span
from imgproxy.core.blob import BlobMeta
from imgproxy.core.errors import BadPath, PreconditionFailed, RangeNotSatisfiable
from imgproxy.http.content_policy import ResponsePolicy
from imgproxy.http.paths import parse_blob_path_cached
from imgproxy.http.semantics import (
    VARY,
    X_CACHE,
    AnswerKind,
    Conditions,
    Decision,
    blob_headers,
    content_range,
    decide,
    hit_headers,
    not_modified_headers,
)
from imgproxy.http.streaming import send_file, send_stream
from imgproxy.transform.params import apply_auto_format
from imgproxy.transform.signing import ROUTE_PREFIX
from imgproxy.transform.variants import VariantRequest
from imgproxy.web.keys import CONFIG, FETCHER, METRICS, RESPONSE_POLICY, TRANSFORMS

PREFIX: Final = ROUTE_PREFIX  # what a signature covers follows it


def blob_path_after(prefix: str, request: web.Request) -> str:
    """The validated blob path that follows `prefix` in the raw (undecoded) request path."""
    raw = request.rel_url.raw_path
    if not raw.startswith(prefix):  # e.g. "/images%2Fx", which the router decodes
        raise BadPath(f"path must start with {prefix}")
    return parse_blob_path_cached(raw[len(prefix) :])


def variant_request(request: web.Request) -> VariantRequest | None:
    """The variant a request asks for (query parameters, `transform.auto_format`), or None for the
    original: transforms off, or no recognised parameter. Raises for bad or unsigned parameters."""
    transforms = request.app.get(TRANSFORMS)
    if transforms is None:
        return None
    config = request.app[CONFIG].transform
    raw_path = request.rel_url.raw_path[len(PREFIX) :]  # as written: what a signature covers
    given = transforms.parser.parse(raw_path, request.rel_url.raw_query_string)
    options = apply_auto_format(given, config)
    if options is None:
        return None
    bucket = options.bucket(request.headers.get("Accept"), config.auto_avif)
    return VariantRequest(options, bucket, automatic=given is None)


def plain_hit_response(
    app: web.Application, hit: Resolved, policy: ResponsePolicy, head: bool, vary_accept: bool = False
) -> web.Response:
    """The 200 for a fresh in-memory blob asked for without conditional or Range headers.
    Raises `ActiveContentRefused` for a blob `policy` refuses."""
    assert hit.body is not None  # fresh hits come from the memory cache, which holds bodies
    headers = hit_headers(hit.meta, policy, vary_accept)
    if not head:
        app[METRICS].bytes_served += len(hit.body)
    return web.Response(body=hit.body, headers=headers)


async def get_image(request: web.Request) -> web.StreamResponse:
    """Answer with the blob's bytes (or a 206/304/412/416) from the cache, or streamed from Azure."""
    path = blob_path_after(PREFIX, request)
    config = request.app[CONFIG]
    policy = request.app[RESPONSE_POLICY]
    conditions = Conditions.from_request(request)
    head = request.method == "HEAD"
    decision = Decision(AnswerKind.FULL)

    def choose(meta: BlobMeta) -> Span | None:
        nonlocal decision
        policy.admit(meta.content_type)  # a refused blob: 403 before any of it is read or sent
        decision = decide(conditions, meta)
        return (decision.start, decision.end) if decision.has_body and not head else None

    fetcher = request.app[FETCHER]
    variant = variant_request(request)
    hit = fetcher.fresh_hit(path) if variant is None else None
    if hit is not None and conditions.plain:
        return plain_hit_response(request.app, hit, policy, head)
    if hit is not None:
        resolved = hit
        policy.admit(hit.meta.content_type)  # before 304, 412 and 416 too
        decision = decide(conditions, hit.meta)
    elif variant is not None:
        resolved = await request.app[TRANSFORMS].variants.resolve(path, variant, choose)
    else:
        resolved = await fetcher.resolve(path, choose)
    meta = resolved.meta
    if decision.outcome is AnswerKind.PRECONDITION_FAILED:
        raise PreconditionFailed(path)
    if decision.outcome is AnswerKind.RANGE_NOT_SATISFIABLE:
        raise RangeNotSatisfiable(meta.size)

    headers = blob_headers(meta, policy)
    headers[X_CACHE] = resolved.status.value
    if resolved.vary_accept:
        headers[VARY] = "Accept"  # the bytes depend on Accept: shared caches must key on it
    if decision.outcome is AnswerKind.NOT_MODIFIED:
        return web.Response(status=304, headers=not_modified_headers(headers))
    status = decision.outcome.value
    if decision.outcome is AnswerKind.PARTIAL:
        headers["Content-Range"] = content_range(decision, meta.size)

    metrics = request.app[METRICS]
    if resolved.body is not None:
        body: bytes | memoryview = resolved.body
        if decision.outcome is AnswerKind.PARTIAL:
            body = memoryview(body)[decision.start : decision.end + 1]
        if not head:
            metrics.bytes_served += len(body)
        return web.Response(status=status, body=body, headers=headers)

    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = decision.length
    if resolved.opened is not None:
        sent = await send_file(
            request, response, resolved.opened, decision.start, decision.length, config.http.send_timeout_s
        )
        metrics.bytes_served += sent
        return response
    if resolved.stream is None:  # HEAD, or an empty span: headers only
        await response.prepare(request)
        await response.write_eof()
        return response
    metrics.active_streams += 1
    # aclosing: the stream holds an origin read-ahead or an open file even if prepare() fails.
    async with aclosing(resolved.stream) as stream:
        try:
            await response.prepare(request)
            sent = await send_stream(request, response, stream, config.http.stream_chunk_bytes)
        finally:
            metrics.active_streams -= 1
    metrics.bytes_served += sent
    return response
