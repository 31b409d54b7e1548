"""Helpers of the disk-tier tests (their fixtures are in `tests/integration/conftest.py`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from aiohttp.test_utils import TestClient

from imgproxy.web.keys import FETCHER
from tests.conftest import ADMIN_TOKEN, wait_until

Client = TestClient[Any, Any]
MakeClient = Callable[..., Any]
MIB: Final = 1024 * 1024
AUTH: Final = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ITEM_LIMIT: Final = 64 * 1024  # memory cache item limit in these tests: larger blobs are "large"


async def stats(client: Client) -> dict[str, Any]:
    body: dict[str, Any] = await (await client.get("/admin/cache", headers=AUTH)).json()
    return body


async def settled(client: Client, entries: int) -> None:
    """Wait until `entries` are on disk and no fill or write is under way."""
    fetcher = client.app[FETCHER]
    await wait_until(
        lambda: fetcher.disk_stats()["disk_size"] == entries and not fetcher.disk_stats()["disk_fills"]
    )


async def get(client: Client, name: str, **headers: str) -> tuple[int, str, bytes]:
    async with client.get(f"/images/{name}", headers=headers) as response:
        return response.status, response.headers.get("X-Cache", ""), await response.read()


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def data_files(root: Path) -> list[Path]:
    """The entries' data files (not their metadata, temporaries or lock files, nor files kept at the
    top of the directory, such as the purge log's cursor)."""
    return [
        p for p in files_under(root) if p.parent != root and not p.name.endswith((".meta", ".tmp", ".lock"))
    ]
