"""Every typed `web.AppKey` of the application, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from imgproxy.cache.fetcher import Fetcher
from imgproxy.config import Config
from imgproxy.http.content_policy import ResponsePolicy
from imgproxy.metrics import Metrics
from imgproxy.passthrough.pool import Upstream
from imgproxy.replication.service import Replication
from imgproxy.transform.variants import Transforms
from imgproxy.web.readiness import Readiness
from imgproxy.web.siblings import Siblings

if TYPE_CHECKING:  # the handler imports these keys
    from imgproxy.passthrough.lane import Passthrough

CONFIG = web.AppKey("config", Config)
RESPONSE_POLICY = web.AppKey("response_policy", ResponsePolicy)  # from [http], made once
METRICS = web.AppKey("metrics", Metrics)
FETCHER = web.AppKey("fetcher", Fetcher)
READINESS = web.AppKey("readiness", Readiness)
SIBLINGS = web.AppKey("siblings", Siblings)  # set only when running as one of several workers
UPSTREAM = web.AppKey("upstream", Upstream)  # set only when upstream.url is set
PASSTHROUGH: web.AppKey[Passthrough] = web.AppKey("passthrough")  # set with UPSTREAM
TRANSFORMS = web.AppKey("transforms", Transforms)  # set only when transform.enabled
REPLICATION = web.AppKey("replication", Replication)  # set only when redis.url is set
