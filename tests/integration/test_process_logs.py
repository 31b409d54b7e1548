"""The real process's stderr: JSON lines in every worker with `server.log_format = "json"`,
today's text lines by default."""

from __future__ import annotations

import json
import re

import aiohttp
from azure.storage.blob.aio import ContainerClient

from devtools.azurite import AzuriteServer
from tests.helpers import admin_headers, fetch, payload, upload
from tests.support.origin_proxy import OriginProxy
from tests.support.processes import WORKER_TOKEN, start_server, two_workers


async def test_every_worker_writes_json_lines_with_its_index_and_the_request_ids(
    origin: OriginProxy, container: ContainerClient
) -> None:
    """Two workers: every stderr line is one JSON object; each worker says where it serves with
    its index; each access line carries the id the client sent (or the one it was answered with);
    a purge relayed to the sibling worker is logged by both under the caller's id."""
    data = payload(3000)
    await upload(container, "j.png", data)
    answered: list[tuple[str, int]] = []
    with two_workers(
        origin, container, IMGPROXY_SERVER_LOG_FORMAT="json", IMGPROXY_SERVER_ACCESS_LOG="true"
    ) as server:
        async with aiohttp.ClientSession() as session:
            for number in range(8):  # new connections: the kernel spreads them over both workers
                given = {"X-Request-ID": f"proc-{number}"} if number % 2 else {}
                async with aiohttp.ClientSession() as fresh:
                    status, headers, body = await fetch(fresh, f"{server.base}/images/j.png", **given)
                assert (status, body) == (200, data)
                answered.append((headers["X-Request-ID"], status))
            assert (await fetch(session, f"{server.base}/healthz"))[0] == 200
            purge = {"X-Request-ID": "proc-purge", **admin_headers(WORKER_TOKEN)}
            status, headers, _ = await fetch(session, f"{server.base}/admin/cache/j.png", "DELETE", **purge)
            assert (status, headers["X-Request-ID"]) == (200, "proc-purge")
        server.proc.terminate()
        server.proc.wait(timeout=60)
    lines = [line for line in server.log if line.strip()]
    records = [json.loads(line) for line in lines]  # every line parses
    serving = [r for r in records if r["message"].startswith("serving on")]
    assert sorted(r["worker"] for r in serving) == [0, 1]
    access = [r for r in records if r["logger"] == "aiohttp.access" and r["path"] == "/images/j.png"]
    assert sorted((r["request_id"], r["status"]) for r in access) == sorted(answered)
    assert {r["request_id"] for r in access} >= {f"proc-{n}" for n in range(1, 8, 2)}
    assert all({"time", "level", "logger", "message", "worker"} <= set(r) for r in records)
    purges = [r for r in records if r.get("method") == "DELETE"]
    assert sorted((r["worker"], r["request_id"], r["status"]) for r in purges) == [
        (0, "proc-purge", 200),
        (1, "proc-purge", 200),
    ]


async def test_the_default_lines_are_text_as_before(
    azurite: AzuriteServer, container: ContainerClient
) -> None:
    """Without `server.log_format`, a line is `date time,ms LEVEL logger: message`, not JSON."""
    with start_server(azurite, container.container_name, IMGPROXY_SERVER_DRAIN_S="0") as server:
        async with aiohttp.ClientSession() as session:
            status, headers, _ = await fetch(session, f"{server.base}/healthz")
            assert status == 200 and re.fullmatch(r"[0-9a-f]{32}", headers["X-Request-ID"])
    serving = [line for line in server.log if "serving on" in line]
    assert len(serving) == 1
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO imgproxy: serving on http://\S+\n", serving[0]
    )
