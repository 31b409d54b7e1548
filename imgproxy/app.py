"""`create_app(config)`: resources, routes and the one place that maps errors to HTTP statuses."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from imgproxy.cache.disk.tier import DiskTier
from imgproxy.cache.fetcher import Fetcher
from imgproxy.config import Config
from imgproxy.core.errors import (
    ActiveContentRefused,
    BadPath,
    BadRequestTarget,
    BadSignature,
    BadTransformParameter,
    BlobNotFound,
    BodyTooLarge,
    DiskTierFailed,
    ImgproxyError,
    NotAnImage,
    OriginError,
    OriginShedding,
    OriginTimeout,
    PassthroughBusy,
    PreconditionFailed,
    RangeNotSatisfiable,
    RequestTimeout,
    SourceTooLarge,
    TransformBusy,
    TransformError,
    TransformTimeout,
    UpstreamError,
    UpstreamTimeout,
)
from imgproxy.http.content_policy import GUARD_HEADERS, ResponsePolicy
from imgproxy.metrics import Metrics
from imgproxy.origin import open_origin
from imgproxy.passthrough import lane as passthrough
from imgproxy.passthrough.pool import open_upstream
from imgproxy.replication.service import follow_purges, open_redis, replica_factory
from imgproxy.transform.params import QueryParser
from imgproxy.transform.signing import PARAMETERS
from imgproxy.transform.variants import HotKeys, Transforms, Variants
from imgproxy.web import admin, images, ops
from imgproxy.web.frontdoor import FrontDoor, FrontDoorRunner, handler_args, hide_versions
from imgproxy.web.hot_path import install_hot_path
from imgproxy.web.keys import (
    CONFIG,
    FETCHER,
    METRICS,
    PASSTHROUGH,
    READINESS,
    REPLICATION,
    RESPONSE_POLICY,
    SIBLINGS,
    TRANSFORMS,
    UPSTREAM,
)
from imgproxy.web.readiness import Readiness
from imgproxy.web.siblings import Siblings

if TYPE_CHECKING:
    from imgproxy.transform.pool import TransformPool

log = logging.getLogger(__name__)

# Most specific first: the first row whose type matches decides status and reason.
ERROR_STATUS: Final[tuple[tuple[type[ImgproxyError], int, str], ...]] = (
    (BadPath, 400, "bad path"),
    (BadTransformParameter, 400, "bad transform parameter"),
    (BadSignature, 403, "bad signature"),
    (ActiveContentRefused, 403, "not served: not a raster image"),
    (BlobNotFound, 404, "blob not found"),
    (PreconditionFailed, 412, "precondition failed"),
    (RangeNotSatisfiable, 416, "range not satisfiable"),
    (DiskTierFailed, 503, "cache tier failed"),
    (NotAnImage, 422, "not an image"),
    (SourceTooLarge, 422, "source image too large"),
    (TransformBusy, 429, "too many transforms waiting"),
    (TransformTimeout, 503, "transform timed out"),
    (OriginTimeout, 504, "origin timed out"),
    (OriginShedding, 503, "origin temporarily refused"),
    (OriginError, 502, "origin failed"),
    (BodyTooLarge, 413, "request body too large"),
    (BadRequestTarget, 400, "request target must be a path"),
    (RequestTimeout, 408, "request body not received in time"),
    (PassthroughBusy, 503, "too busy, retry shortly"),
    (UpstreamTimeout, 504, "application timed out"),
    (UpstreamError, 502, "application unavailable"),
)


def error_response(exc: ImgproxyError) -> web.Response:
    """The HTTP answer for a project error (one row of `ERROR_STATUS`): its status and fixed words
    of ours, never a value from the request nor a library's message (those are logged)."""
    for error_type, status, reason in ERROR_STATUS:
        if isinstance(exc, error_type):
            # Our text/plain, never sniffed or run as anything else (some reasons quote the query).
            headers = {"Cache-Control": "no-store", **dict(GUARD_HEADERS)}
            if isinstance(exc, BadPath | BadSignature | NotAnImage | SourceTooLarge):
                reason = f"{reason}: {exc.reason}"
            elif isinstance(exc, BadTransformParameter):
                # Named only from our own set (a spelling of the client's is never echoed).
                named = f" {exc.parameter}" if exc.parameter in PARAMETERS else ""
                reason = f"{reason}{named}: {exc.reason}"
            elif isinstance(exc, RangeNotSatisfiable):
                headers["Content-Range"] = f"bytes */{exc.size}"  # RFC 9110 section 15.5.17
            elif isinstance(exc, OriginShedding | TransformBusy | PassthroughBusy):
                headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
            elif isinstance(exc, DiskTierFailed):
                headers["Retry-After"] = "1"
                log.warning("disk tier failed %s on every attempt", exc.path)
            elif isinstance(exc, OriginError):
                log.warning("origin error: %s: %s", type(exc).__name__, exc)
            elif isinstance(exc, UpstreamError):
                log.warning("application error: %s: %s", type(exc).__name__, exc)
            if isinstance(exc, SourceTooLarge):
                log.warning("transform refused: %s: %s (%s)", type(exc).__name__, exc, exc.detail)
            elif isinstance(exc, TransformError) and not isinstance(exc, NotAnImage):
                # Each refused transform is a log line; a source that is not an image is logged
                # once, with its path and libvips' words, where it failed (`Variants`).
                log.warning("transform refused: %s: %s", type(exc).__name__, exc)
            response = web.Response(status=status, text=reason + "\n", headers=headers)
            if isinstance(exc, RequestTimeout | BodyTooLarge):
                response.force_close()  # the rest of the body is not read: RFC 9110 section 15.5.9
            return response
    raise exc  # pragma: no cover - every ImgproxyError subclass has a row


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn project errors into statuses and count every response by status."""
    metrics = request.app[METRICS]
    try:
        response = await handler(request)
    except ImgproxyError as exc:
        response = error_response(exc)
    except web.HTTPException as exc:
        metrics.count_response(exc.status)
        raise
    metrics.count_response(response.status)
    return response


async def _origin_ctx(app: web.Application, shared_disk: bool) -> AsyncIterator[None]:
    config = app[CONFIG]
    disk: DiskTier | None = None
    if config.disk.enabled:
        disk = DiskTier(config.disk, config.origin.container, shared=shared_disk)
        await disk.open()
        stats = disk.disk_stats()
        log.info("disk tier at %s: %d entries, %d bytes", disk.root, stats.items, stats.bytes)
    async with (
        open_origin(config.origin, config.cache.max_item_bytes) as origin,
        open_redis(config) as redis,
        contextlib.AsyncExitStack() as replicated,
    ):
        fetcher = Fetcher(origin, config.cache, app[METRICS], disk, replica_factory(redis))
        if redis is not None:
            app[REPLICATION] = await replicated.enter_async_context(follow_purges(config, redis, fetcher))
            app[METRICS].watch_redis(fetcher.stats, app[REPLICATION].log.stats)
        readiness = Readiness(origin, config.origin.ready_check_interval_s, app[METRICS].counters)
        app[METRICS].watch_origin(origin.stats)
        app[FETCHER] = fetcher
        app[READINESS] = readiness
        pool: TransformPool | None = None
        if config.transform.enabled:
            from imgproxy.transform.pool import (
                TransformPool,  # here: pyvips loads only when transforms are on
            )

            pool = TransformPool(config.transform, processes=config.server.workers)
            app[METRICS].watch_transforms(pool.stats)
            variants = Variants(fetcher, pool, config.transform, config.cache.max_item_bytes)
            parser = QueryParser(config.transform)
            app[TRANSFORMS] = Transforms(parser, variants, pool, HotKeys(parser, config.transform))
        try:
            yield
        finally:
            await readiness.close()
            await fetcher.close()
            if pool is not None:
                await pool.close()
            if disk is not None:
                await disk.close()


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_upstream(app[CONFIG].upstream) as upstream:
        app[UPSTREAM] = upstream
        app[PASSTHROUGH] = passthrough.Passthrough(app[CONFIG], upstream)
        app[METRICS].watch_upstream(upstream.stats)
        yield


def install_passthrough(runner: web.AppRunner) -> None:
    """Forward what is not ours on `runner`'s server, before routing (after `setup()`; a no-op when
    `upstream.url` is empty). Install it before `hot_path`, so that hits are looked at first."""
    server = runner.server
    if server is None:
        raise RuntimeError("install_passthrough needs runner.setup() first")
    if UPSTREAM in runner.app:
        server.request_handler = passthrough.lane(runner.app, server.request_handler, error_response)


async def start_runner(app: web.Application, **runner_kwargs: Any) -> FrontDoorRunner:
    """The server `python -m imgproxy` runs for `app`, set up (sites not started yet): every
    connection through the front door (`frontdoor`), then the pass-through and the hot path
    ahead of the router. `runner_kwargs` go to aiohttp's `AppRunner`."""
    door = FrontDoor(app[CONFIG])
    app[METRICS].watch_frontdoor(door.stats)
    runner = FrontDoorRunner(app, door, **runner_kwargs)
    await runner.setup()
    install_passthrough(runner)  # inside the hot path: a hit is looked for first
    install_hot_path(runner, error_response)
    return runner


def begin_drain(app: web.Application) -> None:
    """From now on /readyz answers 503 (graceful shutdown has begun)."""
    app[READINESS].draining = True


def create_app(
    config: Config, shared_disk: bool = False, siblings: Siblings | None = None
) -> web.Application:
    """The whole service as an aiohttp application (the same factory for tests and production).

    `shared_disk`: sibling processes (workers) use the same disk directory at the same time.
    `siblings`: this process is one of several workers; purges are relayed to the others.
    """
    middlewares = [error_middleware]
    if config.upstream.url:  # what the router does not know goes to the main application
        middlewares.append(passthrough.middleware)
    hide_versions()
    app = web.Application(middlewares=middlewares, handler_args=handler_args(config))
    app[CONFIG] = config
    app[RESPONSE_POLICY] = ResponsePolicy.from_config(config.http)
    if siblings is not None:
        app[SIBLINGS] = siblings
    app[METRICS] = Metrics()
    app.cleanup_ctx.append(functools.partial(_origin_ctx, shared_disk=shared_disk))
    if config.upstream.url:
        app.cleanup_ctx.append(_upstream_ctx)

    router = app.router
    # [\s\S]: the router matches the decoded path, and a bad path (even one holding a
    # newline) must reach the handler to be refused with a 400, not fall through to a 404.
    router.add_get(images.PREFIX + r"{path:[\s\S]*}", images.get_image)
    ops_prefix = config.server.ops_prefix  # moves the operations routes if the app has its own
    router.add_get(ops_prefix + "/healthz", ops.healthz)
    router.add_get(ops_prefix + "/readyz", ops.readyz)
    router.add_get(ops_prefix + "/metrics", ops.metrics)
    if config.admin.token:
        router.add_get(ops_prefix + "/admin/cache", admin.cache_stats)
        router.add_delete(ops_prefix + "/admin/cache", admin.purge_all)
        router.add_delete(ops_prefix + admin.PURGE_PREFIX + r"{path:[\s\S]*}", admin.purge_one)
    return app
