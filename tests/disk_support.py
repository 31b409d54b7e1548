"""Helpers of the disk-tier tests (their fixtures are in `tests/integration/cache/disk/conftest.py`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from tests.helpers import AUTH, AppClient

MakeClient = Callable[..., Any]
ITEM_LIMIT: Final = 64 * 1024  # memory cache item limit in these tests: larger blobs are "large"


async def stats(client: AppClient) -> dict[str, Any]:
    body: dict[str, Any] = await (await client.get("/admin/cache", headers=AUTH)).json()
    return body


async def get(client: AppClient, name: str, **headers: str) -> tuple[int, str, bytes]:
    async with client.get(f"/images/{name}", headers=headers) as response:
        return response.status, response.headers.get("X-Cache", ""), await response.read()
