"""Fixtures of the disk-tier tests: a test directory and an app factory on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob.aio import ContainerClient

from imgproxy.app import create_app
from tests.conftest import AiohttpClient
from tests.disk_support import ITEM_LIMIT, MakeClient
from tests.helpers import AppClient, make_test_config
from tests.support.origin_proxy import OriginProxy


@pytest.fixture
def disk_dir(tmp_path: Path) -> Path:
    return tmp_path / "disk"


@pytest.fixture
def make_client(
    aiohttp_client: AiohttpClient, origin: OriginProxy, container: ContainerClient, disk_dir: Path
) -> MakeClient:
    """Build an app with the disk tier in `disk_dir` (overrides as section__key=value; `client_kwargs`
    and `server_kwargs` go to the test client, e.g. for TLS)."""

    async def make(
        shared_disk: bool = False,
        client_kwargs: dict[str, Any] | None = None,
        server_kwargs: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> AppClient:
        settings: dict[str, Any] = {
            "disk__enabled": True,
            "disk__path": str(disk_dir),
            "cache__max_item_bytes": ITEM_LIMIT,
            "origin__download_chunk_bytes": 256 * 1024,
        }
        settings.update(overrides)
        config = make_test_config(origin.endpoint, container.container_name, **settings)
        client: AppClient = await aiohttp_client(
            create_app(config, shared_disk=shared_disk), server_kwargs=server_kwargs, **(client_kwargs or {})
        )
        return client

    return make
