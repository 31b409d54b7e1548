"""Sibling workers: an admin purge that lands on one worker is relayed to the others.

With `server.workers` > 1 the kernel (`SO_REUSEPORT`) hands each connection to one worker, and
each worker has its own memory cache, so a purge would otherwise reach one of them. The supervisor
makes a private directory (mode 0700) and every worker also serves the application on
`<dir>/<index>.sock`. A worker that receives a purge applies it, then sends the same call, with
the caller's `Authorization` and `RELAYED_HEADER`, to every sibling socket; a relayed call is not
relayed again. Each relay is bounded by `RELAY_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
from yarl import URL

RELAYED_HEADER: Final = "X-Imgproxy-Relayed"
RELAY_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class Peers:
    """This worker's place among its siblings: their sockets live in `directory`."""

    directory: Path
    index: int
    count: int

    def socket(self, index: int) -> Path:
        return self.directory / f"{index}.sock"

    def siblings(self) -> list[int]:
        return [i for i in range(self.count) if i != self.index]


@dataclass(frozen=True, slots=True)
class Relayed:
    """The siblings' JSON answers, and a short reason for each sibling that did not answer 200."""

    answers: list[dict[str, Any]]
    failures: list[str]


async def relay(peers: Peers, method: str, raw_path: str, authorization: str) -> Relayed:
    """Send `method raw_path` to every sibling at once."""

    async def one(index: int) -> dict[str, Any] | str:
        connector = aiohttp.UnixConnector(path=str(peers.socket(index)))
        timeout = aiohttp.ClientTimeout(total=RELAY_TIMEOUT_S)
        headers = {"Authorization": authorization, RELAYED_HEADER: "1"}
        url = URL("http://worker" + raw_path, encoded=True)  # the path as the caller sent it
        try:
            async with (
                aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                session.request(method, url, headers=headers) as response,
            ):
                if response.status != 200:
                    return f"worker {index}: HTTP {response.status}"
                answer: dict[str, Any] = await response.json()
                return answer
        except (aiohttp.ClientError, OSError, TimeoutError, json.JSONDecodeError) as exc:
            return f"worker {index}: {type(exc).__name__}"

    results = await asyncio.gather(*(one(index) for index in peers.siblings()))
    return Relayed(
        answers=[r for r in results if isinstance(r, dict)],
        failures=[r for r in results if isinstance(r, str)],
    )
