"""`GET` and `HEAD /images/{blob path}`: conditional requests, ranges, cached or streamed bodies."""

from __future__ import annotations

from contextlib import aclosing
from typing import Final

from aiohttp import web

from imgproxy.cache.fetcher import ATTEMPTS
from imgproxy.cache.representation import CacheStatus, Found, Opened, Superseded
from imgproxy.core.errors import BadPath, PreconditionFailed, RangeNotSatisfiable
from imgproxy.core.request_context import current
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
from imgproxy.http.tags import NO_TAGS, Headers
from imgproxy.transform.hints import hint_headers, hint_rung, takes_hints, with_width
from imgproxy.transform.params import apply_auto_format
from imgproxy.transform.signing import ROUTE_PREFIX
from imgproxy.transform.variants import VariantRequest
from imgproxy.web.keys import CDN_TAGS, CONFIG, FETCHER, METRICS, RESPONSE_POLICY, TRANSFORMS

PREFIX: Final = ROUTE_PREFIX  # what a signature covers follows it


def blob_path_after(prefix: str, request: web.Request) -> str:
    """The validated blob path that follows `prefix` in the raw (undecoded) request path."""
    raw = request.rel_url.raw_path
    if not raw.startswith(prefix):  # e.g. "/images%2Fx", which the router decodes
        raise BadPath(f"path must start with {prefix}")
    return parse_blob_path_cached(raw[len(prefix) :])


def variant_request(request: web.Request) -> VariantRequest | None:
    """The variant a request asks for (query parameters, `transform.auto_format`, a width hint), or
    None for the original: transforms off, or no recognised parameter. Raises for bad or unsigned
    parameters."""
    transforms = request.app.get(TRANSFORMS)
    if transforms is None:
        return None
    config = request.app[CONFIG].transform
    raw_path = request.rel_url.raw_path[len(PREFIX) :]  # as written: what a signature covers
    given = transforms.parser.parse(raw_path, request.rel_url.raw_query_string)
    options = apply_auto_format(given, config)
    if options is None:
        return None
    # Only options the request gave (a parameter or a preset) take a hint: never a plain request.
    vary_hints = config.client_hints and given is not None and takes_hints(given)
    if vary_hints:
        options = with_width(options, hint_rung(request.headers, config.width_ladder))
    bucket = options.bucket(request.headers.get("Accept"), config.auto_avif)
    return VariantRequest(options, bucket, automatic=given is None, vary_hints=vary_hints)


def plain_hit_response(
    app: web.Application,
    hit: Found,
    policy: ResponsePolicy,
    head: bool,
    vary_accept: bool = False,
    vary_hints: bool = False,
) -> web.Response:
    """The 200 for a fresh in-memory blob asked for without conditional or Range headers.
    Raises `ActiveContentRefused` for a blob `policy` refuses."""
    assert hit.body is not None  # fresh hits come from the memory cache, which holds bodies
    headers = hit_headers(hit.meta, policy, vary_accept)
    if vary_hints:  # hit_headers' dict is shared: extend a copy
        headers = {**headers, **hint_headers(vary_accept)}
    tags = tag_headers(app, hit.key)
    if tags:
        headers = {**headers, **dict(tags)}
    if not head:
        app[METRICS].bytes_served += len(hit.body)
    return web.Response(body=hit.body, headers=headers)


async def get_image(request: web.Request) -> web.StreamResponse:
    """Answer with the blob's bytes (or a 206/304/412/416) from the cache, or streamed from Azure.

    Find (what the blob or variant is now, and where its bytes are), decide (RFC 9110 conditions
    and ranges against its metadata), open the span decided on, send it. Opening can find the bytes
    gone or changed meanwhile: then find again (a few times at most).
    """
    path = blob_path_after(PREFIX, request)
    app = request.app
    fetcher, policy = app[FETCHER], app[RESPONSE_POLICY]
    conditions = Conditions.from_request(request)
    head = request.method == "HEAD"
    variant = variant_request(request)
    if variant is not None and (context := current()) is not None:
        context.variant = True  # for the access log's line
    vary_hints = variant is not None and variant.vary_hints
    if variant is None and conditions.plain:
        hit = fetcher.fresh_hit(path)
        if hit is not None:
            return plain_hit_response(app, hit, policy, head)
    for attempt in range(1, ATTEMPTS + 1):
        found = await (app[TRANSFORMS].variants.find(path, variant) if variant else fetcher.find(path))
        # Refused (http.active_content = "refuse") before any decision or byte: every path alike.
        policy.admit(found.meta.content_type)
        decision = decide(conditions, found.meta)
        if not decision.has_body or head:
            fetcher.count(found.status)
            return answer_without_body(found, decision, policy, vary_hints, tag_headers(app, found.key))
        try:
            opened = await fetcher.open(found, (decision.start, decision.end))
        except Superseded as exc:
            if attempt == ATTEMPTS:
                raise exc.failure from exc
            continue
        fetcher.count(opened.status)
        return await send(request, found, decision, opened, policy, vary_hints, tag_headers(app, found.key))
    raise AssertionError("unreachable")


def tag_headers(app: web.Application, key: str) -> Headers:
    """The CDN tag headers of the answer for `key` (none unless `cdn.tag_headers` is set)."""
    tags = app.get(CDN_TAGS)
    return NO_TAGS if tags is None else tags.headers(key)


def _headers(
    found: Found, status: CacheStatus, policy: ResponsePolicy, vary_hints: bool, tags: Headers
) -> dict[str, str]:
    headers = blob_headers(found.meta, policy)
    headers.update(tags)
    headers[X_CACHE] = status.value
    if found.vary_accept:
        headers[VARY] = "Accept"  # the bytes depend on Accept: shared caches must key on it
    if vary_hints:  # the width depends on Sec-CH-Width / Width (with Accept when it does too)
        headers.update(hint_headers(found.vary_accept))
    return headers


def answer_without_body(
    found: Found,
    decision: Decision,
    policy: ResponsePolicy,
    vary_hints: bool = False,
    tags: Headers = NO_TAGS,
) -> web.StreamResponse:
    """A 304, 412 or 416 (as errors), or the headers of a 200/206 to a HEAD or of an empty span."""
    if decision.outcome is AnswerKind.PRECONDITION_FAILED:
        raise PreconditionFailed(found.key)
    if decision.outcome is AnswerKind.RANGE_NOT_SATISFIABLE:
        raise RangeNotSatisfiable(found.meta.size)
    headers = _headers(found, found.status, policy, vary_hints, tags)
    if decision.outcome is AnswerKind.NOT_MODIFIED:
        # The tags too: a CDN refreshing its copy with this 304 keeps them (RFC 9111 section 4.3.4).
        return web.Response(status=304, headers={**not_modified_headers(headers), **dict(tags)})
    if decision.outcome is AnswerKind.PARTIAL:
        headers["Content-Range"] = content_range(decision, found.meta.size)
    response = web.StreamResponse(status=decision.outcome.value, headers=headers)
    response.content_length = decision.length if decision.has_body else 0
    return response  # aiohttp sends the headers alone (a HEAD, or an empty span)


async def send(
    request: web.Request,
    found: Found,
    decision: Decision,
    opened: Opened,
    policy: ResponsePolicy,
    vary_hints: bool = False,
    tags: Headers = NO_TAGS,
) -> web.StreamResponse:
    """The 200 or 206 with the bytes `opened` holds: a body held in memory, the disk file (sendfile
    or a bounded copy), or a stream (from Azure or a disk fill) written chunk by chunk."""
    headers = _headers(found, opened.status, policy, vary_hints, tags)
    if decision.outcome is AnswerKind.PARTIAL:
        headers["Content-Range"] = content_range(decision, found.meta.size)
    status = decision.outcome.value
    metrics, config = request.app[METRICS], request.app[CONFIG]
    if opened.body is not None:
        metrics.bytes_served += len(opened.body)
        return web.Response(status=status, body=opened.body, headers=headers)
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = decision.length
    if opened.file is not None:
        metrics.bytes_served += await send_file(
            request, response, opened.file, decision.start, decision.length, config.http.send_timeout_s
        )
        return response
    assert opened.stream is not None
    metrics.active_streams += 1
    # aclosing: the stream holds an origin read-ahead or an open file even if prepare() fails.
    async with aclosing(opened.stream) as stream:
        try:
            await response.prepare(request)
            sent = await send_stream(request, response, stream, config.http.stream_chunk_bytes)
        finally:
            metrics.active_streams -= 1
    metrics.bytes_served += sent
    return response
