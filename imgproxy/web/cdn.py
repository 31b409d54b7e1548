"""A CDN in front: the tag headers answers carry (`cdn.tag_headers`) and the purges forwarded to
it (`cdn.purge_url`), wired into the app (`cdn_ctx`) and the admin API (`forward_purge`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from imgproxy.cdn.purger import open_purger
from imgproxy.http.tags import CdnTags
from imgproxy.web.keys import CDN_PURGER, CDN_TAGS, CONFIG, METRICS
from imgproxy.web.siblings import RELAYED_HEADER


def install_tags(app: web.Application) -> None:
    """Tag answers for the CDN when `cdn.tag_headers` names headers (otherwise nothing changes)."""
    config = app[CONFIG]
    if config.cdn.tag_headers:
        app[CDN_TAGS] = CdnTags(config.cdn.tag_headers, config.cdn.tag_prefix, config.origin.container)


async def cdn_ctx(app: web.Application) -> AsyncIterator[None]:
    """The purge forwarder (with `cdn.purge_url`): its queue drained within `cdn.purge_drain_s`
    when the app closes."""
    config = app[CONFIG]
    if not config.cdn.purge_url:
        yield
        return
    async with open_purger(config.cdn, config.origin.container) as purger:
        app[CDN_PURGER] = purger
        app[METRICS].watch_cdn(purger.stats)
        yield


def forward_purge(request: web.Request, path: str | None) -> None:
    """Queue the purge of `path` (None: everything) for the CDN, once: not for a purge a sibling
    worker relayed (the worker that accepted it sends it), and never for a replica following
    the purge log (that is not an admin call)."""
    purger = request.app.get(CDN_PURGER)
    if purger is not None and RELAYED_HEADER not in request.headers:
        purger.submit(path)
