"""Unit tests for `imgproxy.passthrough.headers`: the request and response heads of the pass-through."""

from __future__ import annotations

from typing import Final

import pytest

from imgproxy.passthrough.headers import (
    LAST_CHUNK,
    Forwarding,
    connection_options,
    framed,
    host_field,
    request_head,
    response_head,
)

FWD: Final = Forwarding(
    client_ip="192.0.2.7",
    scheme="http",
    upstream_host=b"app:8000",
    preserve_host=True,
    trust_forwarded=False,
)


def lines(head: bytes) -> list[bytes]:
    assert head.endswith(b"\r\n\r\n")
    return head[:-4].split(b"\r\n")


def fields(head: bytes) -> list[tuple[bytes, bytes]]:
    return [tuple(line.split(b": ", 1)) for line in lines(head)[1:]]  # type: ignore[misc]


def test_connection_options_are_lower_case_names() -> None:
    """Every name listed in any Connection field, lower-cased, without empty ones."""
    raw = ((b"Connection", b"Keep-Alive, X-Foo"), (b"X-Foo", b"1"), (b"connection", b" ,close"))
    assert connection_options(raw) == frozenset({b"keep-alive", b"x-foo", b"close"})


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("app.internal", 8000, b"app.internal:8000"),
        ("app.internal", 80, b"app.internal"),
        ("127.0.0.1", 8080, b"127.0.0.1:8080"),
        ("::1", 8000, b"[::1]:8000"),  # urlsplit's hostname drops the brackets: they come back
        ("2001:db8::7", 80, b"[2001:db8::7]"),
    ],
)
def test_host_field_names_the_app_with_ipv6_in_brackets(host: str, port: int, expected: bytes) -> None:
    """The `Host` we send the app when not preserving the client's: RFC 3986 section 3.2.2."""
    assert host_field(host, port) == expected


def test_framed_writes_a_chunk_of_its_own_and_the_last_one() -> None:
    """Chunked: size line, data, CRLF, and the last chunk at the end; else the bytes as they are."""
    assert framed(b"HEAD", b"abc", True, False) == [b"HEAD", b"3\r\n", b"abc", b"\r\n"]
    assert framed(b"", b"x" * 26, True, True) == [b"1a\r\n", b"x" * 26, b"\r\n", LAST_CHUNK]
    assert framed(b"", b"", True, True) == [LAST_CHUNK]
    assert framed(b"HEAD", b"abc", False, True) == [b"HEAD", b"abc"]
    assert framed(b"", b"", False, False) == []


def test_request_line_keeps_the_target_as_sent() -> None:
    """Method and target are written as received, always HTTP/1.1 to the app."""
    head = request_head("PATCH", "/a%2Fb//c?x=%20&y", ((b"Host", b"h"),), FWD, None, False)
    assert lines(head)[0] == b"PATCH /a%2Fb//c?x=%20&y HTTP/1.1"


def test_request_hop_by_hop_fields_are_dropped() -> None:
    """Connection, the names it lists, Keep-Alive, Proxy-*, TE, Trailer, Transfer-Encoding,
    Upgrade and Expect stop here; others keep their order and case."""
    raw = (
        (b"Host", b"shop"),
        (b"Connection", b"x-hop"),
        (b"X-Hop", b"1"),
        (b"Keep-Alive", b"timeout=1"),
        (b"Proxy-Authorization", b"secret"),
        (b"te", b"trailers"),
        (b"Trailer", b"X"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Upgrade", b"h2c"),
        (b"Expect", b"100-continue"),
        (b"x-Kept", b"a"),
        (b"Cookie", b"c=1"),
        (b"x-Kept", b"b"),
    )
    kept = [
        f for f in fields(request_head("POST", "/", raw, FWD, None, True)) if f[0] in (b"x-Kept", b"Cookie")
    ]
    assert kept == [(b"x-Kept", b"a"), (b"Cookie", b"c=1"), (b"x-Kept", b"b")]
    names = [name.lower() for name, _ in fields(request_head("POST", "/", raw, FWD, None, True))]
    for gone in (b"connection", b"x-hop", b"keep-alive", b"proxy-authorization", b"te", b"trailer"):
        assert gone not in names
    assert b"upgrade" not in names
    assert b"expect" not in names
    assert names.count(b"transfer-encoding") == 1  # ours


@pytest.mark.parametrize(
    ("length", "chunked", "expected"),
    [(12, False, (b"Content-Length", b"12")), (None, True, (b"Transfer-Encoding", b"chunked"))],
)
def test_request_body_framing_is_ours(
    length: int | None, chunked: bool, expected: tuple[bytes, bytes]
) -> None:
    """The client's Content-Length is replaced by the one we send (or by chunked)."""
    raw = ((b"Host", b"h"), (b"Content-Length", b"12"))
    framing = [f for f in fields(request_head("PUT", "/", raw, FWD, length, chunked)) if f[0] == expected[0]]
    assert framing == [expected]


def test_forwarded_fields_without_trust_replace_the_clients() -> None:
    """Untrusted: X-Forwarded-* and Forwarded say what we saw, whatever the client claimed."""
    raw = (
        (b"Host", b"shop.example"),
        (b"X-Forwarded-For", b"10.0.0.1"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Host", b"evil"),
        (b"Forwarded", b"for=10.0.0.1"),
    )
    got = dict(fields(request_head("GET", "/", raw, FWD, None, False)))
    assert got[b"Host"] == b"shop.example"
    assert got[b"X-Forwarded-For"] == b"192.0.2.7"
    assert got[b"X-Forwarded-Proto"] == b"http"
    assert got[b"X-Forwarded-Host"] == b"shop.example"
    assert got[b"Forwarded"] == b'for=192.0.2.7;proto=http;host="shop.example"'


def test_forwarded_fields_with_trust_are_appended_to() -> None:
    """Trusted: every X-Forwarded-For value, then ours; the first proxy's proto and host stay."""
    trusted = Forwarding("192.0.2.7", "http", b"app:8000", True, True)
    raw = (
        (b"Host", b"lb.internal"),
        (b"X-Forwarded-For", b"203.0.113.1"),
        (b"X-Forwarded-For", b"198.51.100.1"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Host", b"shop.example"),
        (b"Forwarded", b"for=203.0.113.1;proto=https"),
    )
    got = dict(fields(request_head("GET", "/", raw, trusted, None, False)))
    assert got[b"X-Forwarded-For"] == b"203.0.113.1, 198.51.100.1, 192.0.2.7"
    assert got[b"X-Forwarded-Proto"] == b"https"
    assert got[b"X-Forwarded-Host"] == b"shop.example"
    assert got[b"Forwarded"] == b'for=203.0.113.1;proto=https, for=192.0.2.7;proto=http;host="lb.internal"'


def test_ipv6_clients_are_quoted_in_forwarded() -> None:
    """RFC 7239 section 6: an IPv6 node is bracketed and quoted."""
    v6 = Forwarding("2001:db8::1", "https", b"app", True, False)
    got = dict(fields(request_head("GET", "/", ((b"Host", b"h"),), v6, None, False)))
    assert got[b"Forwarded"] == b'for="[2001:db8::1]";proto=https;host="h"'
    assert got[b"X-Forwarded-For"] == b"2001:db8::1"


def test_host_is_the_apps_unless_preserved_or_missing() -> None:
    """preserve_host false, or no Host from the client (HTTP/1.0): the app's host:port."""
    replaced = Forwarding("192.0.2.7", "http", b"app:8000", False, False)
    assert (
        dict(fields(request_head("GET", "/", ((b"Host", b"shop"),), replaced, None, False)))[b"Host"]
        == b"app:8000"
    )
    missing = dict(fields(request_head("GET", "/", (), FWD, None, False)))
    assert missing[b"Host"] == b"app:8000"
    assert b"X-Forwarded-Host" not in missing


def test_websocket_handshake_asks_the_app_to_upgrade() -> None:
    """A websocket request keeps its Sec-WebSocket-* fields and gets our Connection/Upgrade pair."""
    raw = (
        (b"Host", b"h"),
        (b"Connection", b"Upgrade"),
        (b"Upgrade", b"websocket"),
        (b"Sec-WebSocket-Key", b"k"),
    )
    got = fields(request_head("GET", "/ws", raw, FWD, None, False, upgrade=b"websocket"))
    assert (b"Sec-WebSocket-Key", b"k") in got
    assert [f for f in got if f[0] in (b"Connection", b"Upgrade")] == [
        (b"Connection", b"Upgrade"),
        (b"Upgrade", b"websocket"),
    ]


def test_response_keeps_every_end_to_end_field_in_order() -> None:
    """Set-Cookie twice, Content-Encoding, Location, Date and Server pass as they are."""
    raw = (
        (b"Set-Cookie", b"a=1"),
        (b"Content-Encoding", b"gzip"),
        (b"Location", b"http://app.internal/x"),
        (b"Set-Cookie", b"b=2"),
        (b"Date", b"Tue, 01 Dec 2026 00:00:00 GMT"),
        (b"Server", b"app"),
        (b"Content-Length", b"10"),
    )
    head = response_head(201, "Created", raw, False, None)
    assert lines(head)[0] == b"HTTP/1.1 201 Created"
    assert fields(head) == list(raw)


def test_response_hop_by_hop_fields_are_dropped_and_framing_is_ours() -> None:
    """The app's Connection, what it names, Keep-Alive, Proxy-*, Transfer-Encoding go; we add ours."""
    raw = (
        (b"Connection", b"X-Hop"),
        (b"X-Hop", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Proxy-Authenticate", b"Basic"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Trailer", b"X-Sum"),
        (b"X-End", b"kept"),
    )
    head = response_head(200, "OK", raw, True, b"close")
    assert fields(head) == [
        (b"X-End", b"kept"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Connection", b"close"),
    ]


def test_a_101_keeps_the_protocol_switch() -> None:
    """A websocket 101 goes back with Connection: Upgrade and Upgrade: websocket, and the accept key."""
    raw = ((b"Upgrade", b"websocket"), (b"Connection", b"upgrade"), (b"Sec-WebSocket-Accept", b"abc"))
    head = response_head(101, "Switching Protocols", raw, False, b"Upgrade", b"websocket")
    assert fields(head) == [
        (b"Sec-WebSocket-Accept", b"abc"),
        (b"Connection", b"Upgrade"),
        (b"Upgrade", b"websocket"),
    ]


def test_long_names_connection_values_and_hosts_are_decided_alike_off_the_memo() -> None:
    """Fields too long to be remembered get the answer short ones get, every time they come."""
    long_proxy = b"Proxy-" + b"x" * 100  # hop-by-hop by prefix
    long_kept = b"X-" + b"k" * 100
    listing = b"x-secret, " + b", ".join(b"t%d" % i for i in range(20))  # over the memo's length
    host = b"h" * 300
    raw = (
        (b"Host", host),
        (long_proxy, b"1"),
        (long_kept, b"2"),
        (b"Connection", listing),
        (b"X-Secret", b"3"),
    )
    for _ in range(2):  # the second time finds nothing remembered either
        got = fields(request_head("GET", "/", raw, FWD, None, False))
        assert [name for name, _ in got if name in (long_proxy, long_kept, b"X-Secret")] == [long_kept]
        assert dict(got)[b"Forwarded"] == b'for=192.0.2.7;proto=http;host="' + host + b'"'
