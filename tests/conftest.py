"""Fixtures shared by every test: a real Azurite for the run, a counting proxy, fresh containers,
and `app_client`: the app served as production serves it (helpers are in `tests/helpers.py`)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from azure.storage.blob.aio import BlobServiceClient, ContainerClient

from devtools.azurite import AzuriteServer, run_azurite
from devtools.redis_server import RedisServer
from imgproxy.app import create_app
from imgproxy.config import Config
from imgproxy.web.keys import REPLICATION
from imgproxy.web.siblings import Siblings
from tests.helpers import AppClient, AppClientFactory, make_test_config
from tests.support.app_server import ImgproxyTestServer, record_routed
from tests.support.origin_proxy import OriginProxy
from tests.support.upstream_app import UpstreamApp, run_upstream_app

if TYPE_CHECKING:  # (imported by pytest as the plugin below: not before, so that it is rewritten)
    from tests.support.redis_fixtures import RedisTarget

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
    """The default config of the test's app (origin, container and admin token only)."""
    return make_test_config(origin.endpoint, container.container_name)


@pytest.fixture
def disk_dir(tmp_path: Path) -> Path:
    """The disk tier's directory of `app_client(disk=True)`."""
    return tmp_path / "disk"


@pytest.fixture
def app_settings() -> dict[str, Any]:
    """What every `app_client()` of a test starts from (features and `section__key` settings, as
    `app_client` takes them; its own arguments win). Empty here; a module or a directory that
    gives all its apps the same settings overrides this fixture (tests/integration/cache/disk/)."""
    return {}


@pytest.fixture
def app_client(
    request: pytest.FixtureRequest,
    aiohttp_client: AiohttpClient,
    origin: OriginProxy,
    container: ContainerClient,
    app_settings: dict[str, Any],
) -> AppClientFactory:
    """`await app_client(**features)`: a test client of `create_app(config)`, served with the
    production server (`ImgproxyTestServer`: `imgproxy.server.start_runner`, handler cancellation
    off); closed at the end of the test. Call it again for another app (a restart, a sibling).

    The config is `make_test_config` (the test's origin proxy and container) with `section__key`
    settings and these features (explicit settings win over what a feature sets):

    - `disk=True`: the disk tier in `disk_dir`; a `Path`: in that directory.
    - `transforms=True`: transforms on, unsigned parameters allowed.
    - `upstream=URL`: pass what is not ours through to URL; `True`: to the `upstream_app`.
    - `redis=RedisTarget | RedisServer`: the Redis tier on it, with a key prefix shared by every
      app of the test (they are replicas of one deployment); returns once the app follows the
      purge log.

    Or `config=`: serve that Config as it is. And for the app and its server: `shared_disk`,
    `siblings` (to `create_app`), `routed` (a list that records each request reaching the router,
    past the lanes: `record_routed`), `server_kwargs` (to `ImgproxyTestServer`: `ssl`,
    `handler_cancellation`, `start_runner`'s), `client_kwargs` (to aiohttp's `TestClient`).
    """
    redis_prefix = f"t{uuid.uuid4().hex[:12]}:"

    def settings_of(
        disk: bool | Path = False,
        transforms: bool = False,
        upstream: str | bool | None = None,
        redis: RedisTarget | RedisServer | None = None,
        **settings: Any,
    ) -> dict[str, Any]:
        made: dict[str, Any] = {}
        if disk:
            path = request.getfixturevalue("disk_dir") if disk is True else disk
            made.update(disk__enabled=True, disk__path=str(path))
        if transforms:
            made.update(transform__enabled=True, transform__allow_unsigned=True)
        if upstream:
            made.update(
                upstream__url=request.getfixturevalue("upstream_app").url if upstream is True else upstream
            )
        if redis is not None:
            cluster = False if isinstance(redis, RedisServer) else redis.cluster
            # A generous bound on a call: the machine is shared with other test runs.
            made.update(
                redis__url=redis.url, redis__cluster=cluster, redis__prefix=redis_prefix, redis__timeout_s=1.0
            )
        return {**made, **settings}

    async def make(
        *,
        config: Config | None = None,
        shared_disk: bool = False,
        siblings: Siblings | None = None,
        routed: list[str] | None = None,
        server_kwargs: dict[str, Any] | None = None,
        client_kwargs: dict[str, Any] | None = None,
        **features: Any,
    ) -> AppClient:
        if config is None:
            features = {**app_settings, **features}
            config = make_test_config(origin.endpoint, container.container_name, **settings_of(**features))
        elif features:
            raise TypeError(f"app_client: config= or settings, not both ({sorted(features)})")
        app = create_app(config, shared_disk=shared_disk, siblings=siblings)
        if routed is not None:
            record_routed(app, routed)
        client: AppClient = await aiohttp_client(
            ImgproxyTestServer(app, **(server_kwargs or {})), **(client_kwargs or {})
        )
        if features.get("redis") is not None:
            await client.app[REPLICATION].log.wait_following()
        return client

    return make


@pytest.fixture
async def client(app_client: AppClientFactory) -> AppClient:
    """The whole app, as production builds and serves it, behind an aiohttp test client."""
    return await app_client()


@pytest.fixture(scope="session")
def upstream_app() -> Iterator[UpstreamApp]:
    """One upstream application for the whole run (its stateful routes take a per-test token)."""
    with run_upstream_app() as app:
        yield app


@pytest.fixture
def prebuilt_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """What each call of `write_plain_hit` on the hot path returned (True: written pre-serialized)."""
    from imgproxy.http import prebuilt
    from imgproxy.web import hot_path

    calls: list[bool] = []
    real = prebuilt.write_plain_hit

    def recorded(*args: Any) -> bool:
        calls.append(real(*args))
        return calls[-1]

    monkeypatch.setattr(hot_path, "write_plain_hit", recorded)
    return calls
