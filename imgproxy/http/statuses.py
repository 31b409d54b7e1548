"""The one map from project errors to HTTP answers: status, fixed words, and the headers they need.

Every answer is short `text/plain` in words of ours, never a value from the request nor a library's
message (those are logged), with nosniff and the CSP every answer of ours carries.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Final

from aiohttp import web

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
from imgproxy.http.content_policy import GUARD_HEADERS

log = logging.getLogger(__name__)

# Our transform parameters' names are a few lower-case letters; anything else is not named back.
_PARAMETER_NAME: Final = re.compile(r"[a-z]{1,8}")

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
                named = f" {exc.parameter}" if _PARAMETER_NAME.fullmatch(exc.parameter) else ""
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
