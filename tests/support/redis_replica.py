"""A replica's Redis pieces for tests: its own link (own connections), tier, notifier, downloads."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from imgproxy.config import RedisConfig
from imgproxy.core.blob import BlobMeta
from imgproxy.replication.flight import ReplicaFlight
from imgproxy.replication.link import RedisLink
from imgproxy.replication.notify import Notifier
from imgproxy.replication.store import RedisStore

WHEN = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def meta_of(body: bytes) -> BlobMeta:
    """Metadata for `body`, its ETag derived from the bytes."""
    return BlobMeta(len(body), f'"{hashlib.sha256(body).hexdigest()[:12]}"', WHEN, "image/png", None)


@dataclass(frozen=True, slots=True)
class SharedReplica:
    link: RedisLink
    tier: RedisStore
    downloads: ReplicaFlight
    notifier: Notifier | None


@asynccontextmanager
async def shared_replica(
    config: RedisConfig, notify: bool = True, container: str = "images"
) -> AsyncIterator[SharedReplica]:
    """Enter a replica's link and (unless told otherwise) its notifier, subscribed before the block."""
    async with AsyncExitStack() as stack:
        link = await stack.enter_async_context(RedisLink(config, container))
        notifier = None
        if notify:
            notifier = await stack.enter_async_context(Notifier(link))
            async with asyncio.timeout(10):
                await notifier.wait_ready()
        tier = RedisStore(link)
        yield SharedReplica(link, tier, ReplicaFlight(tier, notifier), notifier)


async def put(
    tier: RedisStore, path: str, body: bytes, variant: str | None = None, fetched_at: float = 1.0
) -> None:
    """Store `body` as the lock holder would (claim, store)."""
    claim = await tier.claim(path, variant)
    assert claim.held
    assert await tier.store(claim, meta_of(body), body, fetched_at)
