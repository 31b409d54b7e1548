"""Active content on the app's origin: only raster images are inline, whatever path answers.

Served as `python -m imgproxy` serves (pass-through and hot path installed on the server), so hits
are the hot path's pre-serialized answers; every request that got past the hot path is recorded.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import pytest
from aiohttp import web
from azure.storage.blob.aio import ContainerClient
from multidict import CIMultiDictProxy

from devtools.azurite import AzuriteServer
from imgproxy.web.keys import FETCHER
from tests.helpers import (
    ADMIN_TOKEN,
    Answer,
    AppClient,
    AppClientFactory,
    base_url,
    cache_stats,
    fetch,
    payload,
    settled,
    sha256,
    upload,
)
from tests.support.images import png_with_alpha, sniff
from tests.support.origin_proxy import OriginProxy
from tests.support.processes import start_server

CSP: Final = "default-src 'none'; sandbox"
REFUSED: Final = b"not served: not a raster image\n"
ITEM_LIMIT: Final = 64 * 1024  # cache.max_item_bytes here: larger blobs are streamed
# Types a browser would run or render as a document on the app's origin, and a body of each.
ACTIVE: Final = {
    "text/html": b"<html><body><script>fetch('/api/me')</script></body></html>",
    "image/svg+xml": b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
    "application/xhtml+xml": b"<html xmlns='http://www.w3.org/1999/xhtml'><script>alert(1)</script></html>",
    "text/xml": b"<?xml version='1.0'?><x:script xmlns:x='http://www.w3.org/1999/xhtml'>alert(1)</x:script>",
    "application/javascript": b"fetch('/api/me').then(r => r.text()).then(alert)",
}
ATTACHMENT: Final[dict[str, str | None]] = {
    "content-type": "application/octet-stream",
    "content-disposition": "attachment",
    "x-content-type-options": "nosniff",
    "content-security-policy": CSP,
}


@dataclass
class Served:
    """An app served as production serves it, and the requests that got past the hot path."""

    client: AppClient
    to_app: list[str]

    @property
    def app(self) -> web.Application:
        return self.client.app

    @property
    def base(self) -> str:
        return base_url(self.client)

    def url(self, name: str) -> str:
        return f"{self.base}/images/{name}"


@pytest.fixture
def app_settings() -> dict[str, Any]:
    return {"cache__max_item_bytes": ITEM_LIMIT}


@pytest.fixture
def serve(app_client: AppClientFactory) -> Any:
    """`async with serve(**features) as served`: an app of `app_client`, closed after the block."""

    @contextlib.asynccontextmanager
    async def served(**features: Any) -> AsyncIterator[Served]:
        to_app: list[str] = []
        client = await app_client(routed=to_app, **features)
        try:
            yield Served(client, to_app)
        finally:
            await client.close()

    return served


def presented(headers: CIMultiDictProxy[str]) -> dict[str, str | None]:
    """The headers that decide how a browser treats the answer (None: absent)."""
    return {name: headers.get(name) for name in ATTACHMENT}


def inline(content_type: str) -> dict[str, str | None]:
    return {**ATTACHMENT, "content-type": content_type, "content-disposition": None}


async def every_path(session: aiohttp.ClientSession, served_app: Served, name: str) -> dict[str, Answer]:
    """A MISS, a plain hit (the hot path), HEAD, a Range and a matching If-None-Match of `name`."""
    url = served_app.url(name)
    miss = await fetch(session, url)
    hit = await fetch(session, url)
    head = await fetch(session, url, "HEAD")
    part = await fetch(session, url, Range="bytes=0-9")
    unchanged = await fetch(session, url, **{"If-None-Match": miss[1]["ETag"]})
    return {"miss": miss, "hit": hit, "head": head, "range": part, "304": unchanged}


def check_answers(
    answers: dict[str, Answer],
    data: bytes,
    expected: dict[str, str | None],
    x_cache: tuple[str, str] = ("MISS", "HIT"),
) -> None:
    """Statuses, bodies and X-Cache of `every_path`, `expected` on each body-bearing answer, and a
    304 with the CSP but neither Content-Type nor Content-Disposition."""
    assert [(key, status) for key, (status, _, _) in answers.items()] == [
        ("miss", 200),
        ("hit", 200),
        ("head", 200),
        ("range", 206),
        ("304", 304),
    ]
    assert tuple(answers[key][1]["X-Cache"] for key in ("miss", "hit")) == x_cache
    assert sha256(answers["miss"][2]) == sha256(answers["hit"][2]) == sha256(data)
    assert (answers["head"][2], answers["range"][2]) == (b"", data[:10])
    assert answers["range"][1]["Content-Range"] == f"bytes 0-9/{len(data)}"
    for key in ("miss", "hit", "head", "range"):
        assert presented(answers[key][1]) == expected, key
    not_modified = answers["304"][1]
    assert not_modified["Content-Security-Policy"] == CSP
    assert "Content-Disposition" not in not_modified
    assert "Content-Type" not in not_modified


@pytest.mark.parametrize("content_type", list(ACTIVE))
async def test_active_types_are_attachments_from_memory(
    content_type: str, serve: Any, container: ContainerClient
) -> None:
    """Default `attachment`: an active blob is octet-stream, attachment, nosniff and CSP on its MISS,
    its hot-path hit, HEAD and Range, with its exact bytes."""
    data = ACTIVE[content_type]
    await upload(container, "evil", data, content_type)
    async with serve() as app, aiohttp.ClientSession() as session:
        answers = await every_path(session, app, "evil")
    check_answers(answers, data, ATTACHMENT)
    assert app.to_app.count("GET /images/evil") == 3  # the MISS, the Range and the 304: not the hit


@pytest.mark.parametrize("content_type", list(ACTIVE))
async def test_active_types_are_attachments_from_the_disk_tier(
    content_type: str, serve: Any, container: ContainerClient
) -> None:
    """With the disk tier: a large active blob streamed on its MISS and sent from its disk file
    after, and a small one read back from disk after a restart, are never inline."""
    small, large = ACTIVE[content_type], ACTIVE[content_type] + payload(4 * ITEM_LIMIT, seed=7)
    await upload(container, "small", small, content_type)
    await upload(container, "large", large, content_type)
    async with serve(disk=True) as app, aiohttp.ClientSession() as session:
        streamed = await fetch(session, app.url("large"))
        assert (await fetch(session, app.url("small")))[0] == 200
        fetcher = app.app[FETCHER]
        await settled(app.client, 2)
        from_file = await every_path(session, app, "large")
        sent_from_file = fetcher.counters()["disk_hits"]  # the two GETs and the Range
    assert (streamed[0], streamed[1]["X-Cache"], sha256(streamed[2])) == (200, "MISS", sha256(large))
    assert presented(streamed[1]) == ATTACHMENT
    check_answers(from_file, large, ATTACHMENT, x_cache=("HIT", "HIT"))
    assert sent_from_file == 3
    async with serve(disk=True) as restarted, aiohttp.ClientSession() as session:
        from_disk = await fetch(session, restarted.url("small"))
        hot = await fetch(session, restarted.url("small"))
        assert restarted.app[FETCHER].counters()["disk_hits"] == 1  # read from disk, then from memory
    assert [answer[0] for answer in (from_disk, hot)] == [200, 200]
    assert [answer[1]["X-Cache"] for answer in (from_disk, hot)] == ["HIT", "HIT"]
    assert from_disk[2] == hot[2] == small
    assert presented(from_disk[1]) == presented(hot[1]) == ATTACHMENT
    assert restarted.to_app == ["GET /images/small"]  # the second one was the hot path's


@pytest.mark.parametrize("content_type", ["image/png", "image/jpeg", "IMAGE/PNG; q=1"])
async def test_raster_images_stay_inline_with_their_type(
    content_type: str, serve: Any, container: ContainerClient
) -> None:
    """A PNG or JPEG keeps its declared type (parameters and case too), no Content-Disposition, and
    carries nosniff and the CSP on every path."""
    data = payload(3000, seed=3)
    await upload(container, "photo", data, content_type)
    async with serve() as app, aiohttp.ClientSession() as session:
        answers = await every_path(session, app, "photo")
    check_answers(answers, data, inline(content_type))


@pytest.mark.parametrize("content_type", list(ACTIVE))
async def test_sandbox_mode_keeps_the_declared_type_under_the_csp(
    content_type: str, serve: Any, container: ContainerClient
) -> None:
    """`sandbox`: an active blob keeps its type (an SVG logo works in <img>), without
    Content-Disposition, relying on the CSP sent on every path."""
    data = ACTIVE[content_type]
    await upload(container, "logo", data, content_type)
    async with serve(http__active_content="sandbox") as app, aiohttp.ClientSession() as session:
        answers = await every_path(session, app, "logo")
    check_answers(answers, data, inline(content_type))


def check_refused(answer: Answer, head: bool = False) -> None:
    status, headers, body = answer
    assert (status, body) == (403, b"" if head else REFUSED)
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert "Content-Disposition" not in headers
    assert (headers["X-Content-Type-Options"], headers["Content-Security-Policy"]) == ("nosniff", CSP)
    assert headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("access_log", [False, True], ids=["pre-serialized", "aiohttp-response"])
@pytest.mark.parametrize("content_type", list(ACTIVE))
async def test_refuse_mode_answers_403_on_every_path(
    content_type: str, access_log: bool, serve: Any, container: ContainerClient, origin: OriginProxy
) -> None:
    """`refuse`: the MISS, the cached hit (answered by the hot path either way), HEAD, Range and
    conditionals that would be 304, 412 or 416 all get the fixed 403, never a byte of the blob."""
    await upload(container, "evil", ACTIVE[content_type], content_type)
    config = {"http__active_content": "refuse", "server__access_log": access_log}
    async with serve(**config) as app, aiohttp.ClientSession() as session:
        url = app.url("evil")
        answers = [
            await fetch(session, url),
            await fetch(session, url),
            await fetch(session, url, Range="bytes=0-9"),
            await fetch(session, url, **{"If-None-Match": "*"}),
            await fetch(session, url, **{"If-Match": '"other"'}),
            await fetch(session, url, Range="bytes=100000-"),
        ]
        head = await fetch(session, url, "HEAD")
        metrics = await (await session.get(f"{app.base}/metrics")).text()
    for answer in answers:
        check_refused(answer)
    check_refused(head, head=True)
    assert origin.count("evil") == 1  # the second GET was a hit, refused from memory
    assert app.to_app.count("GET /images/evil") == 5  # all but that hit reached the application
    assert 'imgproxy_http_requests_total{status="403"} 7.0' in metrics


@pytest.mark.parametrize("disk", [False, True], ids=["streamed", "disk-tier"])
async def test_refuse_mode_sends_nothing_of_a_large_blob(
    disk: bool, serve: Any, container: ContainerClient, origin: OriginProxy
) -> None:
    """A refused blob too large for memory is refused after its first GET: nothing is streamed to
    the client or filled into the disk tier."""
    data = ACTIVE["text/html"] + payload(16 * ITEM_LIMIT, seed=8)
    await upload(container, "big.html", data, "text/html")
    config: dict[str, Any] = {"http__active_content": "refuse"}
    if disk:
        config.update(disk=True)
    async with serve(**config) as app, aiohttp.ClientSession() as session:
        answers = [await fetch(session, app.url("big.html")) for _ in range(2)]
        answers.append(await fetch(session, app.url("big.html"), Range="bytes=-10"))
        stats = app.app[FETCHER].stats()
    for answer in answers:
        check_refused(answer)
    assert origin.body_bytes("big.html") <= ITEM_LIMIT  # the first GET's bytes, no more
    assert stats.get("disk_size", 0) == 0


async def test_error_answers_carry_nosniff_and_the_csp(serve: Any) -> None:
    """A 404 and a 400 from /images/ (through the hot path) are text/plain with nosniff and the CSP."""
    async with serve() as app, aiohttp.ClientSession() as session:
        missing = await fetch(session, app.url("missing.png"))
        bad = await fetch(session, app.url("a//b.png"))
    for status, headers, _ in (missing, bad):
        assert status in (400, 404)
        assert headers["Content-Type"] == "text/plain; charset=utf-8"
        assert (headers["X-Content-Type-Options"], headers["Content-Security-Policy"]) == ("nosniff", CSP)
    assert (missing[0], bad[0]) == (404, 400)


async def test_variants_are_inline_and_originals_keep_their_policy(
    serve: Any, container: ContainerClient
) -> None:
    """Transform outputs (raster) are inline with the CSP, MISS and hot hit; under auto_format an SVG
    it cannot transform and a script it does not try are answered with the original's policy."""
    await upload(container, "photo.png", png_with_alpha(200, 100), "image/png")
    await upload(container, "logo.svg", ACTIVE["image/svg+xml"], "image/svg+xml")
    await upload(container, "app.js", ACTIVE["application/javascript"], "application/javascript")
    config = {
        "transform__enabled": True,
        "transform__allow_unsigned": True,
        "transform__auto_format": True,
    }
    async with serve(**config) as app, aiohttp.ClientSession() as session:
        made = await fetch(session, app.url("photo.png?w=50&fm=webp"))
        hot = await fetch(session, app.url("photo.png?w=50&fm=webp"))
        svg = await fetch(session, app.url("logo.svg"), Accept="image/webp,*/*")
        script = await fetch(session, app.url("app.js"), Accept="image/webp,*/*")
    assert [(status, sniff(body)) for status, _, body in (made, hot)] == [(200, "webp")] * 2
    assert [headers["X-Cache"] for _, headers, _ in (made, hot)] == ["MISS", "HIT"]
    assert presented(made[1]) == presented(hot[1]) == inline("image/webp")
    assert app.to_app.count("GET /images/photo.png?w=50&fm=webp") == 1  # the hit was the hot path's
    assert (svg[0], svg[2], presented(svg[1])) == (200, ACTIVE["image/svg+xml"], ATTACHMENT)
    assert (script[0], script[2], presented(script[1])) == (200, ACTIVE["application/javascript"], ATTACHMENT)


async def test_refuse_mode_refuses_the_original_a_transform_falls_back_to(
    serve: Any, container: ContainerClient
) -> None:
    """`refuse` with auto_format: an SVG the transform cannot read falls back to its original,
    which is refused; a raster variant of a PNG is still served."""
    await upload(container, "photo.png", png_with_alpha(200, 100), "image/png")
    await upload(container, "logo.svg", ACTIVE["image/svg+xml"], "image/svg+xml")
    config = {
        "transform__enabled": True,
        "transform__allow_unsigned": True,
        "transform__auto_format": True,
        "http__active_content": "refuse",
    }
    async with serve(**config) as app, aiohttp.ClientSession() as session:
        svg = await fetch(session, app.url("logo.svg"), Accept="image/webp,*/*")
        variant = await fetch(session, app.url("photo.png?w=50"), Accept="image/webp,*/*")
    check_refused(svg)
    assert (variant[0], sniff(variant[2]), presented(variant[1])) == (200, "webp", inline("image/webp"))


async def test_the_cli_serves_active_content_as_an_attachment(
    azurite: AzuriteServer, container: ContainerClient
) -> None:
    """`python -m imgproxy` (config.toml, uvloop, the hot path): an HTML blob is an attachment on
    its MISS and on its pre-serialized HIT."""
    data = ACTIVE["text/html"]
    await upload(container, "page.html", data, "text/html")
    with start_server(azurite, container.container_name, IMGPROXY_SERVER_DRAIN_S="0") as running:
        async with aiohttp.ClientSession() as session:
            answers = [await fetch(session, f"{running.base}/images/page.html") for _ in range(2)]
    assert [(status, headers["X-Cache"], body) for status, headers, body in answers] == [
        (200, "MISS", data),
        (200, "HIT", data),
    ]
    assert presented(answers[0][1]) == presented(answers[1][1]) == ATTACHMENT


async def test_the_cli_refuses_active_content_when_told(
    azurite: AzuriteServer, container: ContainerClient
) -> None:
    """`python -m imgproxy` with IMGPROXY_HTTP_ACTIVE_CONTENT=refuse: 403 on the MISS and the hit."""
    await upload(container, "page.html", ACTIVE["text/html"], "text/html")
    env = {
        "IMGPROXY_SERVER_DRAIN_S": "0",
        "IMGPROXY_HTTP_ACTIVE_CONTENT": "refuse",
        "IMGPROXY_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    with start_server(azurite, container.container_name, **env) as running:
        async with aiohttp.ClientSession() as session:
            answers = [await fetch(session, f"{running.base}/images/page.html") for _ in range(2)]
            stats = await cache_stats(session, running.base)
    for answer in answers:
        check_refused(answer)
    assert (stats["cache_size"], stats["hits"]) == (1, 1)  # the second was refused from memory
