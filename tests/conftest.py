"""Fixtures shared by every test: a real Azurite for the run, a counting proxy, fresh containers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import io
import random
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import BlobServiceClient, ContainerClient
from yarl import URL

from devtools.azurite import ROOT, AzuriteServer, connection_string, free_port, run_azurite
from imgproxy.app import create_app
from imgproxy.config import Config, load_config
from tests.support.origin_proxy import OriginProxy

# Redis servers, started only by the tests that use them.
pytest_plugins = ["tests.support.redis_fixtures"]

AiohttpClient = Callable[..., Any]
ADMIN_TOKEN = "test-admin-token"


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


def make_test_config(endpoint: str, container_name: str, **overrides: Any) -> Config:
    """Config pointing at `endpoint`; overrides are `section__key=value`."""
    env = {
        "IMGPROXY_ORIGIN_CONNECTION_STRING": connection_string(endpoint),
        "IMGPROXY_ORIGIN_CONTAINER": container_name,
        "IMGPROXY_ORIGIN_TIMEOUT_S": "5",
        "IMGPROXY_ORIGIN_RETRY_BACKOFF_S": "0.01",
        "IMGPROXY_ORIGIN_READY_CHECK_INTERVAL_S": "0",
        "IMGPROXY_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    config = load_config(None, env)
    sections: dict[str, dict[str, Any]] = {}
    for name, value in overrides.items():
        section, key = name.split("__")
        sections.setdefault(section, {})[key] = value
    for section, values in sections.items():
        config = dataclasses.replace(
            config, **{section: dataclasses.replace(getattr(config, section), **values)}
        )
    return config


@pytest.fixture
def config(origin: OriginProxy, container: ContainerClient) -> Config:
    return make_test_config(origin.endpoint, container.container_name)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, config: Config) -> TestClient[Any, Any]:
    """The whole app, as production builds it, behind an aiohttp test client."""
    test_client: TestClient[Any, Any] = await aiohttp_client(create_app(config))
    return test_client


async def upload(container: ContainerClient, name: str, data: bytes, content_type: str = "image/png") -> None:
    """Put a blob straight into Azurite (not through the counting proxy)."""
    # A BytesIO: aiohttp warns (an error here) about large raw bytes bodies.
    await container.upload_blob(
        name,
        io.BytesIO(data),
        length=len(data),
        overwrite=True,
        content_settings=ContentSettings(content_type=content_type),
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes of `size` (a different seed gives different bytes)."""
    return random.Random(seed).randbytes(size)


async def raw_request(client: TestClient[Any, Any], method: str, raw_path: str) -> ClientResponse:
    """Send `raw_path` exactly as written (the test client would resolve '..' segments)."""
    url = URL(str(client.make_url("/")).rstrip("/") + raw_path, encoded=True)
    return await client.session.request(method, url)


async def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Yield to the event loop until `condition()` holds (the app runs in this same loop).

    For conditions on the app's plain counters, which have no event to wait on; bounded.
    """
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - see docstring
            await asyncio.sleep(0.001)


@dataclass(frozen=True, slots=True)
class UpstreamApp:
    """The small real application behind the proxy (`tests/support/upstream_app.py`), in its own process."""

    url: str
    proc: subprocess.Popen[str]


@contextlib.contextmanager
def run_upstream_app() -> Iterator[UpstreamApp]:
    """Start `python -m tests.support.upstream_app` on a free loopback port; stop it on exit."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.upstream_app", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once it listens
        assert line.startswith("upstream app on"), line
        yield UpstreamApp(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture(scope="session")
def upstream_app() -> Iterator[UpstreamApp]:
    """One upstream application for the whole run (its stateful routes take a per-test token)."""
    with run_upstream_app() as app:
        yield app
