"""The cache tiers' one interface (`Tier`), and the index of variant keys by path they share.

A tier keeps `core.blob.Entry`s by key (an original's path, or a variant's key). The fetcher
chains the tiers (memory, disk, then shared ones, then Azure) through `Tier` and knows nothing
else of them: a download takes a fill ticket from each tier first, and a purge of the key's path
voids it, so bytes fetched before a purge are never stored after it.
"""

from __future__ import annotations

from typing import Protocol

from imgproxy.core.blob import Entry, is_variant, path_of
from imgproxy.core.lru import FillTicket
from imgproxy.core.stats import SharedFigures


class Tier(Protocol):
    """One storage of entries. Every method is bounded; none raises for a miss."""

    name: str

    def begin_fill(self, key: str) -> FillTicket:
        """A ticket for storing what a download of `key` brings (take it before the download)."""

    def release(self, ticket: FillTicket) -> None:
        """Return a ticket that will not be used."""

    def fits(self, entry: Entry) -> bool:
        """Whether this tier keeps entries like `entry` at all (its size bounds)."""

    async def lookup(self, key: str) -> Entry | None:
        """The entry of `key`, or None."""

    async def store(self, ticket: FillTicket, entry: Entry | None) -> bool:
        """Keep `entry` (None: drop the ticket's key) unless the ticket was voided by a purge; the
        ticket is spent either way. True if `entry` was kept."""

    async def renew(self, entry: Entry) -> None:
        """Azure confirmed `entry`'s version unchanged at `entry.fetched_at`."""

    async def remove(self, key: str) -> bool:
        """Forget `key` (changed or deleted in Azure); True if it was there."""

    async def purge(self, path: str, variants_only: bool = False) -> bool:
        """Forget `path` and every variant of it (only the variants, if told), voiding their fills."""

    async def purge_all(self) -> int:
        """Forget everything, voiding every fill; the number of entries removed."""

    def stats(self) -> object:
        """Figures for `/admin/cache` (a dataclass of `core.stats`)."""


class VariantIndex:
    """Which variant keys a tier holds, by path: a purge finds them without a scan."""

    def __init__(self) -> None:
        self._by_path: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return sum(len(keys) for keys in self._by_path.values())

    def add(self, key: str) -> None:
        if is_variant(key):
            self._by_path.setdefault(path_of(key), set()).add(key)

    def discard(self, key: str) -> None:
        keys = self._by_path.get(path_of(key))
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_path[path_of(key)]

    def pop(self, path: str) -> set[str]:
        """The variant keys of `path`, forgotten here."""
        return self._by_path.pop(path, set())

    def clear(self) -> None:
        self._by_path.clear()


class SharedTier(Tier, Protocol):
    """A tier other replicas share (Redis, `replication`): besides a `Tier`, one download for all
    of them. `claim` is asked by a miss before it goes to Azure: None means "download it yourself
    and store it under this ticket" (the others wait for it), an entry is what another replica
    published meanwhile (waited for, bounded)."""

    async def claim(self, key: str, ticket: FillTicket) -> Entry | None:
        """What another replica published for `key`, or None: this replica downloads."""

    def stats(self) -> SharedFigures:
        """Its figures for `/admin/cache` and `/metrics`."""
