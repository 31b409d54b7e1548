"""Memos keyed by what clients send keep short keys only, so their memory is bounded in bytes.

A real server process in front of the real upstream test app, transforms on (unsigned), so every
memo on the request path is reached: header names and `Connection` values (`proxy_headers`), the
hop of each client and `Host` (`Forwarded`), `Accept` (`negotiate`), raw path and query
(`variants.HotKeys`, `QueryParser`, `paths`) and the index of missing blobs. Thousands of
requests with distinct ~8 KB values must not pin their values in the server's memory.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import aiohttp
import pytest
from azure.storage.blob.aio import ContainerClient

from devtools.azurite import AzuriteServer
from tests.helpers import MIB, raw_url, rss_bytes
from tests.support.images import jpeg
from tests.support.processes import start_server
from tests.support.upstream_app import UpstreamApp

WARM_UP: Final = 512  # requests of each shape before the first reading
MEASURED: Final = 4096  # requests of each shape between the two readings
FILL: Final = 7900  # bytes of each long value: under aiohttp's 8,190 per field and request line
CONCURRENCY: Final = 8
BLOB: Final = "memo.jpg"
VARIANT: Final = f"/images/{BLOB}?w=16&fm=auto"


def long_value(tag: str, n: int) -> str:
    """A distinct value of about FILL bytes (letters and digits: valid in any field)."""
    head = f"{tag}{n:06d}"
    return head + "a" * (FILL - len(head))


@dataclass(frozen=True, slots=True)
class Shape:
    """One kind of request: its target and headers for the n-th distinct value."""

    name: str
    request: Callable[[int], tuple[str, dict[str, str]]]
    status: int


SHAPES: Final = (
    Shape("Host", lambda n: ("/status/204", {"Host": long_value("h", n)}), 204),
    Shape("Accept, passed through", lambda n: ("/status/204", {"Accept": long_value("p", n)}), 204),
    Shape("Accept, variant", lambda n: (VARIANT, {"Accept": "image/webp,image/x" + long_value("v", n)}), 200),
    Shape("header name", lambda n: ("/status/204", {"X-" + long_value("n", n): "1"}), 204),
    Shape("path and query", lambda n: (f"/images/{BLOB}?w=16&fm=webp&v={long_value('q', n)}", {}), 200),
    # 650 four-byte characters, percent-encoded: the longest a blob path may be, in bytes.
    Shape("missing path", lambda n: (f"/images/m{n:06d}-" + "%F0%9F%98%80" * 650, {}), 404),
)


async def send_all(session: aiohttp.ClientSession, base: str, shape: Shape, numbers: range) -> None:
    """Send `shape`'s request for each of `numbers`, CONCURRENCY at a time; each gets its status."""
    queue = iter(numbers)

    async def one_lane() -> None:
        for n in queue:
            target, headers = shape.request(n)
            async with session.get(raw_url(base, target), headers=headers) as response:
                await response.read()
                assert response.status == shape.status, (shape.name, n, response.status)

    await asyncio.gather(*(one_lane() for _ in range(CONCURRENCY)))


@pytest.mark.slow
async def test_long_distinct_client_values_do_not_grow_the_servers_memory(
    azurite: AzuriteServer,
    container: ContainerClient,
    upstream_app: UpstreamApp,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """4,096 requests of each shape with distinct ~8 KB Host, Accept, header name, path and query
    grow the server's RSS by under 16 MiB in all, after a warm-up of the same shapes."""
    data = jpeg(64, 48)
    await container.upload_blob(BLOB, io.BytesIO(data), length=len(data))
    with start_server(
        azurite,
        container.container_name,
        IMGPROXY_SERVER_DRAIN_S="0",
        IMGPROXY_UPSTREAM_URL=upstream_app.url,
        IMGPROXY_TRANSFORM_ENABLED="true",
        IMGPROXY_TRANSFORM_ALLOW_UNSIGNED="true",
    ) as running:
        pid = running.proc.pid
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:
            for shape in SHAPES:
                await send_all(session, running.base, shape, range(MEASURED, MEASURED + WARM_UP))
            before = rss_bytes(pid)
            growth: dict[str, int] = {}
            for shape in SHAPES:
                start = rss_bytes(pid)
                await send_all(session, running.base, shape, range(MEASURED))
                growth[shape.name] = rss_bytes(pid) - start
            after = rss_bytes(pid)
    with capsys.disabled():
        parts = ", ".join(f"{name} {grown / MIB:+.1f}" for name, grown in growth.items())
        print(
            f"\n[memory] {MEASURED} distinct ~8 KB values per shape: RSS {before / MIB:.1f} -> "
            f"{after / MIB:.1f} MiB ({(after - before) / MIB:+.1f} MiB; {parts})"
        )
    assert after - before < 16 * MIB
