"""The request being served: its id and what its log line reports, in a context variable.

`begin(header)` starts a request's context with the client's `X-Request-ID` when it is short and
safe (at most 64 of `[A-Za-z0-9._:-]`: it is echoed in headers and log lines), else a new id; the
lanes call it first for every request. Whatever runs in that request's task (and the tasks it
starts, which copy the context: a coalesced download, a revalidation) reads `current()`: the
origin gives the id to Azure as its client request id, the pass-through to the app, the access
log reports the timings collected here. Standard library only.
"""

from __future__ import annotations

import random
import re
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final

MAX_ID_CHARS: Final = 64
_SAFE_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")
HEADER: Final = "X-Request-ID"


@dataclass(slots=True)
class RequestContext:
    """One request's id and the figures its access-log line reports (filled in as it is served)."""

    request_id: str
    origin_s: float = 0.0  # time in calls to Azure made for this request (its own, not others')
    upstream_s: float | None = None  # pass-through: until the app's answer head arrived
    cache: str | None = None  # "pass" for the pass-through; otherwise the answer's X-Cache
    sent_bytes: int | None = None  # pass-through: head and body bytes relayed (past aiohttp's count)
    variant: bool = False  # the answer is a transform's (a variant), not the original


_CURRENT: Final[ContextVar[RequestContext | None]] = ContextVar("imgproxy_request", default=None)


def new_request_id() -> str:
    """A fresh id: 128 random bits in 32 hex digits, as unique as a UUID4. `random`'s generator
    (seeded from the OS per process) costs a third of `os.urandom`'s system call; an id needs to be
    unique, not secret."""
    return "%032x" % random.getrandbits(128)  # noqa: UP031 - %-format: the cheapest here


def valid_request_id(value: str | None) -> bool:
    """True if `value` may be used (and echoed) as a request id."""
    return value is not None and len(value) <= MAX_ID_CHARS and _SAFE_ID.fullmatch(value) is not None


def begin(header: str | None) -> RequestContext:
    """Start the current request's context: `header` (the client's `X-Request-ID`) if valid,
    else a new id; returns it."""
    context = RequestContext(header if header is not None and valid_request_id(header) else new_request_id())
    _CURRENT.set(context)
    return context


def current() -> RequestContext | None:
    """The context of the request being served here, None outside one (start-up, a sibling relay)."""
    return _CURRENT.get()


def current_id() -> str | None:
    """The current request's id, None outside a request."""
    context = _CURRENT.get()
    return None if context is None else context.request_id
