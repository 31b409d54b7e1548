"""Pure HTTP semantics of a blob response: preconditions, ranges and header sets.

`decide` evaluates a request's conditional and Range headers against a blob's metadata and
returns a `Decision` (an outcome and, for a partial answer, the byte span). It does no I/O, so
it applies alike to bodies held in memory and to bodies streamed from Azure, and is tested as a
table. Header parsing that aiohttp already does (ETag lists, HTTP dates) is taken from the request.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from typing import Final

from aiohttp import web
from aiohttp.helpers import ETag, parse_http_date

from imgproxy.core.blob import BlobMeta
from imgproxy.http.content_policy import GUARD_HEADERS, ResponsePolicy

X_CACHE: Final = "X-Cache"
SERVER_NAME: Final = "imgproxy"  # our `Server` value: no versions for a scanner to match
VARY: Final = "Vary"
ANY_ETAG: Final = "*"
_RANGE_RE: Final = re.compile(r"bytes=(\d*)-(\d*)", re.IGNORECASE)
_ETAG_RE: Final = re.compile(r'(W/)?"([^"]*)"')


class AnswerKind(enum.Enum):
    """What kind of answer a request gets, before any body is chosen."""

    FULL = 200
    PARTIAL = 206
    NOT_MODIFIED = 304
    PRECONDITION_FAILED = 412
    RANGE_NOT_SATISFIABLE = 416


@dataclass(frozen=True, slots=True)
class Decision:
    """An outcome and, for FULL and PARTIAL, the inclusive byte span to send."""

    outcome: AnswerKind
    start: int = 0
    end: int = -1

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @property
    def has_body(self) -> bool:
        return self.outcome in (AnswerKind.FULL, AnswerKind.PARTIAL) and self.length > 0


@dataclass(frozen=True, slots=True)
class Conditions:
    """The request headers that `decide` looks at, already parsed."""

    method: str = "GET"
    if_match: tuple[ETag, ...] | None = None
    if_none_match: tuple[ETag, ...] | None = None
    if_modified_since: datetime | None = None
    if_unmodified_since: datetime | None = None
    if_range: str | None = None
    range: str | None = None
    plain: bool = False  # no conditional or Range header: the full representation, always

    @classmethod
    def from_request(cls, request: web.BaseRequest) -> Conditions:
        headers = request.headers
        if not any(name in headers for name in _CONDITION_HEADERS):
            return _PLAIN.get(request.method) or cls(method=request.method)  # the common case
        return cls(
            method=request.method,
            if_match=request.if_match,
            if_none_match=request.if_none_match,
            if_modified_since=request.if_modified_since,
            if_unmodified_since=request.if_unmodified_since,
            if_range=headers.get("If-Range"),
            range=headers.get("Range"),
        )


_CONDITION_HEADERS: Final = ("Range", "If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since")
_PLAIN: Final = {method: Conditions(method=method, plain=True) for method in ("GET", "HEAD")}


def decide(conditions: Conditions, meta: BlobMeta) -> Decision:
    """Evaluate preconditions in the order of RFC 9110 section 13.2.2, then Range (section 14)."""
    full = Decision(AnswerKind.FULL, 0, meta.size - 1)
    # Step 1-2: If-Match, else If-Unmodified-Since (strong comparison).
    if conditions.if_match is not None:
        if not any(_strong_match(tag, meta.etag) for tag in conditions.if_match):
            return Decision(AnswerKind.PRECONDITION_FAILED)
    elif (
        conditions.if_unmodified_since is not None
        and _seconds(meta.last_modified) > conditions.if_unmodified_since
    ):
        return Decision(AnswerKind.PRECONDITION_FAILED)
    # Step 3-4: If-None-Match (weak comparison), else If-Modified-Since.
    if conditions.if_none_match is not None:
        if any(_weak_match(tag, meta.etag) for tag in conditions.if_none_match):
            return Decision(AnswerKind.NOT_MODIFIED)
    elif (
        conditions.if_modified_since is not None
        and _seconds(meta.last_modified) <= conditions.if_modified_since
    ):
        return Decision(AnswerKind.NOT_MODIFIED)
    # Step 5: Range applies to GET only (section 14.2), and only if If-Range still holds.
    if conditions.method != "GET" or conditions.range is None:
        return full
    if conditions.if_range is not None and not _if_range_holds(conditions.if_range, meta):
        return full
    return resolve_range(conditions.range, meta.size) or full


def resolve_range(header: str, size: int) -> Decision | None:
    """A single `bytes=` range against `size`: PARTIAL, RANGE_NOT_SATISFIABLE, or None to ignore.

    Malformed and multi-range headers are ignored (the full representation is sent), as RFC 9110
    section 14.2 allows; we do not produce multipart/byteranges.
    """
    match = _RANGE_RE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes (section 14.1.2)
        suffix = _position(last)
        if suffix == 0 or size == 0:
            return Decision(AnswerKind.RANGE_NOT_SATISFIABLE)
        return Decision(AnswerKind.PARTIAL, max(size - suffix, 0), size - 1)
    start = _position(first)
    if last and _position(last) < start:
        return None  # invalid range-spec: ignore the header
    if start >= size:
        return Decision(AnswerKind.RANGE_NOT_SATISFIABLE)
    end = min(_position(last), size - 1) if last else size - 1
    return Decision(AnswerKind.PARTIAL, start, end)


_BEYOND_ANY_BLOB: Final = 2**63  # larger than any blob: positions past it compare the same


def _position(digits: str) -> int:
    # int() refuses more than 4,300 digits (CVE-2020-10735 guard): clamp long numbers first.
    digits = digits.lstrip("0") or "0"
    return _BEYOND_ANY_BLOB if len(digits) > 19 else min(int(digits), _BEYOND_ANY_BLOB)


@functools.lru_cache(maxsize=8192)
def hit_headers(meta: BlobMeta, policy: ResponsePolicy, vary_accept: bool = False) -> Mapping[str, str]:
    """The headers of a plain 200 hit, built once per blob version and shared: do not modify.
    `vary_accept`: the bytes depend on `Accept` (a negotiated variant), so shared caches key on it.
    Raises `ActiveContentRefused` for a blob `policy` refuses.

    (A plain dict, typed read-only: aiohttp copies it into each response fastest as a dict.)
    """
    headers = {**dict(_blob_headers(meta, policy)), X_CACHE: "HIT"}
    if vary_accept:
        headers[VARY] = "Accept"
    return headers


def blob_headers(meta: BlobMeta, policy: ResponsePolicy) -> dict[str, str]:
    """Headers of every 200/206 answer for this blob version (a fresh dict the caller may extend).
    Raises `ActiveContentRefused` for a blob `policy` refuses."""
    return dict(_blob_headers(meta, policy))


@functools.lru_cache(maxsize=8192)
def _blob_headers(meta: BlobMeta, policy: ResponsePolicy) -> tuple[tuple[str, str], ...]:
    # Built once per blob version (formatting the date is the costly part), then copied. A refusal
    # raises, which lru_cache does not keep: refused blobs pay for it, inline ones never do.
    return (
        *policy.content_headers(meta.content_type),
        ("ETag", meta.etag),
        ("Last-Modified", format_datetime(meta.last_modified, usegmt=True)),
        ("Cache-Control", policy.cache_control),
        ("Accept-Ranges", "bytes"),
        # The proxy serves whatever was uploaded: browsers must not sniff it into HTML, nor run
        # what a document of it would hold (content_policy).
        *GUARD_HEADERS,
    )


# RFC 9110 section 15.4.5: a 304 carries the fields a 200 would (Vary among them), and X-Cache.
# Not Content-Type nor Content-Disposition (representation metadata, which it should not send);
# the CSP, though: a cache updates its stored headers from the 304 (RFC 9111 section 4.3.4), so a
# copy stored before the policy existed gets it too.
NOT_MODIFIED_HEADERS: Final = (
    "ETag",
    "Last-Modified",
    "Cache-Control",
    "Vary",
    X_CACHE,
    "Content-Security-Policy",
)


def not_modified_headers(headers: dict[str, str]) -> dict[str, str]:
    """The subset of a 200's headers that a 304 carries."""
    return {name: headers[name] for name in NOT_MODIFIED_HEADERS if name in headers}


def content_range(decision: Decision, size: int) -> str:
    """`Content-Range` of a 206 (section 14.4)."""
    return f"bytes {decision.start}-{decision.end}/{size}"


def _opaque(etag: str) -> tuple[bool, str]:
    match = _ETAG_RE.fullmatch(etag)
    if match is None:
        return False, etag
    return bool(match.group(1)), match.group(2)


def _strong_match(tag: ETag, etag: str) -> bool:
    if tag.value == ANY_ETAG:
        return True
    weak, value = _opaque(etag)
    return not tag.is_weak and not weak and tag.value == value


def _weak_match(tag: ETag, etag: str) -> bool:
    return tag.value == ANY_ETAG or tag.value == _opaque(etag)[1]


def _if_range_holds(value: str, meta: BlobMeta) -> bool:
    """If-Range (section 13.1.5): a strong ETag match, or exactly the Last-Modified date."""
    value = value.strip()
    match = _ETAG_RE.fullmatch(value)
    if match is not None:
        return match.group(1) is None and _strong_match(ETag(value=match.group(2)), meta.etag)
    date = parse_http_date(value)
    return date is not None and date == _seconds(meta.last_modified)


def _seconds(moment: datetime) -> datetime:
    """HTTP dates have whole seconds: compare at that precision."""
    return moment.replace(microsecond=0)
