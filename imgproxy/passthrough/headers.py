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
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from imgproxy.core.errors import BadRequestTarget

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
# The request id (`core.request_context`) replaces the client's `X-Request-ID` (which may be invalid)
# on the way to the app, and the app's on the way back: every side sees the one id.
_REQUEST_ID: Final = b"x-request-id"
_REQUEST_SKIP: Final = HOP_BY_HOP | _REQUEST_OWN | {b"content-length", b"expect", _REQUEST_ID}
_RESPONSE_SKIP: Final = HOP_BY_HOP | {_REQUEST_ID}
_RESPONSE_SKIP_CHUNKED: Final = _RESPONSE_SKIP | {b"content-length"}
_CRLF: Final = b"\r\n"
LAST_CHUNK: Final = b"0\r\n\r\n"
# RFC 3986 section 3.2.2-3.2.3 as a browser or a proxy sends it: a name or an IPv4 or IPv6 address
# (in brackets), and a port; userinfo ('@') is refused (RFC 9110 section 4.2.4).
_AUTHORITY: Final = re.compile(r"(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{0,5})?")
_SCHEMES: Final = frozenset({"http", "https"})


@dataclass(frozen=True, slots=True)
class Forwarding:
    """What we know of the hop from the client to us, and how to tell the app about it."""

    client_ip: str  # empty when unknown (a Unix socket)
    scheme: str  # "http" or "https" as the client reached us
    upstream_host: bytes  # host[:port] of the app, for `Host` when it is not preserved
    preserve_host: bool
    trust_forwarded: bool


def host_field(host: str, port: int) -> bytes:
    """The `Host` value naming `host` (a name or an address, IPv6 without brackets) and `port`
    (left out when 80): RFC 9110 section 7.2, RFC 3986 section 3.2.2 (`[::1]:8000`)."""
    name = f"[{host}]" if ":" in host else host
    return (name if port == 80 else f"{name}:{port}").encode("idna")


def origin_form(target: str) -> tuple[str, bytes | None]:
    """The request target as the app gets it, origin-form (RFC 9112 section 3.2.1), and the
    authority of an absolute-form one (None for origin-form), or `BadRequestTarget`.

    An absolute-form target (`GET http://host/path`) names its host in the target, and RFC 9112
    section 3.2.2 tells the app to believe the target over `Host`: forwarded as it came, the app
    and we could each believe a different host. So only its path and query go on (as sent, not
    re-encoded), and its authority becomes the `Host` we tell the app about. `*` (server-wide
    OPTIONS), authority-form (CONNECT) and other schemes are not for the app.
    """
    if target.startswith("/"):
        return target, None
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise BadRequestTarget()
    cut = len(rest)
    for mark in ("/", "?"):
        at = rest.find(mark)
        if at != -1:
            cut = min(cut, at)
    authority, tail = rest[:cut], rest[cut:]
    if not _AUTHORITY.fullmatch(authority):
        raise BadRequestTarget()
    return (tail if tail.startswith("/") else "/" + tail), authority.encode("ascii")


def framed(head: bytes, chunk: bytes, chunked: bool, last: bool) -> list[bytes]:
    """`head` (if any) and `chunk` as written: in a chunk of its own when `chunked` (RFC 9112
    section 7.1), followed by the last chunk when `last`; one `writelines` sends them."""
    parts = [head] if head else []
    if chunked:
        if chunk:
            parts += (b"%x\r\n" % len(chunk), chunk, _CRLF)
        if last:
            parts.append(LAST_CHUNK)
    elif chunk:
        parts.append(chunk)
    return parts


def connection_options(raw_headers: RawHeaders) -> frozenset[bytes]:
    """The lower-case field names listed in `Connection` (section 7.6.1: also hop-by-hop)."""
    names: set[bytes] = set()
    for name, value in raw_headers:
        if name.lower() == b"connection":
            names |= _options(value)
    return frozenset(names)


def _options(value: bytes) -> frozenset[bytes]:
    return frozenset(token.strip().lower() for token in value.split(b",")) - {b""}


_KEEP: Final = 0
_DROP: Final = 1
_CONNECTION: Final = 2
_CAPTURE: Final = 3  # not copied, but handed to the caller (the fields a request head rewrites)
_MEMO_NAMES: Final = 4096  # field names remembered per filter; past that, decided each time
# Longer names (real ones are under 64 bytes) and `Connection` values are decided each time and
# not remembered: a filter's two memos hold at most 4,096 keys of 64 bytes each, about 2.5 MiB
# with Python's overhead and the sets of named fields, however long the fields clients send.
_MEMO_KEY_BYTES: Final = 64


class _Filter:
    """Copies the fields of a head but hop-by-hop ones and those in `skip` (lower-case names).

    The decision per field name (as the peer spells it) is remembered, bounded in count and in
    key length: a head's fields are copied in one pass of dictionary lookups. A `Connection`
    naming other fields (rare) costs a second pass that drops those too.
    """

    __slots__ = ("_capture", "_memo", "_named", "_skip")

    def __init__(self, skip: frozenset[bytes], capture: frozenset[bytes] = frozenset()) -> None:
        self._skip = skip
        self._capture = capture
        self._memo: dict[bytes, int] = {}
        self._named: dict[bytes, frozenset[bytes]] = {}  # Connection value -> other fields it names

    def _learn(self, name: bytes) -> int:
        lower = name.lower()
        if lower == b"connection":
            kind = _CONNECTION
        elif lower in self._capture:
            kind = _CAPTURE
        elif lower in self._skip or lower.startswith(b"proxy-"):
            kind = _DROP
        else:
            kind = _KEEP
        if len(self._memo) < _MEMO_NAMES and len(name) <= _MEMO_KEY_BYTES:
            self._memo[name] = kind
        return kind

    def _options(self, value: bytes) -> frozenset[bytes]:
        named = self._named.get(value)
        if named is None:
            named = _options(value) - self._skip
            if len(self._named) < _MEMO_NAMES and len(value) <= _MEMO_KEY_BYTES:
                self._named[value] = named
        return named

    def lines(
        self, raw_headers: RawHeaders, captured: list[tuple[bytes, bytes]] | None = None
    ) -> list[bytes]:
        """`name: value` lines of the fields to copy, in their order; the fields to capture
        (lower-case name, value) are appended to `captured`."""
        memo = self._memo
        parts: list[bytes] = []
        named: frozenset[bytes] | None = None
        for name, value in raw_headers:
            kind = memo.get(name)
            if kind is None:
                kind = self._learn(name)
            if kind == 0:  # _KEEP (literals: this loop runs for every field of every head)
                parts.append(b"%s: %s\r\n" % (name, value))
            elif kind == 3 and captured is not None:  # _CAPTURE
                captured.append((name.lower(), value))
            elif kind == 2 and (more := self._options(value)):  # _CONNECTION naming other fields
                named = more if named is None else named | more
        if named is not None:
            if captured is not None:
                captured.clear()
            return _Filter(self._skip | named, self._capture).lines(raw_headers, captured)
        return parts


_REQUEST_FIELDS: Final = _Filter(_REQUEST_SKIP, _REQUEST_OWN)
_RESPONSE_FIELDS: Final = _Filter(_RESPONSE_SKIP)
_RESPONSE_FIELDS_CHUNKED: Final = _Filter(_RESPONSE_SKIP_CHUNKED)


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


def _hop(client_ip: str, scheme: str, host: bytes | None) -> tuple[bytes, bytes, bytes]:
    """What we say of the hop from the client to us: its address, the scheme, our `Forwarded`
    element (RFC 7239 section 4)."""
    element = f"for={_node(client_ip)};proto={scheme}"
    if host:
        element += ";host=" + _quoted(host.decode("latin-1"))
    return client_ip.encode("ascii", "replace") or b"unknown", scheme.encode(), element.encode("latin-1")


# `_hop` remembered for the last few thousand clients whose `Host` is at most _MEMO_HOST_BYTES
# (real ones are under 256); a longer one is formatted each time. The host is held twice (key and
# element): at most 4,096 x 2 x 256 bytes, about 4 MiB with Python's overhead per entry.
_MEMO_HOST_BYTES: Final = 256
_this_hop: Final = functools.lru_cache(maxsize=4096)(_hop)


def request_head(
    method: str,
    target: str,
    raw_headers: tuple[tuple[bytes, bytes], ...],
    forwarding: Forwarding,
    content_length: int | None,
    chunked: bool,
    upgrade: bytes | None = None,
    authority: bytes | None = None,
    request_id: str | None = None,
) -> bytes:
    """The request head we send the app: `method target HTTP/1.1` and the rewritten fields.

    `target` is the origin-form request target exactly as the client sent it (no decoding or
    re-encoding); `authority`, the host an absolute-form target named, which stands for the
    client's `Host` (see `origin_form`).
    The body is framed by `content_length`, or by `chunked` (we re-chunk what aiohttp de-chunked).
    `upgrade` (a websocket handshake) asks the app to switch to that protocol on this connection.
    `request_id` (safe characters only: `core.request_context`) is sent as `X-Request-ID`.
    """
    lines = [f"{method} {target} HTTP/1.1\r\n".encode("utf-8", "surrogateescape")]
    own: list[tuple[bytes, bytes]] = []
    lines += _REQUEST_FIELDS.lines(raw_headers, own)
    host: bytes | None = None
    xff: list[bytes] = []
    proto: bytes | None = None
    xfh: bytes | None = None
    forwarded: list[bytes] = []
    for lower, value in own:  # the fields we replace, as the client sent them
        if lower == b"host":
            host = value if host is None else host
        elif lower == b"x-forwarded-for":
            xff.append(value)
        elif lower == b"x-forwarded-proto":
            proto = value if proto is None else proto
        elif lower == b"x-forwarded-host":
            xfh = value if xfh is None else xfh
        else:
            forwarded.append(value)
    if authority is not None:
        host = authority

    trust = forwarding.trust_forwarded
    sent_host = host if forwarding.preserve_host and host else forwarding.upstream_host
    hop = _this_hop if host is None or len(host) <= _MEMO_HOST_BYTES else _hop
    ip, scheme, ours = hop(forwarding.client_ip, forwarding.scheme, host)
    lines += (b"Host: ", sent_host, _CRLF)
    lines += (b"X-Forwarded-For: ", b", ".join([*xff, ip]) if trust and xff else ip, _CRLF)
    lines += (b"X-Forwarded-Proto: ", proto if trust and proto else scheme, _CRLF)
    original_host = xfh if trust and xfh else host
    if original_host:
        lines += (b"X-Forwarded-Host: ", original_host, _CRLF)
    lines += (b"Forwarded: ", b", ".join([*forwarded, ours]) if trust and forwarded else ours, _CRLF)
    if chunked:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    elif content_length is not None:
        lines.append(b"Content-Length: %d\r\n" % content_length)
    if upgrade is not None:
        lines += (b"Connection: Upgrade\r\nUpgrade: ", upgrade, _CRLF)
    if request_id is not None:
        lines += (b"X-Request-ID: ", request_id.encode(), _CRLF)
    lines.append(_CRLF)
    return b"".join(lines)


def response_head(
    code: int,
    reason: str,
    raw_headers: tuple[tuple[bytes, bytes], ...],
    chunked: bool,
    connection: bytes | None,
    upgrade: bytes | None = None,
    request_id: str | None = None,
) -> bytes:
    """The head we send the client for the app's answer: its status and fields, hop-by-hop ones
    (and the app's `X-Request-ID`) dropped, then our framing (`chunked`: we chunk a body of
    unknown length), `Connection`, for a 101 `upgrade` (the protocol the app switched to), and
    `request_id` as `X-Request-ID`."""
    lines = [_status_line(code, reason)]
    lines += (_RESPONSE_FIELDS_CHUNKED if chunked else _RESPONSE_FIELDS).lines(raw_headers)
    if chunked:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    if connection is not None:
        lines += (b"Connection: ", connection, _CRLF)
    if upgrade is not None:
        lines += (b"Upgrade: ", upgrade, _CRLF)
    if request_id is not None:
        lines += (b"X-Request-ID: ", request_id.encode(), _CRLF)
    lines.append(_CRLF)
    return b"".join(lines)
