"""Plain hits written as pre-serialized bytes: the status line and headers built once per blob version.

aiohttp builds a `Response`, a header multidict and its serialization for every request; for a
fresh 200 hit all of that is the same each time but the `Date`. `write_plain_hit` writes the
stored head, a `Date` line shared for the second and the body to the transport in one `writelines`
and hands the server `SENT`, a response with nothing left to do. It declines (returns False) where
the ordinary path must answer: not HTTP/1.1 keep-alive, a closing transport, a body above
`MAX_BODY`, or bytes still queued for the client. The last keeps memory bounded without awaiting a
drain: a connection holds at most one pre-serialized answer in its buffer, and the next request
on it takes aiohttp's path, which waits for the client to catch up.
"""

from __future__ import annotations

import functools
import time
from email.utils import formatdate
from typing import Final

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion11

from imgproxy.core.blob import BlobMeta
from imgproxy.http.content_policy import ResponsePolicy
from imgproxy.http.semantics import SERVER_NAME, hit_headers
from imgproxy.http.tags import NO_TAGS, Headers

MAX_BODY: Final = 256 * 1024  # larger bodies are bound by bandwidth, not by per-request work
_STATUS_LINE: Final = b"HTTP/1.1 200 OK\r\n"


@functools.lru_cache(maxsize=8192)
def serialized_head(
    meta: BlobMeta, policy: ResponsePolicy, vary_accept: bool = False, tags: Headers = NO_TAGS
) -> bytes | None:
    """Status line and headers of the plain hit (without `Date` and the blank line), or None if a
    value cannot be sent as is (a CR or LF in it: the ordinary path refuses those). `tags`: the
    blob's CDN tag headers (`http.tags`). Raises `ActiveContentRefused` for a blob `policy` refuses."""
    lines = [_STATUS_LINE]
    extra = (*tags, ("Content-Length", str(meta.size)), ("Server", SERVER_NAME))
    for name, value in (*hit_headers(meta, policy, vary_accept).items(), *extra):
        if "\r" in value or "\n" in value:
            return None
        lines.append(f"{name}: {value}\r\n".encode("latin-1", "strict"))
    return b"".join(lines)


@functools.lru_cache(maxsize=1)
def _date_tail(second: int) -> bytes:
    """The `Date` line and the blank line ending the head, built once per second."""
    return f"Date: {formatdate(second, usegmt=True)}\r\n\r\n".encode("ascii")


class Sent(web.StreamResponse):
    """The response of a request whose answer is already on the transport: nothing to prepare.

    `keep_alive` False makes aiohttp close the connection after it (also a pass-through's choice).
    """

    def __init__(self, status: int = 200, keep_alive: bool = True) -> None:
        super().__init__(status=status)
        self._sent_keep_alive = keep_alive

    @property
    def keep_alive(self) -> bool:
        return self._sent_keep_alive

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


@functools.cache
def sent(status: int, keep_alive: bool = True) -> Sent:
    """The shared `Sent` of `status` and `keep_alive` (a 3-digit status: at most 1800 of them)."""
    return Sent(status, keep_alive)


SENT: Final = sent(200, True)  # the one pass-through's keep-alive 200s return too


def write_plain_hit(
    request: web.BaseRequest,
    meta: BlobMeta,
    body: bytes,
    policy: ResponsePolicy,
    vary_accept: bool = False,
    tags: Headers = NO_TAGS,
    request_id: str | None = None,
) -> bool:
    """Write the plain 200 hit of `meta` with `body` straight to the transport; False if declined.
    `request_id` (checked safe by `core.request_context`) goes in `X-Request-ID`.
    Raises `ActiveContentRefused` (nothing written) for a blob `policy` refuses."""
    transport = request.transport
    if (
        transport is None
        or transport.is_closing()
        or len(body) > MAX_BODY
        or transport.get_write_buffer_size()
        or request.version != HttpVersion11
        or not request.keep_alive
    ):
        return False
    head = serialized_head(meta, policy, vary_accept, tags)
    if head is None or len(body) != meta.size:
        return False
    date_tail = _date_tail(int(time.time()))
    if request_id is None:
        transport.writelines((head, date_tail, body))
    else:  # the id's line between the stored head and the Date line: no copy of either
        transport.writelines((head, b"X-Request-ID: %s\r\n" % request_id.encode(), date_tail, body))
    return True


def closing_answer(status: int, phrase: str, text: str, retry_after_s: int | None = None) -> bytes:
    """A whole plain-text answer that ends the connection, as bytes: for the moments no request
    object can carry one (a head that never completed, a connection refused on arrival) or the
    connection must close right after it (a body that did not arrive)."""
    body = text.encode() + b"\n"
    retry = b"" if retry_after_s is None else b"Retry-After: %d\r\n" % retry_after_s
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n%s"
        b"Connection: close\r\nServer: %s\r\n\r\n%s"
    ) % (status, phrase.encode(), len(body), retry, SERVER_NAME.encode(), body)
