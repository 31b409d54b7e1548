"""Every app of the disk tier's tests has the disk tier (in `disk_dir`) and a small memory item limit."""

from __future__ import annotations

from typing import Any, Final

import pytest

ITEM_LIMIT: Final = 64 * 1024  # cache.max_item_bytes in these tests: larger blobs are "large"


@pytest.fixture
def app_settings() -> dict[str, Any]:
    return {"disk": True, "cache__max_item_bytes": ITEM_LIMIT, "origin__download_chunk_bytes": 256 * 1024}
