"""The memory tier: bodies of originals and variants up to `cache.max_item_bytes`, in one LRU
bounded by `cache.max_items` and `cache.max_bytes` (the asyncio-locked `AsyncLRU`)."""

from __future__ import annotations

from typing import Final

from imgproxy.cache.tier import VariantIndex
from imgproxy.config import CacheConfig
from imgproxy.core.blob import Entry, path_of
from imgproxy.core.lru import AsyncLRU, CacheStats, FillTicket
from imgproxy.core.stats import MemoryFigures

NAME: Final = "memory"


def _body_bytes(entry: Entry) -> int:
    return len(entry.body) if entry.body is not None else 0


class MemoryTier:
    """Entries with their bodies in memory, least recently used evicted first."""

    name = NAME

    def __init__(self, config: CacheConfig) -> None:
        self.max_item_bytes = config.max_item_bytes
        self._variants = VariantIndex()
        self._cache: AsyncLRU[Entry] = AsyncLRU(
            config.max_items, config.max_bytes, _body_bytes, group=path_of, on_evict=self._evicted
        )

    def fits(self, entry: Entry) -> bool:
        return entry.body is not None and len(entry.body) <= self.max_item_bytes

    def begin_fill(self, key: str) -> FillTicket:
        return self._cache.begin_fill(key)

    def release(self, ticket: FillTicket) -> None:
        self._cache.release(ticket)

    async def lookup(self, key: str) -> Entry | None:
        return await self._cache.get(key)

    def peek(self, key: str) -> Entry | None:
        """`lookup` without awaiting, for the hot path: None while the lock is held."""
        return None if self._cache.busy else self._cache.get_unlocked(key)

    async def store(self, ticket: FillTicket, entry: Entry | None) -> bool:
        if entry is None or not self.fits(entry):  # a version too large for memory replaces an old one
            self._variants.discard(ticket.key)
            await self._cache.finish_fill(ticket, None, drop=True)
            return False
        stored = await self._cache.finish_fill(ticket, entry)
        if stored:
            self._variants.add(entry.key)
        return stored

    async def renew(self, entry: Entry) -> None:
        """Unused: a revalidated memory entry is stored again whole (it has its body)."""

    async def remove(self, key: str) -> bool:
        self._variants.discard(key)
        return await self._cache.pop(key)

    async def purge(self, path: str, variants_only: bool = False) -> bool:
        keys = self._variants.pop(path)
        if not variants_only:
            keys.add(path)
        only = None if not variants_only else (lambda key: key != path)
        return await self._cache.purge(path, keys, only) > 0

    async def purge_all(self) -> int:
        self._variants.clear()
        return await self._cache.clear()

    def cache_stats(self) -> CacheStats:
        return self._cache.stats()

    def stats(self) -> MemoryFigures:
        stats = self._cache.stats()
        return MemoryFigures(
            stats.items, stats.bytes, stats.max_items, stats.max_bytes, stats.evictions, len(self._variants)
        )

    def _evicted(self, key: str, entry: Entry) -> None:
        self._variants.discard(key)
