"""`server.start_runner` serves the in-process tests' apps: `app_client` is the production server."""

from __future__ import annotations

from azure.storage.blob.aio import ContainerClient

from imgproxy.server import ImgproxyRunner
from imgproxy.web.frontdoor import FrontDoorServer
from tests.helpers import AppClient, AppClientFactory, fetch_image, payload, upload


async def test_app_client_serves_with_the_production_server(client: AppClient) -> None:
    """The runner is `start_runner`'s, every connection passes the front door, and a client that
    goes away does not cancel its handler (aiohttp's own TestServer would)."""
    assert isinstance(client.server.runner, ImgproxyRunner)
    server = client.server.handler
    assert isinstance(server, FrontDoorServer)
    assert server.handler_cancellation is False


async def test_a_hit_is_answered_ahead_of_the_router(
    app_client: AppClientFactory, container: ContainerClient
) -> None:
    """The lanes are installed: a plain hit never reaches the router; a miss does."""
    routed: list[str] = []
    client = await app_client(routed=routed)
    await upload(container, "lane.png", payload(100))
    assert [(await fetch_image(client, "lane.png"))[:2] for _ in range(2)] == [(200, "MISS"), (200, "HIT")]
    assert routed == ["GET /images/lane.png"]
