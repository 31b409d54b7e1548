"""REDbot ("lint for HTTP", written by others) checks caching, validation and ranges of our answers."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob.aio import ContainerClient

from devtools.seed import IMAGES_DIR
from imgproxy.config import Config
from tests.helpers import AppClient, payload, upload

REDBOT = Path(sys.executable).parent / "redbot"


async def redbot_notes(url: str) -> list[dict[str, Any]]:
    """Run REDbot on `url` and return its notes (level, subject, summary)."""
    proc = await asyncio.create_subprocess_exec(
        str(REDBOT), "-o", "har", url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(120):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    har = json.loads(out)
    return [note for entry in har["log"]["entries"] for note in entry.get("_red_messages", [])]


@pytest.mark.parametrize("kind", ["cached", "streamed"])
async def test_redbot_rates_nothing_bad(
    kind: str,
    client: AppClient,
    container: ContainerClient,
    config: Config,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """REDbot reports no BAD note for a cached image nor for a streamed one."""
    # A real JPEG (REDbot sniffs the type), padded past the memory limit for the streamed case.
    jpeg = (IMAGES_DIR / "sunset.jpg").read_bytes()
    padding = 0 if kind == "cached" else config.cache.max_item_bytes
    await upload(container, f"{kind}.jpg", jpeg + payload(padding), content_type="image/jpeg")
    notes = await redbot_notes(str(client.make_url(f"/images/{kind}.jpg")))

    with capsys.disabled():
        for note in notes:
            if note["level"] != "GOOD":
                print(f"\n[redbot {kind}] {note['level']}: {note['summary']}", end="")
    assert notes, "REDbot said nothing: did it reach the server?"
    assert [n["summary"] for n in notes if n["level"] == "BAD"] == []
    summaries = {n["summary"] for n in notes if n["level"] == "GOOD"}
    assert "A ranged request returned the correct partial content." in summaries
    assert "If-None-Match conditional requests are supported." in summaries
