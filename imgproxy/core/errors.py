"""The project's exceptions. Each carries data; `http/statuses.py` maps them to HTTP statuses in one table.

A `reason` is said to the client: fixed words of ours, never a value the client sent nor a
library's message (those go to the log as a `detail`, where there is one).

ImgproxyError
├── BadPath(reason)              -> 400
├── BadTransformParameter(parameter, reason) -> 400  (names the query parameter, not its value)
├── BadSignature(reason)         -> 403  (missing, wrong, or unsigned parameters not accepted)
├── ActiveContentRefused(content_type) -> 403  (not a raster image; http.active_content "refuse")
├── BlobNotFound(path)           -> 404
├── DiskTierFailed(path)         -> 503  (the disk tier kept failing this request; retry)
├── PreconditionFailed(path)     -> 412
├── RangeNotSatisfiable(size)    -> 416
├── TransformError
│   ├── NotAnImage(reason, detail) -> 422  (not an image, damaged, truncated, unsupported)
│   ├── SourceTooLarge(reason, detail) -> 422  (transform.max_src_pixels / max_src_bytes)
│   ├── TransformBusy            -> 429  (transform.max_queue waiting already; Retry-After)
│   └── TransformTimeout         -> 503  (ran longer than transform.timeout_s)
├── OriginError                  -> 502
│   ├── OriginUnavailable        -> 502  (5xx, refused connection, auth failure, ...)
│   ├── OriginTimeout            -> 504  (no answer within origin.timeout_s)
│   ├── BlobChanged              -> 502  (overwritten while we were reading it)
│   ├── IncompleteBody           -> 502  (fewer bytes than announced)
│   └── OriginShedding(s)        -> 503  (we chose not to ask Azure now; Retry-After)
│       ├── CircuitOpen          -> 503  (the origin's breaker is open)
│       └── OriginBusy           -> 503  (every slot taken and the queue full)
├── BodyTooLarge(limit)          -> 413  (a request body for the app over upstream.max_body_bytes)
├── BadRequestTarget             -> 400  (neither origin-form nor http(s) absolute-form, for the app)
├── RequestTimeout(what)         -> 408  (a request body for the app did not arrive in time)
├── PassthroughBusy(what)        -> 503  (request buffers or websocket tunnels at their bound; Retry-After)
├── UpstreamError(kind)          -> 502  (the main application behind us; never Azure's breaker)
│   ├── UpstreamUnavailable      -> 502  (refused or reset connection, malformed answer)
│   └── UpstreamTimeout          -> 504  (no response headers within upstream.timeout_s)
└── RedisFailure                 -> never a request's status: Redis is optional, a failure is a miss
"""

from __future__ import annotations


class ImgproxyError(Exception):
    """Base of every error this service raises on purpose."""


class BadPath(ImgproxyError):
    """The requested blob path is not acceptable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadTransformParameter(ImgproxyError):
    """A recognised transform parameter has a value we cannot use (or the output would be too large)."""

    def __init__(self, parameter: str, reason: str) -> None:
        super().__init__(f"{parameter}: {reason}")
        self.parameter = parameter
        self.reason = reason


class BadSignature(ImgproxyError):
    """The transform's signature is missing or wrong, or unsigned parameters are not accepted."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ActiveContentRefused(ImgproxyError):
    """The blob's type is not an inert raster image and `http.active_content` is "refuse"."""

    def __init__(self, content_type: str) -> None:
        super().__init__(content_type)
        self.content_type = content_type  # never in the answer, whose reason is fixed


class BlobNotFound(ImgproxyError):
    """The container has no blob at this path (`cached`: known from a recent 404)."""

    def __init__(self, path: str, cached: bool = False) -> None:
        super().__init__(path)
        self.path = path
        self.cached = cached


class DiskTierFailed(ImgproxyError):
    """The disk tier's file of `path` vanished or was damaged on every attempt of one request."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


class PreconditionFailed(ImgproxyError):
    """If-Match or If-Unmodified-Since did not hold (RFC 9110 section 13.1)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


class RangeNotSatisfiable(ImgproxyError):
    """The requested range lies past the end of a representation of `size` bytes."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


class TransformError(ImgproxyError):
    """An image transform could not be made."""


class NotAnImage(TransformError):
    """The source is not an image we can decode: another kind of file, damaged or truncated.
    `detail`, for the log only: what libvips said, or the loader it chose."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class SourceTooLarge(TransformError):
    """The source's header announces more pixels or frames, or it has more bytes, than allowed.
    `detail`, for the log only: the source's figures."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class TransformBusy(TransformError):
    """`transform.max_queue` transforms already wait for a slot; retry after `retry_after_s`."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"retry after {retry_after_s:.1f} s")
        self.retry_after_s = retry_after_s


class TransformTimeout(TransformError):
    """The transform ran longer than `timeout_s`."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"longer than {timeout_s:g} s")
        self.timeout_s = timeout_s


class OriginError(ImgproxyError):
    """Azure did not give us the blob."""


class OriginUnavailable(OriginError):
    """Azure answered with an error or could not be reached."""


class OriginTimeout(OriginError):
    """Azure did not answer within the configured time."""


class BlobChanged(OriginError):
    """The blob was overwritten while it was being read (its ETag changed)."""


class IncompleteBody(OriginError):
    """The origin delivered fewer or more bytes than it announced."""


class OriginShedding(OriginError):
    """We chose not to ask Azure now; the client may retry after `retry_after_s`."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"retry after {retry_after_s:.1f} s")
        self.retry_after_s = retry_after_s


class CircuitOpen(OriginShedding):
    """The circuit breaker is open: Azure failed repeatedly and is cooling down."""


class OriginBusy(OriginShedding):
    """Every origin connection slot is taken and the queue for them is full (or too slow)."""


class BodyTooLarge(ImgproxyError):
    """A request body for the main application is larger than `limit` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


class BadRequestTarget(ImgproxyError):
    """A request target for the app that is neither origin-form nor http(s) absolute-form
    (RFC 9112 section 3.2): `*`, authority-form, another scheme, or userinfo in the authority."""


class RequestTimeout(ImgproxyError):
    """A client's request body for the app did not arrive within its deadline (`upstream.body_timeout_s`)."""


class PassthroughBusy(ImgproxyError):
    """The pass-through is at a bound (`what`: spool, websockets); the client may retry shortly."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what
        self.retry_after_s = 1.0


class UpstreamError(ImgproxyError):
    """The main application (`upstream.url`) did not answer as it should."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind  # the `kind` label of imgproxy_upstream_errors_total


class UpstreamUnavailable(UpstreamError):
    """The application refused or dropped the connection, or sent something that is not HTTP."""


class UpstreamTimeout(UpstreamError):
    """The application sent no response headers within `upstream.timeout_s`, or stalled a body."""


class RedisFailure(ImgproxyError):
    """Redis did not do what we asked; callers treat it as a miss or report `logged: false`."""


class RedisUnavailable(RedisFailure):
    """Redis could not be reached, or its breaker is open and the call was not even tried."""


class RedisTimeout(RedisFailure):
    """Redis did not answer within `redis.timeout_s`."""


class RedisBadReply(RedisFailure):
    """Redis answered, but not with what the command should return (wrong type, bad shape)."""
