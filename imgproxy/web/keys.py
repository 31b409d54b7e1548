"""Every typed `web.AppKey` of the application, in one place (read by `web`, `app` and `server` only:
the other packages take the objects they need as arguments)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from imgproxy.cache.disk.tier import DiskTier
from imgproxy.cache.fetcher import Fetcher
from imgproxy.cdn.purger import CdnPurger
from imgproxy.config import Config
from imgproxy.core.tracing import Tracer
from imgproxy.http.content_policy import ResponsePolicy
from imgproxy.http.tags import CdnTags
from imgproxy.metrics import Metrics
from imgproxy.origin import Origin
from imgproxy.passthrough.lane import Passthrough
from imgproxy.passthrough.pool import Upstream
from imgproxy.transform.variants import Transforms
from imgproxy.web.readiness import Readiness
from imgproxy.web.siblings import Siblings

if TYPE_CHECKING:  # redis-py is imported only when Redis is configured (`app`)
    from imgproxy.replication.service import RedisParts, Replication

CONFIG = web.AppKey("config", Config)
RESPONSE_POLICY = web.AppKey("response_policy", ResponsePolicy)  # from [http], made once
METRICS = web.AppKey("metrics", Metrics)
ORIGIN = web.AppKey("origin", Origin)
DISK = web.AppKey("disk", DiskTier)  # set only when disk.enabled
REDIS: web.AppKey[RedisParts] = web.AppKey("redis")  # set only when redis.url is set
FETCHER = web.AppKey("fetcher", Fetcher)
READINESS = web.AppKey("readiness", Readiness)
SIBLINGS = web.AppKey("siblings", Siblings)  # set only when running as one of several workers
UPSTREAM = web.AppKey("upstream", Upstream)  # set only when upstream.url is set
PASSTHROUGH = web.AppKey("passthrough", Passthrough)  # set with UPSTREAM
TRANSFORMS = web.AppKey("transforms", Transforms)  # set only when transform.enabled
REPLICATION: web.AppKey[Replication] = web.AppKey("replication")  # set only when redis.url is set
CDN_TAGS = web.AppKey("cdn_tags", CdnTags)  # set only when cdn.tag_headers is set
CDN_PURGER = web.AppKey("cdn_purger", CdnPurger)  # set only when cdn.purge_url is set
TRACER: web.AppKey[Tracer] = web.AppKey("tracer")  # set only when otel.enabled
