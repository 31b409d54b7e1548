"""The Python side of the load: warm-up requests, the cold burst and the 200 MiB streams."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import aiohttp

T = TypeVar("T")
MIB: Final = 1024 * 1024


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when importable (less client-side CPU on a small machine), else asyncio."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)


@dataclass(slots=True)
class WarmResult:
    requests: int = 0
    bad: list[str] = field(default_factory=list)  # wrong status or length
    x_cache_after: Counter[str] = field(default_factory=Counter)  # second pass over checked paths


async def warm(
    base: str, sizes: dict[str, int], check: list[str], passes: int = 1, concurrency: int = 16
) -> WarmResult:
    """One GET per blob in `sizes` (status and length checked), then one more of each `check` path.

    `passes` > 1 is for servers whose processes each keep their own cache behind one SO_REUSEPORT
    port: every request then opens a new connection, so the kernel spreads the passes over them.
    """
    result = WarmResult()
    limit = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=300)
    connector = aiohttp.TCPConnector(force_close=passes > 1)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def get(name: str) -> str:
            async with limit, session.get(f"{base}/images/{name}") as response:
                body = await response.read()
                result.requests += 1
                if response.status != 200 or len(body) != sizes[name]:
                    result.bad.append(f"{name}: {response.status}, {len(body)} bytes")
                return response.headers.get("X-Cache", "-")

        for _ in range(passes):
            await asyncio.gather(*(get(name) for name in sizes))
        for name in check:  # sequential: the state the load will see
            result.x_cache_after[await get(name)] += 1
    return result


@dataclass(slots=True)
class BurstResult:
    clients: int
    ok: int
    first_s: float
    last_s: float
    median_s: float
    statuses: Counter[int]
    x_cache: Counter[str]


async def burst(url: str | Sequence[str], clients: int, size: int) -> BurstResult:
    """`clients` concurrent GETs of one uncached blob; times from the start to each full body.

    Several URLs (the same blob on several replicas): request i goes to `url[i % len(url)]`.
    """
    urls = [url] if isinstance(url, str) else list(url)
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=0)
    statuses: Counter[int] = Counter()
    x_cache: Counter[str] = Counter()
    times: list[float] = []
    ok = 0
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        start = time.perf_counter()

        async def one(index: int) -> None:
            nonlocal ok
            async with session.get(urls[index % len(urls)]) as response:
                body = await response.read()
                times.append(time.perf_counter() - start)
                statuses[response.status] += 1
                x_cache[response.headers.get("X-Cache", "-")] += 1
                if response.status == 200 and len(body) == size:
                    ok += 1

        outcomes = await asyncio.gather(*(one(i) for i in range(clients)), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                statuses[0] += 1  # 0: the request failed (timeout, reset)
    times.sort()
    return BurstResult(
        clients,
        ok,
        first_s=times[0] if times else float("nan"),
        last_s=times[-1] if times else float("nan"),
        median_s=times[len(times) // 2] if times else float("nan"),
        statuses=statuses,
        x_cache=x_cache,
    )


@dataclass(slots=True)
class StreamsResult:
    clients: int
    complete: int
    seconds: float
    bytes_read: int


async def streams(url: str, clients: int, size: int, timeout_s: float) -> StreamsResult:
    """`clients` concurrent full reads of one large blob, discarding the bytes as they arrive."""
    got: list[int] = []
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout_s), connector=aiohttp.TCPConnector(limit=0)
    ) as session:

        async def one() -> None:
            total = 0
            async with session.get(url) as response:
                async for chunk in response.content.iter_chunked(MIB):
                    total += len(chunk)
            got.append(total)

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(clients)), return_exceptions=True)
        seconds = time.perf_counter() - start
    return StreamsResult(clients, sum(1 for n in got if n == size), seconds, sum(got))


async def origin_stats(counter_url: str) -> Counter[str]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(counter_url) as response:
        response.raise_for_status()
        data: dict[str, int] = await response.json()
        return Counter(data)


async def fetch_body(url: str) -> bytes:
    """The body of a 200 answer to GET `url` (a check before a load run)."""
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
        response.raise_for_status()
        return await response.read()


@dataclass(frozen=True, slots=True)
class Answer:
    """One response: status, body length, `Content-Type`, `X-Cache`, seconds to the full body."""

    url: str
    status: int
    size: int
    content_type: str
    x_cache: str
    seconds: float


async def get_all(
    urls: list[str], timeout_s: float = 120, body_to: dict[str, bytes] | None = None
) -> list[Answer]:
    """GET every URL at once (one connection each); status 0 for a request that failed.

    `body_to`, when given, receives each successful body by URL (for the checks that keep one).
    """
    answers: list[Answer] = []
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(url: str) -> None:
            start = time.perf_counter()
            try:
                async with session.get(url) as response:
                    body = await response.read()
                    if body_to is not None and response.status == 200:
                        body_to[url] = body
                    answers.append(
                        Answer(
                            url,
                            response.status,
                            len(body),
                            response.headers.get("Content-Type", ""),
                            response.headers.get("X-Cache", "-"),
                            time.perf_counter() - start,
                        )
                    )
            except (aiohttp.ClientError, TimeoutError):
                answers.append(Answer(url, 0, 0, "", "-", time.perf_counter() - start))

        await asyncio.gather(*(one(url) for url in urls))
    return answers
