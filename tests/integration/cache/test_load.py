"""Sustained, skewed load: 5,000 GETs over 200 blobs at 64 concurrency, every byte checked.

The popularity is Zipf-like (weight 1 / rank**1.1), so a few blobs take most requests and the long
tail keeps pushing entries out of the default 100-item cache. The bound on origin traffic follows
from the fetcher's design: a blob is downloaded once when first asked for, and again only after the
memory cache evicted it (no TTL expiry or purge happens within the test), so whole-blob GETs can
never exceed distinct blobs requested + evictions.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from typing import Final

import pytest
from azure.storage.blob.aio import ContainerClient

from tests.helpers import AppClient, cache_stats, fetch_image, payload, sha256, upload
from tests.support.origin_proxy import OriginProxy

BLOBS: Final = 200
REQUESTS: Final = 5_000
CONCURRENCY: Final = 64
UPLOAD_BATCH: Final = 25
ZIPF_EXPONENT: Final = 1.1
SEED: Final = 20_240_601


def blob_name(index: int) -> str:
    return f"load/{index:03d}.png"


async def test_zipf_load_serves_every_byte_and_downloads_each_blob_once_per_residency(
    client: AppClient, container: ContainerClient, origin: OriginProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    """5,000 Zipf-skewed GETs at 64 concurrency: all 200, byte-exact, origin GETs <= distinct + evictions."""
    rng = random.Random(SEED)
    blobs = {blob_name(i): payload(rng.randint(1024, 30 * 1024), seed=i) for i in range(BLOBS)}
    expected = {name: sha256(data) for name, data in blobs.items()}
    assert len(set(expected.values())) == BLOBS  # distinct bytes per blob
    names = list(blobs)
    for start in range(0, BLOBS, UPLOAD_BATCH):
        batch = names[start : start + UPLOAD_BATCH]
        await asyncio.gather(*(upload(container, name, blobs[name]) for name in batch))

    # Rank 1 is the most popular; ranks are shuffled over blobs so popularity ignores size.
    by_rank = rng.sample(names, k=BLOBS)
    weights = [1 / rank**ZIPF_EXPONENT for rank in range(1, BLOBS + 1)]
    plan = rng.choices(by_rank, weights=weights, k=REQUESTS)
    jobs: Iterator[str] = iter(plan)
    errors: list[tuple[str, int]] = []
    wrong_bytes: list[str] = []

    async def worker() -> None:
        for name in jobs:  # shared: each request is taken by exactly one worker
            status, _, body = await fetch_image(client, name)
            if status != 200:
                errors.append((name, status))
            elif sha256(body) != expected[name]:
                wrong_bytes.append(name)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started

    stats = await cache_stats(client)
    origin_gets = [r for r in origin.requests if r.method == "GET" and r.blob in blobs]
    distinct = len(set(plan))
    with capsys.disabled():
        print(
            f"\nload: requests={REQUESTS} errors={len(errors) + len(wrong_bytes)} "
            f"origin_gets={len(origin_gets)} distinct_blobs={distinct} evictions={stats['evictions']} "
            f"hits={stats['hits']} misses={stats['misses']} coalesced={stats['coalesced']} "
            f"elapsed_s={elapsed:.2f}"
        )

    assert errors == []
    assert wrong_bytes == []
    assert all(r.container == container.container_name for r in origin.requests)
    # Each blob asked for is downloaded at least once, and again only after an eviction.
    assert distinct <= len(origin_gets) <= distinct + stats["evictions"]
    assert stats["hits"] > 0
    # Every request is counted once, as a hit or a miss (a coalesced joiner counts as a miss);
    # nothing expired, so nothing was served stale or revalidated.
    assert stats["hits"] + stats["misses"] == REQUESTS
    assert stats["stale"] == stats["revalidations"] == stats["negative_hits"] == 0
    # Every miss that did not join a download in flight started exactly one origin fetch.
    assert stats["misses"] - stats["coalesced"] == stats["origin_fetches"]
    assert stats["origin_errors"] == 0
