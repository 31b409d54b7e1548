"""The hot path installed on the server (as `python -m imgproxy` does): same answers, fewer steps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

import aiohttp
import pytest
from aiohttp import web
from azure.storage.blob.aio import ContainerClient
from yarl import URL

from devtools.azurite import free_port
from imgproxy.app import create_app
from imgproxy.hot_path import install_hot_path
from tests.conftest import ADMIN_TOKEN, make_test_config, payload, sha256, upload
from tests.origin_proxy import OriginProxy

AUTH: Final = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
VARYING: Final = {"date", "server"}


@pytest.fixture
def to_app() -> list[str]:
    """The requests (method and path) that went past the hot path to the application."""
    return []


@pytest.fixture
async def base_url(origin: OriginProxy, container: ContainerClient, to_app: list[str]) -> AsyncIterator[str]:
    """A served app with the hot path installed, on a free loopback port."""
    runner = web.AppRunner(create_app(make_test_config(origin.endpoint, container.container_name)))
    await runner.setup()
    assert runner.server is not None
    application = runner.server.request_handler

    async def recorded(request: web.BaseRequest) -> web.StreamResponse:
        to_app.append(f"{request.method} {request.path}")
        return await application(request)

    runner.server.request_handler = recorded
    install_hot_path(runner)
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def fetch(
    session: aiohttp.ClientSession, url: str, method: str = "GET", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    async with session.request(method, url, headers=headers) as response:
        kept = {
            name.lower(): value for name, value in response.headers.items() if name.lower() not in VARYING
        }
        return response.status, kept, await response.read()


async def test_hot_hit_answers_exactly_like_the_application(
    base_url: str, container: ContainerClient, origin: OriginProxy, to_app: list[str]
) -> None:
    """A plain GET hit from the hot path has the application's status, headers and bytes."""
    data = payload(20_000, seed=41)
    await upload(container, "hot.png", data)
    url = f"{base_url}/images/hot.png"
    async with aiohttp.ClientSession() as session:
        first = await fetch(session, url)
        hot = await fetch(session, url)
        # A conditional header that does not match takes the application's path to the same 200.
        full = await fetch(session, url, **{"If-None-Match": '"other"'})
        head = await fetch(session, url, "HEAD")
        stats = await (await session.get(f"{base_url}/admin/cache", headers=AUTH)).json()
        metrics = await (await session.get(f"{base_url}/metrics")).text()

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
    raw_path: str, status: int, base_url: str, origin: OriginProxy
) -> None:
    """Bad paths, misses and other routes get the application's answers through the hot path."""
    async with aiohttp.ClientSession() as session:
        url = URL(base_url + raw_path, encoded=True)
        async with session.get(url) as response:
            assert response.status == status


async def test_ranges_and_conditionals_on_a_hit_are_not_taken_by_the_hot_path(
    base_url: str, container: ContainerClient, origin: OriginProxy
) -> None:
    """A Range or a matching If-None-Match on a cached blob still gets its 206 or 304."""
    data = payload(5000, seed=42)
    await upload(container, "parts.png", data)
    url = f"{base_url}/images/parts.png"
    async with aiohttp.ClientSession() as session:
        _, headers, _ = await fetch(session, url)
        partial = await fetch(session, url, Range="bytes=10-19")
        unchanged = await fetch(session, url, **{"If-None-Match": headers["etag"]})
    assert (partial[0], partial[2]) == (206, data[10:20])
    assert (unchanged[0], unchanged[2]) == (304, b"")
    assert origin.count("parts.png") == 1
