"""The project's exceptions. Each carries data; `app.py` maps them to HTTP statuses in one table.

ImgproxyError
├── BadPath(reason)              -> 400
├── BlobNotFound(path)           -> 404
├── DiskTierFailed(path)         -> 503  (the disk tier kept failing this request; retry)
└── OriginError                  -> 502
    ├── OriginUnavailable        -> 502  (5xx, refused connection, auth failure, ...)
    ├── OriginTimeout            -> 504  (no answer within origin.timeout_s)
    ├── BlobChanged              -> 502  (overwritten while we were reading it)
    └── IncompleteBody           -> 502  (fewer bytes than announced)
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
