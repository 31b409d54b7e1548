"""Fixtures shared by every test: a real Azurite for the run, a counting proxy, fresh containers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from azure.storage.blob.aio import BlobServiceClient, ContainerClient

from devtools.azurite import AzuriteServer, run_azurite
from imgproxy.app import create_app
from imgproxy.config import Config
from tests.helpers import make_test_config
from tests.support.origin_proxy import OriginProxy
from tests.support.upstream_app import UpstreamApp, run_upstream_app

# Redis servers, started only by the tests that use them.
pytest_plugins = ["tests.support.redis_fixtures"]

AiohttpClient = Callable[..., Any]


@pytest.fixture(scope="session")
def azurite() -> Iterator[AzuriteServer]:
    """One Azurite (blob service, in memory) for the whole run, on a free loopback port."""
    with run_azurite() as server:
        yield server


@pytest.fixture
async def blob_service(azurite: AzuriteServer) -> AsyncIterator[BlobServiceClient]:
    """A direct SDK client to Azurite, for uploads (it bypasses the counting proxy)."""
    async with BlobServiceClient.from_connection_string(azurite.connection_string) as client:
        yield client


@pytest.fixture
async def container(blob_service: BlobServiceClient) -> AsyncIterator[ContainerClient]:
    """A fresh, uniquely named container, deleted after the test."""
    client = blob_service.get_container_client(f"t{uuid.uuid4().hex}")
    await client.create_container()
    yield client
    await client.delete_container()


@pytest.fixture
async def origin(azurite: AzuriteServer) -> AsyncIterator[OriginProxy]:
    """The counting, fault-injecting proxy in front of Azurite."""
    proxy = OriginProxy(azurite.endpoint)
    await proxy.start()
    yield proxy
    proxy.heal()
    await proxy.close()


@pytest.fixture
def config(origin: OriginProxy, container: ContainerClient) -> Config:
    return make_test_config(origin.endpoint, container.container_name)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, config: Config) -> TestClient[Any, Any]:
    """The whole app, as production builds it, behind an aiohttp test client."""
    test_client: TestClient[Any, Any] = await aiohttp_client(create_app(config))
    return test_client


@pytest.fixture(scope="session")
def upstream_app() -> Iterator[UpstreamApp]:
    """One upstream application for the whole run (its stateful routes take a per-test token)."""
    with run_upstream_app() as app:
        yield app
