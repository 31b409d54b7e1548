"""The front door, tried as an attacker would: raw sockets against `python -m imgproxy` in front of
an app that frames request bodies by Content-Length (tests/support/raw_app.py), as gunicorn, uvicorn and
Node do. What must hold: the app gets exactly the bytes a client sent, framed as we announce them,
so no request can be smuggled into another user's; a slow client holds no connection to the app;
request targets reach the app in origin form; slow or silent clients are cut off by deadlines.
"""

from __future__ import annotations

import asyncio
import gzip
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Final

import aiohttp
import pytest
from azure.storage.blob.aio import ContainerClient
from prometheus_client.parser import text_string_to_metric_families

from devtools.azurite import AzuriteServer, connection_string
from tests.helpers import MIB, RawClient, payload, raw_answer, sha256, upload
from tests.support.origin_proxy import OriginProxy
from tests.support.processes import Server, start_server
from tests.support.raw_app import RawApp
from tests.support.upstream_app import UpstreamApp

SMUGGLED: Final = b"POST /capture HTTP/1.1\r\nHost: app\r\nContent-Length: 70\r\n\r\n"
VICTIM: Final = b"GET /account HTTP/1.1\r\nHost: app\r\nCookie: session=victim-secret-%d\r\n\r\n"


@pytest.fixture
async def raw_app() -> AsyncIterator[RawApp]:
    app = RawApp()
    await app.start()
    yield app
    await app.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@contextmanager
def front_door(
    azurite: AzuriteServer | str, container: ContainerClient, app_url: str, **env: str
) -> Iterator[Server]:
    """`python -m imgproxy` in front of `app_url`, no drain; `env` adds IMGPROXY_* settings."""
    with start_server(
        azurite, container.container_name, IMGPROXY_UPSTREAM_URL=app_url, IMGPROXY_SERVER_DRAIN_S="0", **env
    ) as server:
        yield server


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def metrics_text(base: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as response:
        return await response.text()


async def until_metric(base: str, value: float, name: str, timeout_s: float = 15, **labels: str) -> None:
    """Poll the server's /metrics until `name{labels}` is `value` (no event crosses a process)."""
    async with asyncio.timeout(timeout_s):
        while metric(await metrics_text(base), name, **labels) != value:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


# -- request smuggling --------------------------------------------------------------------------


def fixed_point(encode: Callable[[bytes], bytes]) -> bytes:
    """An encoded body whose encoded length N equals the number of `A`s it inflates to before the
    smuggled request: inflated on the way in and sent on under the client's Content-Length N, the
    app would read the `A`s as the body and the smuggled request as the next one."""
    size = len(encode(SMUGGLED))
    for _ in range(100):
        encoded = encode(b"A" * size + SMUGGLED)
        if len(encoded) == size:
            return encoded
        size = len(encoded)
    raise AssertionError("no fixed point")  # pragma: no cover


ENCODINGS: Final[dict[str, tuple[str, Callable[[bytes], bytes]]]] = {
    "gzip": ("gzip", lambda data: gzip.compress(data, mtime=0)),
    "deflate": ("deflate", zlib.compress),
}


def chunked(data: bytes, size: int = 40) -> bytes:
    parts = [
        b"%x\r\n%s\r\n" % (len(data[i : i + size]), data[i : i + size]) for i in range(0, len(data), size)
    ]
    return b"".join(parts) + b"0\r\n\r\n"


@pytest.mark.parametrize("buffering", ["true", "false"])
@pytest.mark.parametrize("framing", ["gzip", "deflate", "chunked-gzip"])
async def test_compressed_bodies_reach_the_app_byte_exact_and_smuggle_nothing(
    azurite: AzuriteServer, container: ContainerClient, raw_app: RawApp, framing: str, buffering: str
) -> None:
    """A compressed body built to smuggle a request reaches the app as the exact compressed bytes
    with its Content-Encoding, and each victim after it on the same app connection gets its own
    answer; no smuggled request ever appears in the app's log."""
    name, encode = ENCODINGS["gzip" if framing == "chunked-gzip" else framing]
    body = fixed_point(encode)
    if framing == "chunked-gzip":
        head = b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Encoding: gzip\r\n"
        attack = head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body)
    else:
        head = b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n"
        attack = head % (name.encode(), len(body)) + body
    with front_door(
        azurite, container, raw_app.url, IMGPROXY_UPSTREAM_MAX_CONNECTIONS="1",
        IMGPROXY_UPSTREAM_REQUEST_BUFFERING=buffering,
    ) as server:  # fmt: skip
        uploaded = await raw_answer(server.base, attack)
        assert uploaded.status == 200
        assert uploaded.json()["body_sha256"] == sha256(body)
        assert uploaded.json()["body_bytes"] == len(body)
        for victim in range(3):
            answer = await raw_answer(server.base, VICTIM % victim)
            assert answer.status == 200
            assert answer.json()["target"] == "/account"
            assert answer.json()["cookie"] == [f"session=victim-secret-{victim}"]
    assert raw_app.targets() == ["/upload", "/account", "/account", "/account"]
    assert raw_app.seen[0].header("Content-Encoding") == [name]


# Framings that proxies and apps have disagreed on; each is followed by a smuggled request.
_POST: Final = b"POST /u HTTP/1.1\r\nHost: a\r\n"
_TE: Final = b"Transfer-Encoding: "
FRAMINGS: Final = {
    "cl-and-te": _POST + b"Content-Length: 6\r\n" + _TE + b"chunked\r\n\r\n0\r\n\r\n",
    "te-and-cl": _POST + _TE + b"chunked\r\nContent-Length: 99\r\n\r\n0\r\n\r\n",
    "te-xchunked": _POST + _TE + b"xchunked\r\n\r\n0\r\n\r\n",
    "te-chunked-identity": _POST + _TE + b"chunked, identity\r\n\r\n0\r\n\r\n",
    "te-identity-chunked": _POST + _TE + b"identity, chunked\r\n\r\n0\r\n\r\n",
    "two-lengths": _POST + b"Content-Length: 5\r\nContent-Length: 60\r\n\r\nhello",
    "space-before-colon": _POST + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "obs-fold": _POST + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "bare-lf": b"POST /u HTTP/1.1\nHost: a\nContent-Length: 5\n\nhello",
    "signed-length": _POST + b"Content-Length: +5\r\n\r\nhello",
    "chunk-size-overflow": _POST + _TE + b"chunked\r\n\r\n1ffffffffffffffff\r\nx\r\n0\r\n\r\n",
    "chunk-ext-bare-lf": _POST + _TE + b"chunked\r\n\r\n5;x\nhello\r\n0\r\n\r\n",
    "http10-chunked": b"POST /u HTTP/1.0\r\nHost: a\r\n" + _TE + b"chunked\r\n\r\n0\r\n\r\n",
}


async def test_ambiguous_framings_never_put_a_victims_request_in_a_body(
    azurite: AzuriteServer, container: ContainerClient, raw_app: RawApp
) -> None:
    """Every classic CL/TE disagreement, each followed by a smuggled request: the app frames what
    it gets exactly as we do (a refused head never reaches it, a pipelined one arrives as its own
    request of the attacker's), and each victim after it gets its own answer; the refusals are
    logged in one line each."""
    with front_door(azurite, container, raw_app.url, IMGPROXY_UPSTREAM_MAX_CONNECTIONS="1") as server:
        for index, (name, framing) in enumerate(FRAMINGS.items()):
            attacker = await RawClient.open(server.base)
            await attacker.send(framing + SMUGGLED)
            status, _ = await attacker.head()
            assert status in (200, 400), name
            attacker.close()
            answer = await raw_answer(server.base, VICTIM % index)
            assert answer.json()["target"] == "/account", name
            assert answer.json()["cookie"] == [f"session=victim-secret-{index}"], name
        log = "".join(server.log)
    # each refused head is one line at INFO, not a traceback an attacker could fill the log with
    assert "Traceback" not in log
    assert "bad request from" in log
    for seen in raw_app.seen:  # no victim's bytes ever inside another request
        assert b"victim-secret" not in seen.body
        assert seen.target in ("/u", "/account", "/capture")
        assert seen.header("Transfer-Encoding") in ([], ["chunked"])
    # the app's own framing agrees with what it was told: every body it read was announced so
    assert all(len(seen.body) == int((seen.header("Content-Length") or ["0"])[0]) for seen in raw_app.seen)


# -- slow clients and the app's connection pool ----------------------------------------------


@pytest.mark.parametrize("buffering", [True, False])
async def test_trickling_bodies_and_idle_websockets_leave_the_pool_free(
    azurite: AzuriteServer,
    container: ContainerClient,
    upstream_app: UpstreamApp,
    session: aiohttp.ClientSession,
    buffering: bool,
) -> None:
    """With max_connections = 2: four clients trickling bodies and two idle websockets, then a
    plain GET answers 200 at once; the trickled bodies, when finished, arrive whole. Without
    request buffering (the documented cost) the trickling clients hold the pool: 504."""
    with front_door(
        azurite, container, upstream_app.url,
        IMGPROXY_UPSTREAM_MAX_CONNECTIONS="2", IMGPROXY_UPSTREAM_TIMEOUT_S="1",
        IMGPROXY_UPSTREAM_REQUEST_BUFFERING=str(buffering).lower(),
    ) as server:  # fmt: skip
        bodies = [payload(1000, seed=seed) for seed in range(4)]
        trickling = []
        for index, body in enumerate(bodies):
            client = await RawClient.open(server.base)
            head = b"POST /echo/trickle-%d HTTP/1.1\r\nHost: app\r\nContent-Length: 1000\r\n\r\n" % index
            await client.send(head + body[:1])
            trickling.append(client)
        sockets = [await session.ws_connect(f"{server.base}/ws") for _ in range(2)]
        for ws in sockets:  # both tunnels are open (an echo went through each)
            await ws.send_str("ping")
            assert (await ws.receive(timeout=10)).data == "ping"
        started = time.monotonic()
        async with session.get(f"{server.base}/echo/plain") as response:
            waited = time.monotonic() - started
            if buffering:
                assert response.status == 200
                assert waited < 0.9  # not a pool wait: those end at upstream.timeout_s (1 s) with 504
            else:
                assert response.status == 504
        if buffering:
            for client, body in zip(trickling, bodies, strict=True):
                await client.send(body[1:])
                answer = await client.answer()
                assert answer.status == 200
                assert answer.json()["body_sha256"] == sha256(body)
        for client in trickling:
            client.close()
        for ws in sockets:
            await ws.close()


async def test_a_trickled_body_gets_408_and_never_reaches_the_app(
    azurite: AzuriteServer, container: ContainerClient, raw_app: RawApp
) -> None:
    """A body that does not arrive within body_timeout_s (plus a second per body_min_rate bytes)
    gets 408 with Connection: close; nothing reaches the app."""
    with front_door(
        azurite, container, raw_app.url, IMGPROXY_UPSTREAM_BODY_TIMEOUT_S="1",
        IMGPROXY_UPSTREAM_BODY_MIN_RATE="1000",
    ) as server:  # fmt: skip
        client = await RawClient.open(server.base)
        started = time.monotonic()
        await client.send(b"POST /slow HTTP/1.1\r\nHost: app\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        answer = await client.answer()
        elapsed = time.monotonic() - started
        assert answer.status == 408
        assert answer.headers["connection"] == "close"
        assert 0.9 < elapsed < 5
        assert await client.until_closed() == b""
        client.close()
        text = await metrics_text(server.base)
    assert raw_app.seen == []
    assert metric(text, "imgproxy_upstream_errors_total", kind="client_timeout") == 1


async def test_a_slow_but_steady_upload_is_not_cut_off(
    azurite: AzuriteServer, container: ContainerClient, raw_app: RawApp
) -> None:
    """An upload slower than body_timeout_s in total but faster than body_min_rate goes through."""
    body = payload(6000, seed=3)
    with front_door(
        azurite, container, raw_app.url, IMGPROXY_UPSTREAM_BODY_TIMEOUT_S="1",
        IMGPROXY_UPSTREAM_BODY_MIN_RATE="2000",
    ) as server:  # fmt: skip
        client = await RawClient.open(server.base)
        await client.send(b"POST /steady HTTP/1.1\r\nHost: app\r\nContent-Length: 6000\r\n\r\n")
        started = time.monotonic()
        for start in range(0, 6000, 1000):  # 1000 bytes every 0.25 s: 4000 B/s for 1.5 s
            await client.send(body[start : start + 1000])
            await asyncio.sleep(0.25)  # the pace of the upload is what is under test
        answer = await client.answer()
        assert time.monotonic() - started > 1.2
        assert answer.status == 200
        assert answer.json()["body_sha256"] == sha256(body)
        client.close()


async def test_a_large_body_is_spooled_and_arrives_whole(
    azurite: AzuriteServer, container: ContainerClient, raw_app: RawApp
) -> None:
    """A body over request_buffer_bytes goes to a spool file first and reaches the app byte-exact
    with its length; a body that would pass spool_max_bytes gets 503 before it is read."""
    body = payload(3 * MIB, seed=4)
    with front_door(
        azurite, container, raw_app.url, IMGPROXY_UPSTREAM_REQUEST_BUFFER_BYTES="65536",
        IMGPROXY_UPSTREAM_SPOOL_MAX_BYTES=str(4 * MIB),
    ) as server:  # fmt: skip
        answer = await raw_answer(
            server.base, b"PUT /big HTTP/1.1\r\nHost: app\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        assert answer.status == 200
        assert answer.json()["body_sha256"] == sha256(body)
        refused = await raw_answer(
            server.base, b"PUT /bigger HTTP/1.1\r\nHost: app\r\nContent-Length: %d\r\n\r\n" % (5 * MIB)
        )
        assert refused.status == 503
        assert refused.headers["retry-after"] == "1"
        text = await metrics_text(server.base)
    assert raw_app.targets() == ["/big"]
    assert raw_app.seen[0].header("Content-Length") == [str(len(body))]
    assert metric(text, "imgproxy_upstream_errors_total", kind="busy") == 1


async def test_websockets_have_their_own_budget(
    azurite: AzuriteServer,
    container: ContainerClient,
    upstream_app: UpstreamApp,
    session: aiohttp.ClientSession,
) -> None:
    """max_websockets = 1: a second tunnel is refused with 503 while the first is open, and plain
    requests still get the pool (max_connections = 1) meanwhile; closing the first frees it."""
    with front_door(
        azurite, container, upstream_app.url, IMGPROXY_UPSTREAM_MAX_WEBSOCKETS="1",
        IMGPROXY_UPSTREAM_MAX_CONNECTIONS="1",
    ) as server:  # fmt: skip
        first = await session.ws_connect(f"{server.base}/ws")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{server.base}/ws")
        assert refused.value.status == 503
        async with session.get(f"{server.base}/echo/meanwhile") as response:
            assert response.status == 200
        await first.close()
        await until_metric(server.base, 0, "imgproxy_upstream_websockets")  # its tunnel has ended
        second = await session.ws_connect(f"{server.base}/ws")
        await second.send_str("again")
        assert (await second.receive(timeout=10)).data == "again"
        await second.close()


# -- request targets ------------------------------------------------------------------------------


async def test_an_absolute_form_target_reaches_the_app_in_origin_form(
    azurite: AzuriteServer, container: ContainerClient, raw_app: RawApp
) -> None:
    """`GET http://evil.example/x?y=1` reaches the app as `/x?y=1`, with the target's host as
    Host and X-Forwarded-Host (RFC 9112 section 3.2.2), never the target and a Host that differ."""
    with front_door(azurite, container, raw_app.url) as server:
        answer = await raw_answer(
            server.base, b"GET http://evil.example/x?y=%41 HTTP/1.1\r\nHost: good.example\r\n\r\n"
        )
        assert answer.status == 200
        bare = await raw_answer(
            server.base, b"GET HTTP://evil.example:8080 HTTP/1.1\r\nHost: good.example\r\n\r\n"
        )
        assert bare.status == 200
    first, second = raw_app.seen
    assert first.target == "/x?y=%41"
    assert first.header("Host") == ["evil.example"]
    assert first.header("X-Forwarded-Host") == ["evil.example"]
    assert second.target == "/"
    assert second.header("Host") == ["evil.example:8080"]


@pytest.mark.parametrize(
    "request_line",
    [
        b"OPTIONS * HTTP/1.1",
        b"CONNECT evil.example:443 HTTP/1.1",
        b"GET ftp://evil.example/x HTTP/1.1",
        b"GET http://user:pass@evil.example/x HTTP/1.1",
        b"GET http:///x HTTP/1.1",
    ],
)
async def test_other_target_forms_get_400_and_never_reach_the_app(
    azurite: AzuriteServer, container: ContainerClient, raw_app: RawApp, request_line: bytes
) -> None:
    """Asterisk-form, authority-form, other schemes and userinfo are answered 400 here."""
    with front_door(azurite, container, raw_app.url) as server:
        answer = await raw_answer(server.base, request_line + b"\r\nHost: good.example\r\n\r\n")
    assert answer.status == 400
    assert raw_app.seen == []


# -- deadlines and limits -------------------------------------------------------------------------


async def test_a_half_sent_request_head_is_closed_within_header_timeout(
    azurite: AzuriteServer, container: ContainerClient
) -> None:
    """Part of a head and then nothing: a 408 and the connection closed at header_timeout_s (not at
    the keep-alive timeout); a connection that sends nothing is closed then too, without a word."""
    with start_server(
        azurite, container.container_name, IMGPROXY_SERVER_HEADER_TIMEOUT_S="1", IMGPROXY_SERVER_DRAIN_S="0"
    ) as server:
        half = await RawClient.open(server.base)
        silent = await RawClient.open(server.base)
        started = time.monotonic()
        await half.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        said = await half.until_closed()
        elapsed = time.monotonic() - started
        assert said.startswith(b"HTTP/1.1 408 ")
        assert 0.8 < elapsed < 5
        assert await silent.until_closed() == b""
        assert time.monotonic() - started < 5
        half.close()
        silent.close()
        text = await metrics_text(server.base)
    assert metric(text, "imgproxy_client_cutoffs_total", reason="head_timeout") == 2


async def test_a_kept_alive_connection_idles_for_the_keepalive_timeout_not_the_header_timeout(
    azurite: AzuriteServer, container: ContainerClient
) -> None:
    """Between requests a connection may stay silent for keepalive_timeout_s (longer than
    header_timeout_s), then the next request is answered; after keepalive_timeout_s it is closed."""
    with start_server(
        azurite, container.container_name, IMGPROXY_SERVER_HEADER_TIMEOUT_S="0.5",
        IMGPROXY_SERVER_KEEPALIVE_TIMEOUT_S="2", IMGPROXY_SERVER_DRAIN_S="0",
    ) as server:  # fmt: skip
        client = await RawClient.open(server.base)
        await client.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await client.answer()).status == 200
        await asyncio.sleep(1)  # silence longer than the header deadline: the subject of the test
        await client.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await client.answer()).status == 200
        started = time.monotonic()
        assert await client.until_closed() == b""
        assert 1 < time.monotonic() - started < 6
        client.close()


async def test_a_client_that_stops_reading_a_streamed_blob_is_cut_off(
    origin: OriginProxy, container: ContainerClient
) -> None:
    """A client that stops reading a 48 MiB blob streamed from Azure is cut off within
    send_timeout_s and the origin stream is released (no more origin reads, no stream open)."""
    data = payload(48 * MIB, seed=5)
    await upload(container, "big.bin", data)
    with start_server(
        connection_string(origin.endpoint), container.container_name, IMGPROXY_HTTP_SEND_TIMEOUT_S="1",
        IMGPROXY_SERVER_DRAIN_S="0", IMGPROXY_CACHE_MAX_ITEM_BYTES=str(MIB),
    ) as server:  # fmt: skip
        client = await RawClient.open(server.base, rcvbuf=16 * 1024)
        await client.send(b"GET /images/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers = await client.head()
        assert status == 200
        assert headers["content-length"] == str(48 * MIB)
        started = time.monotonic()
        await until_metric(server.base, 1, "imgproxy_client_cutoffs_total", reason="send_timeout")
        assert time.monotonic() - started >= 0.9
        await until_metric(server.base, 0, "imgproxy_http_streams")
        moved = origin.body_bytes("big.bin")
        received = len(await client.until_closed())
        assert received < 48 * MIB
        client.close()
        await asyncio.sleep(0.5)  # nothing more is read from Azure after the cut
        assert origin.body_bytes("big.bin") == moved
        assert moved < 16 * MIB


async def test_connections_per_address_are_capped(azurite: AzuriteServer, container: ContainerClient) -> None:
    """max_connections_per_ip = 2: a third connection from one address gets 503 and is closed;
    once one of the first two is gone, a new one is served."""
    with start_server(
        azurite, container.container_name, IMGPROXY_SERVER_MAX_CONNECTIONS_PER_IP="2",
        IMGPROXY_SERVER_DRAIN_S="0",
    ) as server:  # fmt: skip
        first = await RawClient.open(server.base)
        second = await RawClient.open(server.base)
        await first.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await first.answer()).status == 200
        third = await RawClient.open(server.base)
        said = await third.until_closed()
        third.close()
        assert said.startswith(b"HTTP/1.1 503 ")
        first.close()
        await second.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await second.answer()).status == 200
        async with asyncio.timeout(10):
            while True:  # the server sees the first one go a moment after we close it
                fourth = await RawClient.open(server.base)
                await fourth.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                status, _ = await fourth.head()
                fourth.close()
                if status == 200:
                    break
        second.close()


async def test_every_answer_says_server_imgproxy_without_versions(
    azurite: AzuriteServer, container: ContainerClient, raw_app: RawApp
) -> None:
    """Our answers (health, image hit and miss, errors, aiohttp's own 400) name no versions, and
    the 400 for a malformed head does not quote it."""
    await upload(container, "s.png", payload(1000, seed=6))
    with front_door(azurite, container, raw_app.url) as server:
        answers = [
            await raw_answer(server.base, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
            await raw_answer(server.base, b"GET /images/s.png HTTP/1.1\r\nHost: x\r\n\r\n"),
            await raw_answer(server.base, b"GET /images/s.png HTTP/1.1\r\nHost: x\r\n\r\n"),
            await raw_answer(server.base, b"GET /images/missing.png HTTP/1.1\r\nHost: x\r\n\r\n"),
            await raw_answer(server.base, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"),
        ]
        malformed = await RawClient.open(server.base)
        await malformed.send(b"GET /x HTTP/1.1\r\nHost: x\r\nBad <script>: y\r\n\r\n")
        bad = await malformed.until_closed()
        malformed.close()
    assert [answer.status for answer in answers] == [200, 200, 200, 404, 400]
    assert answers[2].headers["x-cache"] == "HIT"
    assert {answer.headers["server"] for answer in answers} == {"imgproxy"}
    assert bad.startswith(b"HTTP/1.0 400 ") or bad.startswith(b"HTTP/1.1 400 ")
    assert b"\r\nServer: imgproxy\r\n" in bad
    assert b"aiohttp" not in bad and b"Python" not in bad
    assert b"<script>" not in bad  # the parser's refusal in fixed words, the request not quoted
