"""The access log's JSON lines (`server.log_format = "json"` with `server.access_log` on).

aiohttp calls `log` once per answered request, in the request's own task, so the request's context
(`core.request_context`) is still there: its id, the time its Azure calls took, the pass-through's
wait for the app. The fields go to the log record as `extra`; `web.logs`' formatter writes them.
With the text format aiohttp's own access logger writes the line it always did.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from imgproxy.core.request_context import current
from imgproxy.http.semantics import X_CACHE


class JsonAccessLogger(AbstractAccessLogger):
    """One record per request with its fields (see docs/operations.md, "Logging")."""

    __slots__ = ()

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        context = current()
        url = request.rel_url
        fields: dict[str, Any] = {
            "method": request.method,
            "path": url.raw_path,  # as sent (percent-encoded): what the client asked for, unambiguous
            "query": url.raw_query_string,
            "status": response.status,
            "bytes": response.body_length,  # sent, head included (aiohttp's %b, nginx's $bytes_sent)
            "duration_ms": round(time * 1000, 3),
            "remote": request.remote,
        }
        if context is not None:
            fields["request_id"] = context.request_id
            fields["cache"] = context.cache or response.headers.get(X_CACHE)
            fields["variant"] = context.variant
            if context.origin_s:
                fields["origin_ms"] = round(context.origin_s * 1000, 3)
            if context.upstream_s is not None:
                fields["upstream_ms"] = round(context.upstream_s * 1000, 3)
            if context.sent_bytes is not None:  # relayed by the pass-through, past aiohttp's count
                fields["bytes"] = context.sent_bytes
        else:
            fields["cache"] = response.headers.get(X_CACHE)
        self.logger.info("%s %s %d", request.method, url.raw_path, response.status, extra=fields)
