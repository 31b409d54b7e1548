"""The hot path installed on the server (as `python -m imgproxy` does): same answers, fewer steps."""

from __future__ import annotations

import logging
from typing import Final

import aiohttp
import pytest
from azure.storage.blob.aio import ContainerClient
from yarl import URL

from imgproxy.http.prebuilt import MAX_BODY
from imgproxy.transform.signing import sign_url
from imgproxy.transform.variants import HOT_MEMO_MAX_CHARS
from tests.helpers import (
    AppClient,
    AppClientFactory,
    RawAnswer,
    RawClient,
    base_url,
    cache_stats,
    fetch,
    payload,
    raw_url,
    sha256,
    upload,
    wait_until,
)
from tests.support.images import jpeg
from tests.support.origin_proxy import OriginProxy

VARYING: Final = {"date", "server", "x-request-id"}  # x-request-id: a new one per request


@pytest.fixture
def to_app() -> list[str]:
    """The requests (method and path) that went past the hot path to the application."""
    return []


@pytest.fixture
async def served(app_client: AppClientFactory, to_app: list[str]) -> AppClient:
    """The app, served as production serves it (the hot path installed); each request that reaches
    the application (past the hot path) is recorded in `to_app` as "METHOD path?query"."""
    return await app_client(routed=to_app)


@pytest.fixture
def base(served: AppClient) -> str:
    return base_url(served)


async def fetch_compared(
    session: aiohttp.ClientSession, url: str | URL, method: str = "GET", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    """`fetch`, its headers as a dict (lower-case names) without those that vary between answers."""
    status, answer, body = await fetch(session, url, method, **headers)
    return (
        status,
        {name.lower(): value for name, value in answer.items() if name.lower() not in VARYING},
        body,
    )


async def test_hot_hit_answers_exactly_like_the_application(
    base: str, container: ContainerClient, origin: OriginProxy, to_app: list[str]
) -> None:
    """A plain GET hit from the hot path has the application's status, headers and bytes."""
    data = payload(20_000, seed=41)
    await upload(container, "hot.png", data)
    url = f"{base}/images/hot.png"
    async with aiohttp.ClientSession() as session:
        first = await fetch_compared(session, url)
        hot = await fetch_compared(session, url)
        # A conditional header that does not match takes the application's path to the same 200.
        full = await fetch_compared(session, url, **{"If-None-Match": '"other"'})
        head = await fetch_compared(session, url, "HEAD")
        stats = await cache_stats(session, base)
        metrics = await (await session.get(f"{base}/metrics")).text()

    assert (first[0], first[1]["x-cache"], sha256(first[2])) == (200, "MISS", sha256(data))
    assert (hot[0], sha256(hot[2])) == (200, sha256(data))
    assert hot[1] == full[1] == head[1]
    assert hot[1]["x-cache"] == "HIT"
    assert hot[2] == full[2]
    assert origin.count("hot.png") == 1
    # Only the plain GET hit stayed on the hot path.
    assert to_app == [
        "GET /images/hot.png",
        "GET /images/hot.png",
        "HEAD /images/hot.png",
        "GET /admin/cache",
        "GET /metrics",
    ]
    assert (stats["hits"], stats["misses"]) == (3, 1)
    # Four image answers and the /admin/cache one (the hot path counts its responses too).
    assert 'imgproxy_http_requests_total{status="200"} 5.0' in metrics


@pytest.mark.parametrize(
    ("raw_path", "status"),
    [("/images/a/../b.png", 400), ("/images/%ff", 400), ("/images/missing.png", 404), ("/nowhere", 404)],
)
async def test_what_the_hot_path_cannot_answer_goes_to_the_application(
    raw_path: str, status: int, base: str, origin: OriginProxy
) -> None:
    """Bad paths, misses and other routes get the application's answers through the hot path."""
    async with aiohttp.ClientSession() as session:
        url = raw_url(base, raw_path)
        async with session.get(url) as response:
            assert response.status == status


async def test_ranges_and_conditionals_on_a_hit_are_not_taken_by_the_hot_path(
    base: str, container: ContainerClient, origin: OriginProxy
) -> None:
    """A Range or a matching If-None-Match on a cached blob still gets its 206 or 304."""
    data = payload(5000, seed=42)
    await upload(container, "parts.png", data)
    url = f"{base}/images/parts.png"
    async with aiohttp.ClientSession() as session:
        _, headers, _ = await fetch_compared(session, url)
        partial = await fetch_compared(session, url, Range="bytes=10-19")
        unchanged = await fetch_compared(session, url, **{"If-None-Match": headers["etag"]})
    assert (partial[0], partial[2]) == (206, data[10:20])
    assert (unchanged[0], unchanged[2]) == (304, b"")
    assert origin.count("parts.png") == 1


async def read_answer(client: RawClient) -> RawAnswer:
    """One HTTP/1.x answer, which has a Content-Length and no header twice."""
    answer = await client.answer()
    assert len(answer.headers) == len(answer.fields), f"a header twice in {answer.fields!r}"
    assert "content-length" in answer.headers
    return answer


def request_bytes(path: str, version: str = "1.1", **headers: str) -> bytes:
    lines = [f"GET {path} HTTP/{version}", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def open_raw(base: str) -> RawClient:
    return await RawClient.open(base, limit=2**16)  # asyncio's default reader buffer


async def test_pipelined_hits_come_back_whole_and_in_order(
    base: str, container: ContainerClient, to_app: list[str], prebuilt_calls: list[bool]
) -> None:
    """Pipelined GETs on one connection, pre-serialized or not, each get their own exact answer; a
    pre-serialized answer carries exactly the headers the application gives (Date aside)."""
    small, big = payload(20_000, seed=43), payload(MAX_BODY + 50_000, seed=44)
    await upload(container, "small.png", small)
    await upload(container, "big.png", big)
    async with aiohttp.ClientSession() as session:  # both into the memory cache
        for name in ("small.png", "big.png"):
            assert (await fetch_compared(session, f"{base}/images/{name}"))[0] == 200
    to_app.clear()
    client = await open_raw(base)
    order = ["small.png", "big.png", "small.png", "small.png", "small.png"]
    conditional = 3  # answered by the application: an If-None-Match that does not match
    await client.send(
        b"".join(
            request_bytes(f"/images/{name}", **({"If-None-Match": '"other"'} if i == conditional else {}))
            for i, name in enumerate(order)
        )
    )
    answers = [await read_answer(client) for _ in order]
    client.close()

    expected = {"small.png": sha256(small), "big.png": sha256(big)}
    assert [(answer.status_line, sha256(answer.body)) for answer in answers] == [
        ("HTTP/1.1 200 OK", expected[name]) for name in order
    ]
    assert prebuilt_calls[:2] == [True, False]  # the small hit pre-serialized; the big one above MAX_BODY
    assert len(prebuilt_calls) == 4  # every plain GET hit went through it; the conditional one did not
    assert to_app == ["GET /images/small.png"]
    application = answers[conditional].headers
    for headers in (answers[0].headers, answers[2].headers, answers[4].headers):
        assert {k: v for k, v in headers.items() if k not in VARYING} == {
            k: v for k, v in application.items() if k not in VARYING
        }
        assert headers["date"]
        assert len(headers["x-request-id"]) == 32


@pytest.mark.parametrize(
    ("version", "headers", "status_line"),
    [("1.0", {}, "HTTP/1.0 200 OK"), ("1.1", {"Connection": "close"}, "HTTP/1.1 200 OK")],
)
async def test_connections_that_end_after_the_answer_get_aiohttps_answer(
    version: str,
    headers: dict[str, str],
    status_line: str,
    base: str,
    container: ContainerClient,
    prebuilt_calls: list[bool],
) -> None:
    """HTTP/1.0 and `Connection: close` are left to aiohttp, which closes the connection after the body."""
    data = payload(10_000, seed=45)
    await upload(container, "closing.png", data)
    async with aiohttp.ClientSession() as session:
        await fetch_compared(session, f"{base}/images/closing.png")
    client = await open_raw(base)
    await client.send(request_bytes("/images/closing.png", version, **headers))
    answer = await read_answer(client)
    assert (answer.status_line, sha256(answer.body)) == (status_line, sha256(data))
    assert await client.reader.read() == b""  # the server closed the connection
    client.close()
    assert prebuilt_calls == [False]


async def test_a_client_that_does_not_read_holds_at_most_two_answers_in_the_server(
    served: AppClient, base: str, container: ContainerClient, prebuilt_calls: list[bool]
) -> None:
    """Pipelined hits the client never reads: once bytes queue up, pre-serializing stops and aiohttp
    waits for the client, so the server buffers at most one answer of each kind (then all arrive)."""
    data = payload(200_000, seed=46)
    count = 200  # 40 MB of answers: far more than the kernel's socket buffers hold
    await upload(container, "unread.png", data)
    async with aiohttp.ClientSession() as session:
        await fetch_compared(session, f"{base}/images/unread.png")
    client = await open_raw(base)
    client.writer.write(request_bytes("/images/unread.png") * count)  # not drained: it is not read
    await wait_until(lambda: False in prebuilt_calls)  # the first decline: bytes were queued
    server = served.server.handler
    # (The warm-up's connection may still be closing: take the fullest buffer.)
    queued = max(c.transport.get_write_buffer_size() for c in server.connections if c.transport)
    assert len(prebuilt_calls) < count
    assert 0 < queued <= 2 * len(data) + 64 * 1024
    bodies = [(await read_answer(client)).body for _ in range(count)]
    client.close()
    assert {sha256(body) for body in bodies} == {sha256(data)}
    assert len(prebuilt_calls) == count


async def test_with_the_access_log_on_hits_are_logged_with_their_size(
    app_client: AppClientFactory,
    container: ContainerClient,
    caplog: pytest.LogCaptureFixture,
    prebuilt_calls: list[bool],
) -> None:
    """`server.access_log`: hot hits take aiohttp's response, so the log line carries the body size."""
    client = await app_client(server__access_log=True)
    data = payload(12_345, seed=47)
    await upload(container, "logged.png", data)
    try:
        with caplog.at_level(logging.INFO, logger="aiohttp.access"):
            async with aiohttp.ClientSession() as session:
                for expected in ("MISS", "HIT"):
                    status, headers, body = await fetch_compared(
                        session, f"{base_url(client)}/images/logged.png"
                    )
                    assert (status, headers["x-cache"], body) == (200, expected, data)
    finally:
        await client.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert len(lines) == 2
    # aiohttp logs the bytes it wrote (`%b`): headers and body.
    sizes = [int(line.split('"GET /images/logged.png HTTP/1.1" 200 ')[1].split()[0]) for line in lines]
    assert all(len(data) < size < len(data) + 1024 for size in sizes), lines
    assert prebuilt_calls == []  # the hit was not pre-serialized


@pytest.fixture
async def variant_url(app_client: AppClientFactory, to_app: list[str]) -> str:
    """A served app with transforms on (signed URLs) and the hot path installed."""
    return base_url(await app_client(routed=to_app, transform__enabled=True, transform__signing_key="k"))


async def test_a_variant_hit_is_answered_by_the_hot_path_like_the_application(
    variant_url: str, container: ContainerClient, to_app: list[str]
) -> None:
    """A signed variant's fresh hit (explicit format, and `fm=auto` with its `Vary: Accept`) comes
    from the hot path with the application's status, headers and bytes, as does the original
    asked with an unknown parameter; a bad signature and a conditional request still reach the
    application."""
    await upload(container, "pic.jpg", jpeg(400, 300), content_type="image/jpeg")
    webp, auto = sign_url("", "pic.jpg", "w=120&fm=webp", "k"), sign_url("", "pic.jpg", "w=90&fm=auto", "k")
    chrome = {"Accept": "image/avif,image/webp,*/*"}
    async with aiohttp.ClientSession() as session:
        made = await fetch_compared(session, variant_url + webp)
        hot = await fetch_compared(session, variant_url + webp)
        full = await fetch_compared(session, variant_url + webp, **{"If-None-Match": '"other"'})
        auto_made = await fetch_compared(session, variant_url + auto, **chrome)
        auto_hot = await fetch_compared(session, variant_url + auto, **chrome)
        curl_made = await fetch_compared(session, variant_url + auto, Accept="*/*")
        curl_hot = await fetch_compared(session, variant_url + auto, Accept="*/*")
        forged = await fetch_compared(session, variant_url + webp.replace("w=120", "w=121"))
        original = await fetch_compared(session, f"{variant_url}/images/pic.jpg")
        busted = await fetch_compared(session, f"{variant_url}/images/pic.jpg?v=123")
    assert (made[0], made[1]["x-cache"], hot[1]["x-cache"]) == (200, "MISS", "HIT")
    assert hot[1] == full[1] and hot[2] == full[2] == made[2]
    assert (auto_hot[1]["vary"], auto_hot[1]["content-type"]) == ("Accept", "image/webp")
    assert auto_hot[1] == {**auto_made[1], "x-cache": "HIT"} and auto_hot[2] == auto_made[2]
    # The same query with curl's Accept is another variant (JPEG), remembered beside the WebP one.
    assert (curl_hot[1]["vary"], curl_hot[1]["content-type"]) == ("Accept", "image/jpeg")
    assert curl_hot[1] == {**curl_made[1], "x-cache": "HIT"} and curl_hot[2] == curl_made[2]
    assert forged[0] == 403
    # A query without transform parameters (a cache buster) is the original's hit, from here too.
    assert busted[1] == original[1] and busted[2] == original[2] and busted[1]["x-cache"] == "HIT"
    assert [line.split("?")[0] for line in to_app] == ["GET /images/pic.jpg"] * 5


async def test_a_variant_hit_with_a_long_query_takes_the_hot_path_without_being_remembered(
    variant_url: str, container: ContainerClient, to_app: list[str]
) -> None:
    """A path and query too long for the hot path's memo still find their hit there, every time,
    and a forged one still reaches the application (which refuses it)."""
    await upload(container, "long.jpg", jpeg(400, 300), content_type="image/jpeg")
    signed = sign_url("", "long.jpg", "w=120&fm=webp", "k") + "&v=" + "x" * HOT_MEMO_MAX_CHARS
    async with aiohttp.ClientSession() as session:
        made = await fetch_compared(session, variant_url + signed)
        hot = [await fetch_compared(session, variant_url + signed) for _ in range(2)]
        forged = await fetch_compared(session, variant_url + signed.replace("w=120", "w=121"))
    assert (made[0], made[1]["x-cache"]) == (200, "MISS")
    assert [(h[1], h[2]) for h in hot] == [({**made[1], "x-cache": "HIT"}, made[2])] * 2
    assert forged[0] == 403
    assert [line.split("?")[0] for line in to_app] == ["GET /images/long.jpg"] * 2


async def test_with_auto_format_variant_hits_take_the_hot_path_and_plain_requests_do_not(
    app_client: AppClientFactory, container: ContainerClient, to_app: list[str]
) -> None:
    """`transform.auto_format`: an explicit variant's hit (its options given `fm=auto`, so it
    varies with Accept) comes from the hot path; a plain request, whose answer depends on the
    blob's type, always reaches the application."""
    client = await app_client(
        routed=to_app, transform__enabled=True, transform__signing_key="k", transform__auto_format=True
    )
    url = base_url(client)
    await upload(container, "auto.jpg", jpeg(400, 300), content_type="image/jpeg")
    signed = sign_url("", "auto.jpg", "w=100", "k")
    chrome = {"Accept": "image/avif,image/webp,*/*"}
    async with aiohttp.ClientSession() as session:
        made = await fetch_compared(session, url + signed, **chrome)
        hot = await fetch_compared(session, url + signed, **chrome)
        plain = [await fetch_compared(session, f"{url}/images/auto.jpg", **chrome) for _ in range(2)]
    assert (made[1]["x-cache"], made[1]["content-type"], made[1]["vary"]) == ("MISS", "image/webp", "Accept")
    assert hot[1] == {**made[1], "x-cache": "HIT"} and hot[2] == made[2]
    assert [p[1]["content-type"] for p in plain] == ["image/webp"] * 2
    assert to_app == ["GET " + signed, "GET /images/auto.jpg", "GET /images/auto.jpg"]
