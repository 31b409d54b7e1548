"""`create_app(config)`: the application: its resources (one cleanup context each), its routes
(`web.routes`) and the middleware that maps project errors to statuses (`http.statuses`)."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from imgproxy.cache.disk.tier import DiskTier
from imgproxy.cache.fetcher import Fetcher
from imgproxy.config import Config
from imgproxy.core.errors import ImgproxyError
from imgproxy.http.content_policy import ResponsePolicy
from imgproxy.http.statuses import error_response
from imgproxy.metrics import Metrics
from imgproxy.origin import open_origin
from imgproxy.passthrough.lane import Passthrough
from imgproxy.passthrough.pool import open_upstream
from imgproxy.transform.params import QueryParser
from imgproxy.transform.variants import HotKeys, Transforms, Variants
from imgproxy.web.cdn import cdn_ctx, install_tags
from imgproxy.web.frontdoor import handler_args, hide_versions
from imgproxy.web.keys import (
    CONFIG,
    DISK,
    FETCHER,
    METRICS,
    ORIGIN,
    PASSTHROUGH,
    READINESS,
    REDIS,
    REPLICATION,
    RESPONSE_POLICY,
    SIBLINGS,
    TRACER,
    TRANSFORMS,
    UPSTREAM,
)
from imgproxy.web.lanes import passthrough_middleware
from imgproxy.web.readiness import Readiness
from imgproxy.web.request_ids import echo_request_id
from imgproxy.web.routes import add_routes, own_routes
from imgproxy.web.siblings import Siblings

log = logging.getLogger(__name__)
CleanupContext = Callable[[web.Application], AsyncIterator[None]]


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


# One cleanup context per resource, in the order they are set up (each may use those before it);
# aiohttp cleans them up in reverse order, and only those that were set up.


async def _tracing_ctx(app: web.Application) -> AsyncIterator[None]:
    # Imported here: OpenTelemetry loads only when otel.enabled is true.
    from imgproxy.tracing import open_tracing

    with open_tracing() as tracer:
        app[TRACER] = tracer
        yield


async def _disk_ctx(app: web.Application, shared_disk: bool) -> AsyncIterator[None]:
    config = app[CONFIG]
    if not config.disk.enabled:
        yield
        return
    disk = DiskTier(config.disk, config.origin.container, shared=shared_disk)
    await disk.open()
    stats = disk.disk_stats()
    log.info("disk tier at %s: %d entries, %d bytes", disk.root, stats.items, stats.bytes)
    app[DISK] = disk
    app[METRICS].watch_disk(disk.disk_stats)
    try:
        yield
    finally:
        await disk.close()


async def _origin_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    async with open_origin(config.origin, config.cache.max_item_bytes, app.get(TRACER)) as origin:
        app[ORIGIN] = origin
        app[METRICS].watch_origin(origin.stats)
        yield


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    if not app[CONFIG].redis.url:
        yield
        return
    # Imported here: redis-py loads only when Redis is configured (and with it, if installed, the
    # OpenTelemetry SDK its own metrics import: none of it when otel and Redis are off).
    from imgproxy.replication.service import open_redis

    async with open_redis(app[CONFIG], app.get(TRACER)) as redis:
        if redis is not None:
            app[REDIS] = redis
        yield


async def _fetcher_ctx(app: web.Application) -> AsyncIterator[None]:
    config, metrics = app[CONFIG], app[METRICS]
    redis = app.get(REDIS)
    fetcher = Fetcher(
        app[ORIGIN], config.cache, metrics.fetch, app.get(DISK), None if redis is None else redis.shared_tier
    )
    metrics.watch_cache(fetcher.memory_stats)
    app[FETCHER] = fetcher
    try:
        yield
    finally:
        await fetcher.close()


async def _replication_ctx(app: web.Application) -> AsyncIterator[None]:
    redis = app.get(REDIS)
    if redis is None:
        yield
        return
    from imgproxy.replication.service import follow_purges

    async with follow_purges(app[CONFIG], redis, app[FETCHER]) as replication:
        app[REPLICATION] = replication
        app[METRICS].watch_redis(app[FETCHER].stats, replication.log.stats)
        yield


async def _readiness_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    readiness = Readiness(app[ORIGIN], config.origin.ready_check_interval_s, app[METRICS].counters)
    app[READINESS] = readiness
    try:
        yield
    finally:
        await readiness.close()


async def _transforms_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    # Imported here: pyvips loads only when transforms are on.
    from imgproxy.transform.pool import TransformPool

    pool = TransformPool(config.transform, tracer=app.get(TRACER))
    app[METRICS].watch_transforms(pool.stats)
    variants = Variants(app[FETCHER], pool, config.transform, config.cache.max_item_bytes)
    parser = QueryParser(config.transform)
    app[TRANSFORMS] = Transforms(parser, variants, pool, HotKeys(parser, config.transform))
    try:
        yield
    finally:
        await pool.close()


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    async with open_upstream(config.upstream) as upstream:
        app[UPSTREAM] = upstream
        app[PASSTHROUGH] = Passthrough(config, upstream, own_routes(config), app.get(TRACER))
        app[METRICS].watch_upstream(upstream.stats)
        yield


def create_app(
    config: Config, shared_disk: bool = False, siblings: Siblings | None = None
) -> web.Application:
    """The whole service as an aiohttp application (the same factory for tests and production).

    `shared_disk`: sibling processes (workers) use the same disk directory at the same time.
    `siblings`: this process is one of several workers; purges are relayed to the others.
    """
    middlewares = [error_middleware]
    if config.upstream.url:  # what the router does not know goes to the main application
        middlewares.append(passthrough_middleware)
    hide_versions()
    app = web.Application(middlewares=middlewares, handler_args=handler_args(config))
    app[CONFIG] = config
    app[RESPONSE_POLICY] = ResponsePolicy.from_config(config.http)
    if siblings is not None:
        app[SIBLINGS] = siblings
    app[METRICS] = Metrics()
    contexts: list[CleanupContext] = [_tracing_ctx] if config.otel.enabled else []
    contexts += [
        functools.partial(_disk_ctx, shared_disk=shared_disk),
        _origin_ctx,
        _redis_ctx,
        _fetcher_ctx,
        _replication_ctx,
        _readiness_ctx,
    ]
    if config.transform.enabled:
        contexts.append(_transforms_ctx)
    if config.upstream.url:
        contexts.append(_upstream_ctx)
    contexts.append(cdn_ctx)  # nothing without cdn.purge_url
    install_tags(app)
    app.cleanup_ctx.extend(contexts)
    app.on_response_prepare.append(echo_request_id)  # routed answers carry X-Request-ID
    add_routes(app.router, config)
    return app
