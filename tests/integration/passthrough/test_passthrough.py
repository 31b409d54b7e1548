"""In front of the main application: what is not ours goes through to it, and comes back unchanged.

The application is a real one in its own process (`tests/support/upstream_app.py`) on loopback. Each test
runs against both entries of the pass-through: `lane` (aiohttp's low-level server, as
`python -m imgproxy` installs it) and `router` (the application's fallback for unknown paths).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from azure.storage.blob.aio import ContainerClient
from yarl import URL

from devtools.azurite import free_port
from imgproxy.app import create_app
from imgproxy.server import start_runner
from imgproxy.web.keys import METRICS, UPSTREAM
from tests.helpers import AUTH, make_test_config, payload, raw_exchange, raw_url, sha256, upload, wait_until
from tests.support.origin_proxy import OriginProxy
from tests.support.upstream_app import UpstreamApp

GZIPPED: Final = gzip.compress(b"hello, compressed world\n" * 100, mtime=0)


@dataclass
class Proxy:
    base: str
    app: web.Application

    @property
    def port(self) -> int:
        return URL(self.base).port or 80

    def url(self, raw_target: str) -> URL:
        return raw_url(self.base, raw_target)


ProxyFactory = Callable[..., Awaitable[Proxy]]


@pytest.fixture
async def start_proxy(
    origin: OriginProxy, container: ContainerClient, upstream_app: UpstreamApp
) -> AsyncIterator[ProxyFactory]:
    """Serve imgproxy on a free port in front of the app; `lane` picks the entry; overrides are
    `section__key=value` (`upstream__url` defaults to the app)."""
    runners: list[web.AppRunner] = []

    async def start(lane: bool = True, **overrides: Any) -> Proxy:
        overrides.setdefault("upstream__url", upstream_app.url)
        config = make_test_config(origin.endpoint, container.container_name, **overrides)
        app = create_app(config)
        if lane:  # the server `python -m imgproxy` runs
            runner: web.AppRunner = await start_runner(app)
        else:
            runner = web.AppRunner(app)
            await runner.setup()
        runners.append(runner)
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return Proxy(f"http://127.0.0.1:{port}", runner.app)

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture(params=["lane", "router"])
async def proxy(request: pytest.FixtureRequest, start_proxy: ProxyFactory) -> Proxy:
    """imgproxy in front of the app, through each entry of the pass-through."""
    return await start_proxy(lane=request.param == "lane")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that shows answers as they are: no redirects followed, no decompression."""
    async with aiohttp.ClientSession(auto_decompress=False) as client:
        yield client


def token() -> str:
    return uuid.uuid4().hex


async def echo(
    session: aiohttp.ClientSession, url: URL | str, method: str = "GET", **kwargs: Any
) -> dict[str, Any]:
    async with session.request(method, url, **kwargs) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = json.loads(await response.read())
        return body


def headers_of(echoed: dict[str, Any]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in echoed["headers"]]


def header_values(echoed: dict[str, Any], name: str) -> list[str]:
    return [value for key, value in echoed["headers"] if key.lower() == name.lower()]


# -- requests reach the app unchanged ------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"])
@pytest.mark.parametrize("size", [0, 100_000])
async def test_every_method_reaches_the_app_with_its_body(
    proxy: Proxy, session: aiohttp.ClientSession, method: str, size: int
) -> None:
    """Any method, with or without a body, arrives with that method and the exact body bytes."""
    body = payload(size, seed=size)
    echoed = await echo(session, proxy.url("/echo/m"), method, data=body if size else None)
    assert echoed["method"] == method
    assert echoed["body_bytes"] == size
    assert echoed["body_sha256"] == sha256(body)
    if size:
        assert header_values(echoed, "Content-Length") == [str(size)]


async def test_head_answers_the_apps_headers_without_a_body(proxy: Proxy) -> None:
    """HEAD passes: the app's Content-Length of the GET body comes back, and no body bytes."""
    answer = await raw_exchange(
        proxy.base, b"HEAD /head-length HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nContent-Length: 1234" in head
    assert body == b""


@pytest.mark.parametrize(
    "target",
    [
        "/echo/a%2Fb/c%20d?q=1&q=2&x=%41%2f",
        "/echo//double//slashes/?",
        "/echo/semi;colon=1,comma+plus?a+b=c%2Bd",
        "/echo/%E2%82%AC/caf%C3%A9?%E2%82%AC=%C3%A9",
        "/echo/..%2F..%2Fetc",
    ],
)
async def test_the_target_reaches_the_app_exactly_as_sent(proxy: Proxy, target: str) -> None:
    """Path and query are forwarded byte for byte: no decoding, no re-encoding, no normalising
    (sent over a raw socket: client libraries normalise some of these)."""
    answer = await raw_exchange(
        proxy.base, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert json.loads(body)["target"] == target


async def test_an_expected_100_continue_lets_the_body_through(
    proxy: Proxy, session: aiohttp.ClientSession
) -> None:
    """Expect: 100-continue within the limit: the client is told to go on, the app gets the body."""
    body = payload(50_000, seed=100)
    echoed = await echo(session, proxy.url("/echo/expect"), "PUT", data=body, expect100=True)
    assert echoed["body_sha256"] == sha256(body)
    assert header_values(echoed, "Expect") == []


async def test_pipelined_requests_are_answered_in_order_ours_and_the_apps(proxy: Proxy) -> None:
    """Three pipelined requests on one connection, the app's and ours mixed: three answers, in order."""
    answer = await raw_exchange(
        proxy.base,
        b"GET /echo/first HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /echo/third HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert answer.count(b"HTTP/1.1 200 ") == 3
    first, ours, third = (
        answer.index(b"/echo/first"),
        answer.index(b"\r\n\r\nok\n"),
        answer.index(b"/echo/third"),
    )
    assert first < ours < third


@pytest.mark.parametrize("lane", [True, False])
@pytest.mark.parametrize("buffering", [True, False])
async def test_a_chunked_request_body_reaches_the_app_whole(
    start_proxy: ProxyFactory, session: aiohttp.ClientSession, lane: bool, buffering: bool
) -> None:
    """A chunked upload (no length) arrives whole: buffered, with its exact Content-Length (as
    nginx sends it); streamed, re-chunked for the app."""
    proxy = await start_proxy(lane=lane, upstream__request_buffering=buffering)
    parts = [payload(70_000, seed=i) for i in range(5)]

    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    echoed = await echo(session, proxy.url("/echo/chunked"), "POST", data=body())
    assert echoed["body_sha256"] == sha256(b"".join(parts))
    if buffering:
        assert header_values(echoed, "Content-Length") == ["350000"]
        assert header_values(echoed, "Transfer-Encoding") == []
    else:
        assert header_values(echoed, "Transfer-Encoding") == ["chunked"]
        assert header_values(echoed, "Content-Length") == []


async def test_hop_by_hop_request_headers_are_not_forwarded(
    proxy: Proxy, session: aiohttp.ClientSession
) -> None:
    """Connection and what it names, Keep-Alive, Proxy-*, TE, Trailer, Upgrade stop here (RFC 9110
    section 7.6.1); end-to-end fields arrive in their order, repeated ones with every value."""
    headers = [
        ("Connection", "keep-alive, X-Named-Hop"),
        ("X-Named-Hop", "gone"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "h2c"),
        ("Authorization", "Bearer end-to-end"),
        ("X-Multi", "one"),
        ("Cookie", "session=abc"),
        ("X-Multi", "two"),
    ]
    echoed = await echo(session, proxy.url("/echo/hop"), headers=headers)
    names = {name.lower() for name, _ in headers_of(echoed)}
    for gone in ("connection", "x-named-hop", "keep-alive", "proxy-authorization", "proxy-connection"):
        assert gone not in names
    for gone in ("te", "trailer", "upgrade"):
        assert gone not in names
    kept = [(n, v) for n, v in headers_of(echoed) if n in ("Authorization", "X-Multi", "Cookie")]
    assert kept == [
        ("Authorization", "Bearer end-to-end"),
        ("X-Multi", "one"),
        ("Cookie", "session=abc"),
        ("X-Multi", "two"),
    ]


async def test_hop_by_hop_response_headers_are_not_forwarded(proxy: Proxy) -> None:
    """The app's Connection, what it names, Keep-Alive and Proxy-* do not reach the client."""
    answer = await raw_exchange(
        proxy.base, b"GET /hop-response HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    head = answer.partition(b"\r\n\r\n")[0].decode()
    names = [line.partition(":")[0].lower() for line in head.split("\r\n")[1:]]
    assert "x-end" in names
    assert "x-app-hop" not in names
    assert "keep-alive" not in names
    assert "proxy-authenticate" not in names
    assert names.count("connection") == 1  # ours: close, as the client asked
    assert "\r\nConnection: close" in head


async def test_forwarded_headers_replace_what_the_client_claims(
    proxy: Proxy, session: aiohttp.ClientSession
) -> None:
    """Without trust_forwarded, X-Forwarded-* and Forwarded from the client are replaced by ours."""
    claims = {
        "X-Forwarded-For": "203.0.113.9",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.example",
        "Forwarded": "for=203.0.113.9;proto=https",
    }
    echoed = await echo(session, proxy.url("/echo/fwd"), headers={**claims, "Host": "shop.example"})
    assert header_values(echoed, "X-Forwarded-For") == ["127.0.0.1"]
    assert header_values(echoed, "X-Forwarded-Proto") == ["http"]
    assert header_values(echoed, "X-Forwarded-Host") == ["shop.example"]
    assert header_values(echoed, "Forwarded") == ['for=127.0.0.1;proto=http;host="shop.example"']
    assert header_values(echoed, "Host") == ["shop.example"]  # preserve_host (default)


async def test_forwarded_headers_are_kept_and_appended_when_trusted(
    start_proxy: ProxyFactory, session: aiohttp.ClientSession
) -> None:
    """With trust_forwarded, a load balancer's X-Forwarded-* are kept and ours appended."""
    proxy = await start_proxy(upstream__trust_forwarded=True)
    claims = {
        "X-Forwarded-For": "203.0.113.9, 198.51.100.2",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "shop.example",
        "Forwarded": 'for=203.0.113.9;proto=https;host="shop.example"',
        "Host": "internal:8080",
    }
    echoed = await echo(session, proxy.url("/echo/fwd"), headers=claims)
    assert header_values(echoed, "X-Forwarded-For") == ["203.0.113.9, 198.51.100.2, 127.0.0.1"]
    assert header_values(echoed, "X-Forwarded-Proto") == ["https"]
    assert header_values(echoed, "X-Forwarded-Host") == ["shop.example"]
    assert header_values(echoed, "Forwarded") == [
        'for=203.0.113.9;proto=https;host="shop.example", for=127.0.0.1;proto=http;host="internal:8080"'
    ]


async def test_host_is_the_apps_when_not_preserved(
    start_proxy: ProxyFactory, session: aiohttp.ClientSession, upstream_app: UpstreamApp
) -> None:
    """preserve_host = false: the app sees its own host and port; the client's goes in X-Forwarded-Host."""
    proxy = await start_proxy(upstream__preserve_host=False)
    echoed = await echo(session, proxy.url("/echo/host"), headers={"Host": "shop.example"})
    assert header_values(echoed, "Host") == [URL(upstream_app.url).raw_authority]
    assert header_values(echoed, "X-Forwarded-Host") == ["shop.example"]


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
async def test_the_host_of_an_ipv6_app_keeps_its_brackets(
    start_proxy: ProxyFactory, session: aiohttp.ClientSession
) -> None:
    """upstream.url http://[::1]:port, preserve_host = false: the app sees Host [::1]:port."""

    async def host(request: web.Request) -> web.Response:
        return web.Response(text=request.headers.get("Host", ""))

    app = web.Application()
    app.router.add_get("/{tail:.*}", host)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "::1", 0).start()
        port = runner.addresses[0][1]
        proxy = await start_proxy(upstream__url=f"http://[::1]:{port}", upstream__preserve_host=False)
        async with session.get(proxy.url("/v6"), headers={"Host": "shop.example"}) as response:
            assert response.status == 200
            assert await response.text() == f"[::1]:{port}"
    finally:
        await runner.cleanup()


# -- answers come back unchanged -----------------------------------------------------------


async def test_repeated_response_headers_keep_every_value_in_order(
    proxy: Proxy, session: aiohttp.ClientSession
) -> None:
    """Two Set-Cookie (and two X-Repeated) come back, each value, in the app's order."""
    async with session.get(proxy.url("/cookies")) as response:
        assert response.status == 200
        pairs = [(k.decode(), v.decode()) for k, v in response.raw_headers]
    repeated = [(k, v) for k, v in pairs if k in ("Set-Cookie", "X-Repeated")]
    assert repeated == [
        ("Set-Cookie", "a=1; Path=/"),
        ("X-Repeated", "first"),
        ("Set-Cookie", "b=2; Path=/; HttpOnly"),
        ("X-Repeated", "second"),
    ]


async def test_a_gzipped_answer_passes_untouched(proxy: Proxy, session: aiohttp.ClientSession) -> None:
    """Content-Encoding: gzip from the app arrives compressed, byte for byte, with its length."""
    async with session.get(proxy.url("/gzip"), headers={"Accept-Encoding": "gzip"}) as response:
        body = await response.read()
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Content-Length"] == str(len(GZIPPED))
    assert sha256(body) == sha256(GZIPPED)


@pytest.mark.parametrize("code", [200, 201, 301, 400, 403, 404, 409, 418, 500, 503])
async def test_status_codes_pass_as_they_are(proxy: Proxy, session: aiohttp.ClientSession, code: int) -> None:
    """The app's status and its headers come back as they are, never ours."""
    async with session.get(proxy.url(f"/status/{code}"), allow_redirects=False) as response:
        assert response.status == code
        assert response.headers["X-Status"] == str(code)
        assert "X-Cache" not in response.headers


@pytest.mark.parametrize("code", [204, 304])
async def test_204_and_304_have_no_body_and_keep_the_connection(proxy: Proxy, code: int) -> None:
    """A 204 or 304 is sent without a body, and the next request on the connection is answered."""
    answer = await raw_exchange(
        proxy.base,
        f"GET /status/{code} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        + b"GET /echo/next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    first, _, rest = answer.partition(b"\r\n\r\n")
    assert first.startswith(f"HTTP/1.1 {code} ".encode())
    assert b"Transfer-Encoding" not in first
    assert rest.startswith(b"HTTP/1.1 200 ")  # straight after the head: no body bytes between
    assert b'"target": "/echo/next"' in rest


async def test_location_is_not_rewritten(proxy: Proxy, session: aiohttp.ClientSession) -> None:
    """A redirect's Location comes back exactly as the app wrote it."""
    async with session.get(proxy.url("/redirect"), allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "http://app.internal:8000/next?x=1"


async def test_a_streamed_answer_arrives_before_the_app_finishes_it(
    proxy: Proxy, session: aiohttp.ClientSession, upstream_app: UpstreamApp
) -> None:
    """The first event of a stream reaches the client while the app still holds back the last."""
    name = token()
    async with asyncio.timeout(10), session.get(proxy.url(f"/stream/{name}")) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        assert await response.content.readuntil(b"\n\n") == b"data: one\n\n"  # before the release
        async with session.post(f"{upstream_app.url}/release/{name}") as released:
            assert released.status == 200
        assert await response.content.read() == b"data: two\n\n"


async def test_an_http10_client_gets_a_stream_delimited_by_the_close(
    proxy: Proxy, upstream_app: UpstreamApp
) -> None:
    """HTTP/1.0 knows no chunks: an answer of unknown length ends with the connection."""
    name = token()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(f"GET /stream/{name} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"chunked" not in head.lower()
        assert await asyncio.wait_for(reader.readexactly(11), timeout=10) == b"data: one\n\n"
        async with aiohttp.ClientSession() as direct, direct.post(f"{upstream_app.url}/release/{name}"):
            pass
        assert await asyncio.wait_for(reader.read(), timeout=10) == b"data: two\n\n"  # then EOF
    finally:
        writer.close()


async def test_kept_alive_connections_to_the_app_are_reused(
    proxy: Proxy, session: aiohttp.ClientSession
) -> None:
    """Sequential requests go over one kept-alive connection to the app (the app sees one port)."""
    ports = {(await echo(session, proxy.url(f"/echo/{i}")))["peer_port"] for i in range(10)}
    assert len(ports) == 1
    stats = proxy.app[UPSTREAM].stats
    assert stats.connections == 1
    assert stats.idle == 1


async def test_a_post_is_not_sent_again_when_a_kept_alive_connection_drops(
    proxy: Proxy, session: aiohttp.ClientSession
) -> None:
    """RFC 9110 section 9.2.2: a POST without a body that the app read before dropping a reused
    connection is not repeated on a new one: the app saw it once, the client gets a 502."""
    name = token()
    await echo(session, proxy.url("/echo/warm"))  # leaves a kept-alive connection to the app
    assert proxy.app[UPSTREAM].stats.idle == 1
    async with session.post(proxy.url(f"/drop-after-read/{name}")) as response:
        assert response.status == 502
        assert await response.text() == "application unavailable\n"
    async with session.get(proxy.url(f"/seen/{name}")) as response:
        assert await response.text() == "1"
    assert proxy.app[UPSTREAM].stats.errors == {"reset": 1}


# -- websockets ----------------------------------------------------------------------------


async def test_a_websocket_is_relayed_both_ways(proxy: Proxy, session: aiohttp.ClientSession) -> None:
    """Text and binary frames go both ways, the subprotocol is the app's choice, and a ping gets
    the app's pong; the tunnel is counted while open."""
    async with session.ws_connect(
        proxy.url("/ws"), protocols=("chat",), autoping=False, timeout=aiohttp.ClientWSTimeout(ws_close=5)
    ) as ws:
        assert ws.protocol == "chat"
        assert proxy.app[UPSTREAM].stats.websockets == 1
        await ws.send_str("hello")
        assert (await ws.receive(timeout=5)).data == "hello"
        blob = payload(300_000, seed=3)
        await ws.send_bytes(blob)
        received = await ws.receive(timeout=5)
        assert received.type is WSMsgType.BINARY
        assert sha256(received.data) == sha256(blob)
        await ws.ping(b"are you there")
        pong = await ws.receive(timeout=5)
        assert (pong.type, pong.data) == (WSMsgType.PONG, b"are you there")
    await wait_until(lambda: proxy.app[UPSTREAM].stats.websockets == 0)  # the close reaches us next


async def test_the_apps_close_code_reaches_the_client(proxy: Proxy, session: aiohttp.ClientSession) -> None:
    """The app closing with 4001 and a reason: the client gets both."""
    async with session.ws_connect(proxy.url("/ws")) as ws:
        await ws.send_str("close:4001")
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.CLOSE
        assert (msg.data, msg.extra) == (4001, "app says bye")


async def test_the_clients_close_code_reaches_the_app(
    proxy: Proxy, session: aiohttp.ClientSession, upstream_app: UpstreamApp
) -> None:
    """The client closing with 4002: the app sees 4002."""
    name = token()
    async with session.ws_connect(proxy.url(f"/ws?token={name}")) as ws:
        await ws.send_str("ping?")
        assert (await ws.receive(timeout=5)).data == "ping?"
        await ws.close(code=4002, message=b"client says bye")
    async with asyncio.timeout(10), session.get(f"{upstream_app.url}/ws-closed/{name}") as response:
        assert await response.text() == "4002"


async def test_a_quiet_websocket_is_closed_after_idle_timeout(
    start_proxy: ProxyFactory, session: aiohttp.ClientSession
) -> None:
    """No byte either way for upstream.idle_timeout_s: the tunnel is closed and counted as `idle`."""
    proxy = await start_proxy(upstream__idle_timeout_s=0.3)
    async with session.ws_connect(proxy.url("/ws")) as ws:
        await ws.send_str("still here")
        assert (await ws.receive(timeout=5)).data == "still here"
        msg = await ws.receive(timeout=10)  # nothing more is sent: the tunnel goes quiet
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR)
    await wait_until(lambda: proxy.app[UPSTREAM].stats.websockets == 0)
    assert proxy.app[UPSTREAM].stats.errors == {"idle": 1}


async def test_a_refused_websocket_handshake_gets_the_apps_answer(
    proxy: Proxy, session: aiohttp.ClientSession
) -> None:
    """A path that does not upgrade answers the app's status, not a tunnel."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(proxy.url("/status/403"))
    assert refused.value.status == 403


# -- failures are ours to answer -----------------------------------------------------------


async def test_an_app_that_refuses_connections_gives_502(
    start_proxy: ProxyFactory, session: aiohttp.ClientSession
) -> None:
    """Nothing listening at upstream.url: 502, counted as `refused`."""
    proxy = await start_proxy(upstream__url=f"http://127.0.0.1:{free_port()}")
    async with session.get(proxy.url("/anything")) as response:
        assert response.status == 502
        assert await response.text() == "application unavailable\n"
    assert proxy.app[UPSTREAM].stats.errors == {"refused": 1}


@pytest.mark.parametrize("lane", [True, False])
async def test_no_headers_within_timeout_gives_504(
    start_proxy: ProxyFactory, session: aiohttp.ClientSession, lane: bool
) -> None:
    """An app that never answers: 504 after upstream.timeout_s, counted as `timeout`."""
    proxy = await start_proxy(lane=lane, upstream__timeout_s=0.3)
    async with asyncio.timeout(10), session.get(proxy.url("/hang")) as response:
        assert response.status == 504
        assert await response.text() == "application timed out\n"
    assert proxy.app[UPSTREAM].stats.errors == {"timeout": 1}


async def test_the_pool_is_bounded_by_max_connections(
    start_proxy: ProxyFactory, session: aiohttp.ClientSession, upstream_app: UpstreamApp
) -> None:
    """max_connections = 1 with that connection busy: the next request waits timeout_s, then 504
    (`pool`); once the first is done the connection serves the next request."""
    proxy = await start_proxy(upstream__max_connections=1, upstream__timeout_s=0.3)
    name = token()
    async with asyncio.timeout(10):
        async with aiohttp.ClientSession() as holder:
            held = await holder.get(proxy.url(f"/hold/{name}"))
            assert await held.content.readexactly(5) == b"held!"
            async with session.get(proxy.url("/echo/waits")) as response:
                assert response.status == 504
            held.close()
        async with session.get(f"{upstream_app.url}/released/{name}") as released:
            assert released.status == 200
        assert (await echo(session, proxy.url("/echo/after")))["target"] == "/echo/after"
    stats = proxy.app[UPSTREAM].stats
    assert stats.errors == {"pool": 1, "client_gone": 1}
    assert stats.connections == 1


@pytest.mark.parametrize("lane", [True, False])
async def test_a_body_over_the_limit_gives_413_before_it_is_sent(
    start_proxy: ProxyFactory, session: aiohttp.ClientSession, lane: bool
) -> None:
    """Content-Length over max_body_bytes with Expect: 100-continue: 413 and the body never leaves
    the client; nothing reaches the app."""
    proxy = await start_proxy(lane=lane, upstream__max_body_bytes=1000)
    sent: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        sent.append(1)
        yield b"x" * 5000

    headers = {"Content-Length": "5000"}
    async with session.post(proxy.url("/echo/big"), data=body(), headers=headers, expect100=True) as response:
        assert response.status == 413
    assert sent == []
    assert proxy.app[UPSTREAM].stats.errors == {"body_too_large": 1}
    assert proxy.app[UPSTREAM].stats.requests == {}


async def test_a_413_arrives_while_the_client_is_still_sending(proxy: Proxy) -> None:
    """Without Expect, the 413 for a 1 GiB Content-Length comes after the head: we do not read on."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(
            b"PUT /echo/huge HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n" + b"y" * 65536
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        assert head.startswith(b"HTTP/1.1 413 ")
    finally:
        writer.close()


async def test_a_chunked_body_over_the_limit_gives_413(
    start_proxy: ProxyFactory, session: aiohttp.ClientSession
) -> None:
    """A chunked body that passes max_body_bytes is cut there: 413, counted."""
    proxy = await start_proxy(upstream__max_body_bytes=100_000)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"z" * 50_000

    async with session.post(proxy.url("/echo/chunked-big"), data=body()) as response:
        assert response.status == 413
    assert proxy.app[UPSTREAM].stats.errors == {"body_too_large": 1}


@pytest.mark.parametrize("path", ["/hold/{token}", "/stream/{token}"])
async def test_a_body_that_stalls_aborts_the_client_connection(
    start_proxy: ProxyFactory, session: aiohttp.ClientSession, path: str
) -> None:
    """The app stops sending mid-body for idle_timeout_s: the client's connection is aborted, so a
    body with a length is short and a chunked one has no last chunk (never complete-looking)."""
    proxy = await start_proxy(upstream__idle_timeout_s=0.3)
    async with asyncio.timeout(10), session.get(proxy.url(path.format(token=token()))) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    assert proxy.app[UPSTREAM].stats.errors == {"idle": 1}


async def test_an_app_that_drops_the_connection_mid_body_cuts_the_clients(
    proxy: Proxy, session: aiohttp.ClientSession
) -> None:
    """The app announces 1000 bytes, sends 100 and drops: the client sees a short body, not 1000."""
    async with session.get(proxy.url("/cut")) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    assert proxy.app[UPSTREAM].stats.errors == {"reset": 1}


async def test_a_client_that_leaves_mid_answer_frees_the_apps_connection_at_once(
    proxy: Proxy, session: aiohttp.ClientSession, upstream_app: UpstreamApp
) -> None:
    """The client disconnects while the app holds its answer: the app's connection is closed at
    once (its handler ends: the app says `released`), long before idle_timeout_s (60 s)."""
    name = token()
    async with asyncio.timeout(10):
        async with aiohttp.ClientSession() as leaving:
            response = await leaving.get(proxy.url(f"/hold/{name}"))
            assert await response.content.readexactly(5) == b"held!"
            response.close()  # drops the connection
        async with session.get(f"{upstream_app.url}/released/{name}") as released:
            assert released.status == 200
    assert proxy.app[UPSTREAM].stats.connections == 0


@pytest.mark.parametrize("lane", [True, False])
async def test_a_client_that_leaves_mid_upload_frees_the_apps_connection_at_once(
    start_proxy: ProxyFactory, session: aiohttp.ClientSession, upstream_app: UpstreamApp, lane: bool
) -> None:
    """Streaming a body (request_buffering off), the client disconnects half-way through a chunked
    upload: the app's connection goes at once."""
    proxy = await start_proxy(lane=lane, upstream__request_buffering=False)
    name = token()
    stop = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"first part"
        await stop.wait()  # until the test lets the client go
        yield b"never sent"  # pragma: no cover

    async with asyncio.timeout(10):
        async with aiohttp.ClientSession() as leaving:
            upload_task = asyncio.create_task(leaving.post(proxy.url(f"/slow-upload/{name}"), data=body()))
            async with session.get(f"{upstream_app.url}/receiving/{name}") as receiving:
                assert receiving.status == 200
            upload_task.cancel()  # closes the client's connection mid-body
            with pytest.raises(asyncio.CancelledError):
                await upload_task
        async with session.get(f"{upstream_app.url}/released/{name}") as released:
            assert released.status == 200


# -- ours stay ours ------------------------------------------------------------------------


async def test_images_are_served_from_the_cache_while_the_app_is_down(
    start_proxy: ProxyFactory, session: aiohttp.ClientSession, container: ContainerClient
) -> None:
    """The app refusing connections touches neither images (X-Cache: HIT), /readyz nor the breaker."""
    data = payload(20_000, seed=20)
    await upload(container, "cached.png", data)
    proxy = await start_proxy(upstream__url=f"http://127.0.0.1:{free_port()}")
    for expected in ("MISS", "HIT"):
        async with session.get(proxy.url("/images/cached.png")) as response:
            assert response.status == 200
            assert response.headers["X-Cache"] == expected
            assert sha256(await response.read()) == sha256(data)
    for _ in range(10):
        async with session.get(proxy.url("/app/page")) as response:
            assert response.status == 502
    async with session.get(proxy.url("/images/cached.png")) as response:
        assert response.headers["X-Cache"] == "HIT"
    async with session.get(proxy.url("/readyz")) as response:
        assert response.status == 200
    metrics = proxy.app[METRICS].render().decode()
    assert "imgproxy_origin_breaker_open 0.0" in metrics
    assert 'imgproxy_upstream_errors_total{kind="refused"} 10.0' in metrics


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/healthz", 200),
        ("GET", "/readyz", 200),
        ("GET", "/metrics", 200),
        ("GET", "/admin/cache", 401),
        ("DELETE", "/admin/cache/x.png", 401),
        ("GET", "/admin/anything", 404),
        ("GET", "/images/missing.png", 404),
        ("POST", "/images/missing.png", 405),
        ("POST", "/healthz", 405),
    ],
)
async def test_our_routes_never_reach_the_app(
    proxy: Proxy, session: aiohttp.ClientSession, method: str, path: str, status: int
) -> None:
    """Our own routes keep precedence, whatever the app has at the same path."""
    async with session.request(method, proxy.url(path)) as response:
        assert response.status == status
        assert "app healthz" not in await response.text()
    assert proxy.app[UPSTREAM].stats.requests == {}


@pytest.mark.parametrize("lane", [True, False])
async def test_ops_routes_move_under_ops_prefix(
    start_proxy: ProxyFactory, session: aiohttp.ClientSession, lane: bool
) -> None:
    """With server.ops_prefix, /healthz and /admin/... are the app's, ours live under the prefix."""
    proxy = await start_proxy(lane=lane, server__ops_prefix="/_imgproxy")
    async with session.get(proxy.url("/healthz")) as response:
        assert await response.text() == "app healthz\n"
    async with session.get(proxy.url("/admin/cache")) as response:
        assert await response.text() == "app admin\n"
    async with session.get(proxy.url("/_imgproxy/healthz")) as response:
        assert await response.text() == "ok\n"
    auth = AUTH
    async with session.get(proxy.url("/_imgproxy/admin/cache"), headers=auth) as response:
        assert "cache_size" in await response.json()
    async with session.delete(proxy.url("/_imgproxy/admin/cache/x.png"), headers=auth) as response:
        assert await response.json() == {"path": "x.png", "purged": False}


async def test_without_upstream_url_unknown_paths_answer_404(
    start_proxy: ProxyFactory, session: aiohttp.ClientSession
) -> None:
    """upstream.url empty (the default): nothing is forwarded, other paths are 404 as before."""
    proxy = await start_proxy(upstream__url="")
    async with session.get(proxy.url("/echo/x")) as response:
        assert response.status == 404
    assert UPSTREAM not in proxy.app


async def test_metrics_count_the_apps_answers_and_failures(
    start_proxy: ProxyFactory, session: aiohttp.ClientSession
) -> None:
    """/metrics has the app's answers by status class, the latency histogram and errors by kind."""
    proxy = await start_proxy(upstream__timeout_s=0.3)
    for path in ("/echo/a", "/echo/b", "/status/404", "/status/503", "/hang"):
        async with session.get(proxy.url(path)) as response:
            await response.read()
    async with session.get(proxy.url("/metrics")) as response:
        text = await response.text()
    assert 'imgproxy_upstream_requests_total{class="2xx"} 2.0' in text
    assert 'imgproxy_upstream_requests_total{class="4xx"} 1.0' in text
    assert 'imgproxy_upstream_requests_total{class="5xx"} 1.0' in text
    assert 'imgproxy_upstream_errors_total{kind="timeout"} 1.0' in text
    assert "imgproxy_upstream_request_seconds_count 4.0" in text
    assert 'imgproxy_upstream_request_seconds_bucket{le="+Inf"} 4.0' in text
    assert "imgproxy_upstream_websockets 0.0" in text
    assert 'imgproxy_http_requests_total{status="504"} 1.0' in text
