"""The hot path: plain GETs of fresh in-memory blobs, answered before aiohttp's router and middleware.

`hot_path(app, full, on_error)` wraps the low-level server's request handler (`web.lanes` installs
it on `runner.server`, public aiohttp API, after `runner.setup()`). Being the first to see every
request, it also starts the request's context and puts its id on every answer (`request_ids`). A
request it cannot answer outright (another method or route, a conditional or Range header, a bad
path, anything not fresh in memory) goes on to the application unchanged, which gives every other
answer, so behaviour is the same either way; only the cost of a hit changes (routing and the
middleware chain are a third of it). A hit the response policy refuses (`http.active_content =
"refuse"`) gets `on_error`'s answer (the application's error mapping, handed in). Application
signals such as `on_response_prepare` do not run for these answers: add none that must see hits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from imgproxy.core.errors import ActiveContentRefused, BadPath, ImgproxyError
from imgproxy.core.request_context import HEADER as REQUEST_ID
from imgproxy.core.request_context import begin, current
from imgproxy.http.paths import parse_blob_path_cached
from imgproxy.http.prebuilt import SENT, write_plain_hit
from imgproxy.http.semantics import Conditions
from imgproxy.http.tags import NO_TAGS
from imgproxy.web.images import PREFIX, plain_hit_response
from imgproxy.web.keys import CDN_TAGS, CONFIG, FETCHER, METRICS, RESPONSE_POLICY, TRANSFORMS
from imgproxy.web.request_ids import stamp

RequestHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
ErrorAnswer = Callable[[ImgproxyError], web.Response]


def hot_path(app: web.Application, full: RequestHandler, on_error: ErrorAnswer) -> RequestHandler:
    """`full`, preceded by an answer from memory for the requests that can have one at once."""
    fetcher, metrics = app[FETCHER], app[METRICS]
    policy = app[RESPONSE_POLICY]
    # aiohttp's access log reads the size from the response object, which a pre-serialized answer
    # leaves empty: with the log on, hits take aiohttp's Response so each line is true.
    pre_serialize = not app[CONFIG].server.access_log
    transforms = app.get(TRANSFORMS)
    tags = app.get(CDN_TAGS)  # cdn.tag_headers: each hit's head carries its blob's tags
    # With auto_format on, a plain request's answer depends on Accept and may be a variant or the
    # original by its type: such requests go to the application, which knows.
    plain_to_app = transforms is not None and app[CONFIG].transform.auto_format

    def answer(
        request: web.BaseRequest, request_id: str, key: str, vary_accept: bool, vary_hints: bool = False
    ) -> web.StreamResponse | None:
        hit = fetcher.fresh_hit(key)
        if hit is None:
            return None
        body = hit.body
        try:
            if (
                pre_serialize
                and not vary_hints  # the stored heads know Vary: Accept only
                and body is not None
                and write_plain_hit(
                    request,
                    hit.meta,
                    body,
                    policy,
                    vary_accept,
                    NO_TAGS if tags is None else tags.headers(key),
                    request_id,
                )
            ):
                metrics.count_response(200)
                metrics.bytes_served += len(body)
                return SENT
            if "\0" in key and (context := current()) is not None:  # for the access log's line
                context.variant = True
            response = plain_hit_response(
                app, hit, policy, head=False, vary_accept=vary_accept, vary_hints=vary_hints
            )
        except ActiveContentRefused as exc:  # http.active_content = "refuse"
            response = on_error(exc)
        metrics.count_response(response.status)
        return response

    def lookup(request: web.BaseRequest, request_id: str) -> web.StreamResponse | None:
        """The answer from memory, or None: the application answers."""
        raw = request.rel_url.raw_path
        if request.method != "GET" or not raw.startswith(PREFIX):
            return None
        if not Conditions.from_request(request).plain:
            return None
        query = request.rel_url.raw_query_string
        if query and transforms is not None:
            # A variant (or the original, for a query without transform parameters): its key from
            # the query (remembered), then a fresh hit of it in memory.
            hot = transforms.hot.key(raw[len(PREFIX) :], query, request.headers)
            if hot is None:
                return None
            return answer(request, request_id, hot.key, hot.vary_accept, hot.vary_hints)
        if plain_to_app:
            return None
        try:
            path = parse_blob_path_cached(raw[len(PREFIX) :])
        except BadPath:
            return None  # the application words the 400
        return answer(request, request_id, path, False)

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        # The request's context first (`core.request_context`): every lane, the router, the
        # origin and the log lines see its id. Here rather than in a lane of its own: a hit pays
        # for no extra coroutine.
        request_id = begin(request.headers.get(REQUEST_ID)).request_id
        response = lookup(request, request_id)
        if response is None:
            response = await full(request)
        stamp(response, request_id)
        return response

    return handle
