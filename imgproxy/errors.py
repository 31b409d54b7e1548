"""The project's exceptions. Each carries data; `app.py` maps them to HTTP statuses in one table.

ImgproxyError
├── BadPath(reason)              -> 400
├── BlobNotFound(path)           -> 404
├── PreconditionFailed(path)     -> 412
├── RangeNotSatisfiable(size)    -> 416
├── OriginError                  -> 502
│   ├── OriginUnavailable        -> 502  (5xx, refused connection, auth failure, ...)
│   ├── OriginTimeout            -> 504  (no answer within origin.timeout_s)
│   ├── BlobChanged              -> 502  (overwritten while we were reading it)
│   ├── IncompleteBody           -> 502  (fewer bytes than announced)
│   └── OriginShedding(s)        -> 503  (we chose not to ask Azure now; Retry-After)
│       ├── CircuitOpen          -> 503  (the origin's breaker is open)
│       └── OriginBusy           -> 503  (every slot taken and the queue full)
└── RedisFailure                 -> never a request's status: Redis is optional, a failure is a miss
    ├── RedisUnavailable         (refused, reset, closed, or its breaker is open: failed fast)
    ├── RedisTimeout             (no answer within redis.timeout_s)
    └── RedisBadReply            (an answer of the wrong type or shape: never taken as data)
"""

from __future__ import annotations


class ImgproxyError(Exception):
    """Base of every error this service raises on purpose."""


class BadPath(ImgproxyError):
    """The requested blob path is not acceptable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BlobNotFound(ImgproxyError):
    """The container has no blob at this path (`cached`: known from a recent 404)."""

    def __init__(self, path: str, cached: bool = False) -> None:
        super().__init__(path)
        self.path = path
        self.cached = cached


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


class RedisFailure(ImgproxyError):
    """Redis did not do what we asked; callers treat it as a miss or report `logged: false`."""


class RedisUnavailable(RedisFailure):
    """Redis could not be reached, or its breaker is open and the call was not even tried."""


class RedisTimeout(RedisFailure):
    """Redis did not answer within `redis.timeout_s`."""


class RedisBadReply(RedisFailure):
    """Redis answered, but not with what the command should return (wrong type, bad shape)."""
