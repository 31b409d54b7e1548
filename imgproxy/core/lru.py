"""In-memory LRU bounded by entry count and total bytes, behind an asyncio lock.

`LRU` is plain bookkeeping with no locking and no I/O, so it can be tested alone. `AsyncLRU`
is the async façade the service uses: every operation takes the lock, none awaits anything else
while holding it. It also hands out *fill tickets*: a download takes a ticket before it starts and
presents it when storing its result; a purge of that key (or of everything) in between voids the
ticket, so a download that began before a purge cannot put the old bytes back.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A consistent snapshot of the cache's size and limits."""

    items: int
    bytes: int
    max_items: int
    max_bytes: int
    evictions: int


class LRU(Generic[V]):
    """Least-recently-used map bounded by count and by the summed `sizeof` of its values."""

    def __init__(self, max_items: int, max_bytes: int, sizeof: Callable[[V], int]) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._sizeof = sizeof
        self._data: OrderedDict[str, tuple[V, int]] = OrderedDict()
        self.bytes = 0
        self.evictions = 0
        self.on_evict: Callable[[str, V], None] | None = None

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: str) -> V | None:
        """Return the value and mark it most recently used, or None."""
        item = self._data.get(key)
        if item is None:
            return None
        self._data.move_to_end(key)
        return item[0]

    def peek(self, key: str) -> V | None:
        """The value, without marking it used, or None."""
        item = self._data.get(key)
        return None if item is None else item[0]

    def put(self, key: str, value: V) -> bool:
        """Insert or replace; evict LRU entries until both bounds hold. False if it can never fit."""
        size = self._sizeof(value)
        if size > self.max_bytes:
            self.pop(key)
            return False
        self.pop(key)
        self._data[key] = (value, size)
        self.bytes += size
        while len(self._data) > self.max_items or self.bytes > self.max_bytes:
            evicted_key, (evicted, evicted_size) = self._data.popitem(last=False)
            self.bytes -= evicted_size
            self.evictions += 1
            if self.on_evict is not None:
                self.on_evict(evicted_key, evicted)
        return True

    def pop(self, key: str) -> V | None:
        """Remove a key; return its value or None."""
        item = self._data.pop(key, None)
        if item is None:
            return None
        self.bytes -= item[1]
        return item[0]

    def items(self) -> list[tuple[str, V]]:
        """Every (key, value), least recently used first."""
        return [(key, value) for key, (value, _) in self._data.items()]

    def clear(self) -> int:
        """Remove everything; return how many entries there were."""
        count = len(self._data)
        self._data.clear()
        self.bytes = 0
        return count


class FillTicket:
    """Permission to store the result of one download, void once its key is purged."""

    __slots__ = ("key", "valid")

    def __init__(self, key: str) -> None:
        self.key = key
        self.valid = True


class TicketBook:
    """The fill tickets outstanding per key (at most one per download under way), grouped (e.g.
    by blob path, so that a purge of a path voids the tickets of its variants too)."""

    def __init__(self, group: Callable[[str], str] | None = None) -> None:
        self._group = group if group is not None else _itself
        self._tickets: dict[str, set[FillTicket]] = {}

    def __len__(self) -> int:
        return sum(len(tickets) for tickets in self._tickets.values())

    def issue(self, key: str) -> FillTicket:
        ticket = FillTicket(key)
        self._tickets.setdefault(self._group(key), set()).add(ticket)
        return ticket

    def release(self, ticket: FillTicket) -> bool:
        """Forget a ticket (its download ended); return whether it was still valid. A ticket is
        good for one release: used again, it is void (a second store would bypass purges)."""
        group = self._group(ticket.key)
        tickets = self._tickets.get(group)
        if tickets is not None:
            tickets.discard(ticket)
            if not tickets:
                del self._tickets[group]
        valid, ticket.valid = ticket.valid, False
        return valid

    def void(self, key: str) -> None:
        """Void the tickets of exactly `key`."""
        for ticket in self._tickets.get(self._group(key), ()):
            if ticket.key == key:
                ticket.valid = False

    def void_group(self, group: str, only: Callable[[str], bool] | None = None) -> None:
        """Void the tickets of every key in `group` (those `only` accepts, if given)."""
        for ticket in self._tickets.get(group, ()):
            if only is None or only(ticket.key):
                ticket.valid = False

    def void_all(self) -> None:
        for tickets in self._tickets.values():
            for ticket in tickets:
                ticket.valid = False
        self._tickets.clear()


def _itself(key: str) -> str:
    return key


class AsyncLRU(Generic[V]):
    """The async, lock-guarded LRU the request path uses."""

    def __init__(
        self,
        max_items: int,
        max_bytes: int,
        sizeof: Callable[[V], int],
        group: Callable[[str], str] | None = None,
        on_evict: Callable[[str, V], None] | None = None,
    ) -> None:
        self._lru: LRU[V] = LRU(max_items, max_bytes, sizeof)
        self._lru.on_evict = on_evict
        self._lock = asyncio.Lock()
        self._tickets = TicketBook(group)

    async def get(self, key: str) -> V | None:
        async with self._lock:
            return self._lru.get(key)

    def get_unlocked(self, key: str) -> V | None:
        """`get` for the hit path, without awaiting: only call it when `busy` is false.

        Every locked section is synchronous, so between them the LRU is consistent; reading it
        while the lock is free needs no await (and the hot path saves a coroutine per hit).
        """
        return self._lru.get(key)

    @property
    def busy(self) -> bool:
        """Whether the lock is held (then use `get`, which waits its turn)."""
        return self._lock.locked()

    def begin_fill(self, key: str) -> FillTicket:
        """Take a ticket before downloading `key`. Synchronous: no await between check and use."""
        return self._tickets.issue(key)

    def release(self, ticket: FillTicket) -> None:
        """Return a ticket that will not be used to store anything."""
        self._tickets.release(ticket)

    async def finish_fill(self, ticket: FillTicket, value: V | None, drop: bool = False) -> bool:
        """Store `value` if the ticket is still valid; with None, keep the entry, or `drop` it.

        Returns whether the value was stored. A voided ticket changes nothing.
        """
        async with self._lock:
            if not self._tickets.release(ticket):
                return False
            if value is None:
                if drop:
                    self._lru.pop(ticket.key)
                return False
            return self._lru.put(ticket.key, value)

    async def pop(self, key: str) -> bool:
        """Purge one key, voiding downloads of it already under way. True if it was cached."""
        async with self._lock:
            self._tickets.void(key)
            return self._lru.pop(key) is not None

    async def purge(self, group: str, keys: Iterable[str], only: Callable[[str], bool] | None = None) -> int:
        """Void the downloads under way in `group` (those `only` accepts) and drop `keys`.
        Returns how many of them were cached."""
        async with self._lock:
            self._tickets.void_group(group, only)
            return sum(self._lru.pop(key) is not None for key in keys)

    async def clear(self) -> int:
        """Purge everything, voiding every download under way. Returns the entries removed."""
        async with self._lock:
            self._tickets.void_all()
            return self._lru.clear()

    def stats(self) -> CacheStats:
        """Snapshot of sizes and limits (synchronous: reads plain integers)."""
        lru = self._lru
        return CacheStats(len(lru), lru.bytes, lru.max_items, lru.max_bytes, lru.evictions)
