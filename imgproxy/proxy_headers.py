"""Header rules of a proxy (RFC 9110 section 7.6, RFC 7239): pure functions over raw header pairs.

`request_head` turns the client's request into the head we send the app: hop-by-hop fields dropped
(section 7.6.1), `X-Forwarded-For/-Proto/-Host` and `Forwarded` set, `Host` kept or replaced, our
own body framing. `response_head` does the same for the app's answer on its way back: every other
field is copied byte for byte in its order, so repeated fields (`Set-Cookie`) keep every value,
and `Content-Encoding`, `Location`, `Date` or `Server` are never touched. The raw pairs come from
aiohttp's parser, which has already refused CR, LF and NUL in names and values.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

RawHeaders = Iterable[tuple[bytes, bytes]]

# RFC 9110 section 7.6.1: fields that describe one connection, never forwarded. `Proxy-*`
# (Proxy-Authorization, Proxy-Authenticate, Proxy-Connection) is matched by prefix below.
HOP_BY_HOP: Final = frozenset(
    {b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
# Replaced by our forwarding fields; and with our framing (we may re-chunk) and our 100-continue
# answer, not copied from the client's request.
_FORWARDED: Final = b"forwarded"
_REQUEST_OWN: Final = frozenset(
    {b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", _FORWARDED}
)
_REQUEST_SKIP: Final = HOP_BY_HOP | _REQUEST_OWN | {b"content-length", b"expect"}
_RESPONSE_SKIP_CHUNKED: Final = HOP_BY_HOP | {b"content-length"}
_CRLF: Final = b"\r\n"


@dataclass(frozen=True, slots=True)
class Forwarding:
    """What we know of the hop from the client to us, and how to tell the app about it."""

    client_ip: str  # empty when unknown (a Unix socket)
    scheme: str  # "http" or "https" as the client reached us
    upstream_host: bytes  # host[:port] of the app, for `Host` when it is not preserved
    preserve_host: bool
    trust_forwarded: bool


def connection_options(raw_headers: RawHeaders) -> frozenset[bytes]:
    """The lower-case field names listed in `Connection` (section 7.6.1: also hop-by-hop)."""
    names: set[bytes] = set()
    for name, value in raw_headers:
        if name.lower() == b"connection":
            names |= _options(value)
    return frozenset(names)


def _options(value: bytes) -> frozenset[bytes]:
    return frozenset(token.strip().lower() for token in value.split(b",")) - {b""}


def _end_to_end(raw_headers: RawHeaders, skip: frozenset[bytes]) -> list[bytes]:
    """`name: value` lines of every field but hop-by-hop ones and those in `skip` (lower-case).

    One pass in the common case; a `Connection` that names other fields costs a second one.
    """
    parts: list[bytes] = []
    named: frozenset[bytes] = frozenset()
    for name, value in raw_headers:
        lower = name.lower()
        if lower in skip or lower.startswith(b"proxy-"):
            if lower == b"connection":
                named |= _options(value) - skip
            continue
        parts += (name, b": ", value, _CRLF)
    if named:
        return _end_to_end(raw_headers, skip | named)
    return parts


@functools.lru_cache(maxsize=256)
def _status_line(code: int, reason: str) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (code, reason.encode("utf-8", "surrogateescape"))


def _quoted(value: str) -> str:
    """An RFC 7230 quoted-string (RFC 7239 section 4: `host:port` and IPv6 need quotes)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _node(client_ip: str) -> str:
    if not client_ip:
        return "unknown"
    if ":" in client_ip:  # IPv6: RFC 7239 section 6
        return _quoted(f"[{client_ip}]")
    return client_ip


def request_head(
    method: str,
    target: str,
    raw_headers: tuple[tuple[bytes, bytes], ...],
    forwarding: Forwarding,
    content_length: int | None,
    chunked: bool,
    upgrade: bytes | None = None,
) -> bytes:
    """The request head we send the app: `method target HTTP/1.1` and the rewritten fields.

    `target` is the request target exactly as the client sent it (no decoding or re-encoding).
    The body is framed by `content_length`, or by `chunked` (we re-chunk what aiohttp de-chunked).
    `upgrade` (a websocket handshake) asks the app to switch to that protocol on this connection.
    """
    lines = [f"{method} {target} HTTP/1.1\r\n".encode("utf-8", "surrogateescape")]
    lines += _end_to_end(raw_headers, _REQUEST_SKIP)
    host: bytes | None = None
    xff: list[bytes] = []
    proto: bytes | None = None
    xfh: bytes | None = None
    forwarded: list[bytes] = []
    for name, value in raw_headers:  # the fields we replace, as the client sent them
        lower = name.lower()
        if lower not in _REQUEST_OWN:
            continue
        if lower == b"host":
            host = value if host is None else host
        elif lower == b"x-forwarded-for":
            xff.append(value)
        elif lower == b"x-forwarded-proto":
            proto = value if proto is None else proto
        elif lower == b"x-forwarded-host":
            xfh = value if xfh is None else xfh
        elif lower == _FORWARDED:
            forwarded.append(value)

    trust = forwarding.trust_forwarded
    sent_host = host if forwarding.preserve_host and host else forwarding.upstream_host
    ip = forwarding.client_ip.encode("ascii", "replace") or b"unknown"
    lines += (b"Host: ", sent_host, _CRLF)
    lines += (b"X-Forwarded-For: ", b", ".join([*xff, ip]) if trust and xff else ip, _CRLF)
    lines += (b"X-Forwarded-Proto: ", proto if trust and proto else forwarding.scheme.encode(), _CRLF)
    original_host = xfh if trust and xfh else host
    if original_host:
        lines += (b"X-Forwarded-Host: ", original_host, _CRLF)
    element = f"for={_node(forwarding.client_ip)};proto={forwarding.scheme}"
    if host:
        element += ";host=" + _quoted(host.decode("latin-1"))
    ours = element.encode("latin-1")
    lines += (b"Forwarded: ", b", ".join([*forwarded, ours]) if trust and forwarded else ours, _CRLF)
    if chunked:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    elif content_length is not None:
        lines.append(b"Content-Length: %d\r\n" % content_length)
    if upgrade is not None:
        lines += (b"Connection: Upgrade\r\nUpgrade: ", upgrade, _CRLF)
    lines.append(_CRLF)
    return b"".join(lines)


def response_head(
    code: int,
    reason: str,
    raw_headers: tuple[tuple[bytes, bytes], ...],
    chunked: bool,
    connection: bytes | None,
    upgrade: bytes | None = None,
) -> bytes:
    """The head we send the client for the app's answer: its status and fields, hop-by-hop ones
    dropped, then our framing (`chunked`: we chunk a body of unknown length), `Connection` and,
    for a 101, `upgrade` (the protocol the app switched to)."""
    lines = [_status_line(code, reason)]
    lines += _end_to_end(raw_headers, _RESPONSE_SKIP_CHUNKED if chunked else HOP_BY_HOP)
    if chunked:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    if connection is not None:
        lines += (b"Connection: ", connection, _CRLF)
    if upgrade is not None:
        lines += (b"Upgrade: ", upgrade, _CRLF)
    lines.append(_CRLF)
    return b"".join(lines)
