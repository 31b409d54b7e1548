"""Every typed `web.AppKey` of the application, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .config import Config
from .content_policy import ResponsePolicy
from .fetcher import Fetcher
from .metrics import Metrics
from .peers import Peers
from .readiness import Readiness
from .replication import Replication
from .upstream import Upstream
from .variants import Transforms

if TYPE_CHECKING:  # the handler imports these keys
    from .handlers.passthrough import Passthrough

CONFIG = web.AppKey("config", Config)
RESPONSE_POLICY = web.AppKey("response_policy", ResponsePolicy)  # from [http], made once
METRICS = web.AppKey("metrics", Metrics)
FETCHER = web.AppKey("fetcher", Fetcher)
READINESS = web.AppKey("readiness", Readiness)
PEERS = web.AppKey("peers", Peers)  # set only when running as one of several workers
UPSTREAM = web.AppKey("upstream", Upstream)  # set only when upstream.url is set
PASSTHROUGH: web.AppKey[Passthrough] = web.AppKey("passthrough")  # set with UPSTREAM
TRANSFORMS = web.AppKey("transforms", Transforms)  # set only when transform.enabled
REPLICATION = web.AppKey("replication", Replication)  # set only when redis.url is set
