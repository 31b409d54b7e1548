"""Sibling workers: a purge or a scrape that lands on one worker is relayed to the others.

With `server.workers` > 1 the kernel (`SO_REUSEPORT`) hands each connection to one worker, and
each worker has its own memory cache, so a purge would otherwise reach one of them. The supervisor
makes a private directory (mode 0700) and every worker also serves the application on
`<dir>/<index>.sock`. A worker that receives a purge applies it, then sends the same call, with
the caller's `Authorization` and `RELAYED_HEADER`, to every sibling socket; a relayed call is not
relayed again. `/metrics` and `/admin/cache` gather the siblings' figures the same way. Each relay
is bounded by `RELAY_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp
from aiohttp import web
from yarl import URL

from imgproxy.core.request_context import HEADER as REQUEST_ID
from imgproxy.core.request_context import current_id

RELAYED_HEADER: Final = "X-Imgproxy-Relayed"
RELAY_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class Siblings:
    """This worker's place among its siblings: their sockets live in `directory`."""

    directory: Path
    index: int
    count: int

    def socket(self, index: int) -> Path:
        return self.directory / f"{index}.sock"

    def others(self) -> list[int]:
        """The other workers' indexes."""
        return [i for i in range(self.count) if i != self.index]


@dataclass(frozen=True, slots=True)
class Relayed:
    """The siblings' 200 bodies by worker index, and a short reason for each sibling without one."""

    answers: dict[int, bytes]
    failures: list[str]


async def relay_to_siblings(request: web.BaseRequest, workers: Siblings | None) -> Relayed | None:
    """Send `request` (method, raw path, `Authorization`) to every sibling at once; None when there
    are no siblings, or when the request is itself a relayed one (answered alone, never relayed again)."""
    if workers is None or RELAYED_HEADER in request.headers:
        return None
    return await relay(
        workers, request.method, request.rel_url.raw_path, request.headers.get("Authorization")
    )


async def relay(workers: Siblings, method: str, raw_path: str, authorization: str | None = None) -> Relayed:
    """Send `method raw_path` to every sibling at once, with the current request's id."""

    async def one(index: int) -> bytes | str:
        connector = aiohttp.UnixConnector(path=str(workers.socket(index)))
        timeout = aiohttp.ClientTimeout(total=RELAY_TIMEOUT_S)
        headers = {RELAYED_HEADER: "1"}
        if authorization is not None:
            headers["Authorization"] = authorization
        if request_id is not None:  # each worker's lines about this call name the caller's request
            headers[REQUEST_ID] = request_id
        url = URL("http://worker" + raw_path, encoded=True)  # the path as the caller sent it
        try:
            async with (
                aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                session.request(method, url, headers=headers) as response,
            ):
                if response.status != 200:
                    return f"worker {index}: HTTP {response.status}"
                return await response.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return f"worker {index}: {type(exc).__name__}"

    request_id = current_id()
    others = workers.others()
    results = await asyncio.gather(*(one(index) for index in others))
    return Relayed(
        answers={i: r for i, r in zip(others, results, strict=True) if isinstance(r, bytes)},
        failures=[r for r in results if isinstance(r, str)],
    )
