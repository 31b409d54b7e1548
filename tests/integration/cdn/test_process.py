"""The real process (`python -m imgproxy`, two workers) with a CDN in front: the secret header
from the environment, tags on answers, and a queued purge sent once at SIGTERM."""

from __future__ import annotations

import asyncio
import io
import json
import signal

import aiohttp
from azure.storage.blob.aio import ContainerClient

from tests.helpers import admin_headers, payload
from tests.integration.cdn.test_tags import expected_tags
from tests.support.cdn_standin import CdnStandIn
from tests.support.origin_proxy import OriginProxy
from tests.support.processes import WORKER_TOKEN, two_workers

SECRET = "process-cdn-secret-0123"


async def test_two_workers_send_a_queued_purge_once_when_terminated(
    origin: OriginProxy, container: ContainerClient, cdn: CdnStandIn
) -> None:
    """A purge waiting out `cdn.purge_delay_s` (60 s) in a two-worker server is sent at SIGTERM,
    once, with the token from `CDN_TOKEN`; the answers carried the blob's tag; exit status 0; the
    secret is nowhere in the log."""
    await container.upload_blob("t.png", io.BytesIO(payload(800, seed=8)), length=800)
    blob, whole = expected_tags(container.container_name, "t.png")
    env = {
        "IMGPROXY_CDN_TAG_HEADERS": "Surrogate-Key",
        "IMGPROXY_CDN_PURGE_URL": f"{cdn.url}/purge",
        "IMGPROXY_CDN_PURGE_HEADERS": json.dumps({"Authorization": "Bearer ${CDN_TOKEN}"}),
        "IMGPROXY_CDN_PURGE_DELAY_S": "60",
        "CDN_TOKEN": SECRET,
    }
    with two_workers(origin, container, **env) as running:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{running.base}/images/t.png") as response:
                assert (response.status, response.headers["Surrogate-Key"]) == (200, f"{blob} {whole}")
            async with session.delete(
                f"{running.base}/admin/cache/t.png", headers=admin_headers(WORKER_TOKEN)
            ) as response:
                assert (response.status, (await response.json())["workers"]) == (200, 2)
        assert cdn.received == []  # waiting out the delay
        running.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(running.proc.wait, 60) == 0
    assert len(cdn.received) == 1
    assert cdn.received[0].headers["Authorization"] == f"Bearer {SECRET}"
    assert json.loads(cdn.received[0].body) == {"tags": [blob]}
    assert SECRET not in "".join(running.log)
