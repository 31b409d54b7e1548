"""imgproxy.client against the real app (and real Azurite): stats, purges, errors, both flavours."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from azure.storage.blob.aio import ContainerClient

from devtools.azurite import free_port
from imgproxy import client as admin
from tests.helpers import ADMIN_TOKEN, AppClient, base_url, payload, upload, x_cache

Stats = Callable[..., Awaitable[dict[str, Any]]]
Clear = Callable[..., Awaitable[dict[str, Any]]]


async def sync_stats(**kwargs: Any) -> dict[str, Any]:
    """The stdlib call, in a thread (the app under test runs in this event loop)."""
    return await asyncio.to_thread(admin.get_cache_stats, **kwargs)


async def sync_clear(path: str | None = None, **kwargs: Any) -> dict[str, Any]:
    return await asyncio.to_thread(admin.clear_cache, path, **kwargs)


FLAVOURS = [
    pytest.param((sync_stats, sync_clear), id="sync"),
    pytest.param((admin.aget_cache_stats, admin.aclear_cache), id="async"),
]


@pytest.mark.parametrize("calls", FLAVOURS)
async def test_get_cache_stats_returns_the_phase_one_keys(
    client: AppClient, calls: tuple[Stats, Clear]
) -> None:
    """The stats dict has cache_size, cache_bytes, cache_limit and cache_bytes_limit (and more)."""
    stats = await calls[0](base_url=base_url(client), token=ADMIN_TOKEN)
    assert {"cache_size", "cache_bytes", "cache_limit", "cache_bytes_limit"} <= stats.keys()
    assert stats["cache_limit"] == 100


@pytest.mark.parametrize("calls", FLAVOURS)
async def test_clear_cache_of_a_path_purges_that_blob(
    client: AppClient, container: ContainerClient, calls: tuple[Stats, Clear]
) -> None:
    """After clear_cache(path) the next request for it is a MISS; another blob stays a HIT."""
    for name in ("dir/a b ü.png", "other.png"):
        await upload(container, name, payload(100))
        await x_cache(client, "/images/" + name.replace(" ", "%20"))
    answer = await calls[1]("dir/a b ü.png", base_url=base_url(client), token=ADMIN_TOKEN)
    assert answer == {"path": "dir/a b ü.png", "purged": True}
    assert await x_cache(client, "/images/dir/a%20b%20%C3%BC.png") == "MISS"
    assert await x_cache(client, "/images/other.png") == "HIT"


@pytest.mark.parametrize("calls", FLAVOURS)
async def test_clear_cache_without_a_path_purges_everything(
    client: AppClient, container: ContainerClient, calls: tuple[Stats, Clear]
) -> None:
    for name in ("a.png", "b.png"):
        await upload(container, name, payload(100))
        await x_cache(client, f"/images/{name}")
    assert await calls[1](base_url=base_url(client), token=ADMIN_TOKEN) == {"purged": 2}
    assert (await calls[0](base_url=base_url(client), token=ADMIN_TOKEN))["cache_size"] == 0


@pytest.mark.parametrize("calls", FLAVOURS)
async def test_url_and_token_come_from_the_environment(
    client: AppClient, monkeypatch: pytest.MonkeyPatch, calls: tuple[Stats, Clear]
) -> None:
    """IMGPROXY_URL and IMGPROXY_ADMIN_TOKEN stand in for the arguments."""
    monkeypatch.setenv(admin.URL_ENV, base_url(client))
    monkeypatch.setenv(admin.TOKEN_ENV, ADMIN_TOKEN)
    assert "cache_size" in await calls[0]()


@pytest.mark.parametrize("calls", FLAVOURS)
async def test_a_wrong_token_raises_admin_unauthorized(client: AppClient, calls: tuple[Stats, Clear]) -> None:
    with pytest.raises(admin.AdminUnauthorized) as excinfo:
        await calls[1]("a.png", base_url=base_url(client), token="wrong")
    assert excinfo.value.status == 401


@pytest.mark.parametrize("calls", FLAVOURS)
async def test_a_bad_path_is_an_admin_error_naming_the_status(
    client: AppClient, calls: tuple[Stats, Clear]
) -> None:
    with pytest.raises(admin.AdminError) as excinfo:
        await calls[1]("../x.png", base_url=base_url(client), token=ADMIN_TOKEN)
    assert excinfo.value.status == 400


@pytest.mark.parametrize("calls", FLAVOURS)
async def test_no_url_or_no_token_is_refused_before_any_request(
    monkeypatch: pytest.MonkeyPatch, calls: tuple[Stats, Clear]
) -> None:
    monkeypatch.delenv(admin.URL_ENV, raising=False)
    monkeypatch.delenv(admin.TOKEN_ENV, raising=False)
    with pytest.raises(admin.AdminError, match=admin.URL_ENV):
        await calls[0](token="t")
    with pytest.raises(admin.AdminError, match=admin.TOKEN_ENV):
        await calls[0](base_url="http://127.0.0.1:1")


@pytest.mark.parametrize("calls", FLAVOURS)
async def test_a_port_nobody_listens_on_raises_admin_unreachable(calls: tuple[Stats, Clear]) -> None:
    with pytest.raises(admin.AdminUnreachable):
        await calls[0](base_url=f"http://127.0.0.1:{free_port()}", token="t", timeout_s=2)


async def stub(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with TestServer(app) as server:
        yield str(server.make_url("")).rstrip("/")


@pytest.fixture
async def not_logged() -> AsyncIterator[str]:
    """A stand-in for a replica whose Redis is down (the app does not say `logged` yet)."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"path": "a.png", "purged": True, "logged": False}, status=502)

    async for url in stub(handler):
        yield url


@pytest.fixture
async def silent() -> AsyncIterator[str]:
    """A server that accepts the request and never answers."""
    never = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        await never.wait()
        raise AssertionError("unreachable")

    async for url in stub(handler):
        yield url


@pytest.mark.parametrize("calls", FLAVOURS)
async def test_a_502_not_logged_is_reported_so_the_caller_can_retry(
    not_logged: str, calls: tuple[Stats, Clear]
) -> None:
    """502 with logged false raises PurgeIncomplete carrying the answer (`logged` is False)."""
    with pytest.raises(admin.PurgeIncomplete) as excinfo:
        await calls[1]("a.png", base_url=not_logged, token="t")
    assert excinfo.value.logged is False and excinfo.value.status == 502
    assert excinfo.value.answer == {"path": "a.png", "purged": True, "logged": False}


@pytest.mark.parametrize("calls", FLAVOURS)
async def test_a_proxy_that_never_answers_costs_at_most_timeout_s(
    silent: str, calls: tuple[Stats, Clear]
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(admin.AdminUnreachable):
        await calls[0](base_url=silent, token="t", timeout_s=0.3)
    assert loop.time() - started < 2.0
